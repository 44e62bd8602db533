// The log explorer: list + filters + paging, a live toggle (WebSocket /ws), a detail view and charts drawn
// as SVG by hand. No library: every value reaches the page through textContent, never as HTML.
"use strict";

const KEY_STORE = "bifrost_logs_key";
const PAGE = 50;
const COLORS = ["#3056d3", "#e07b24", "#1f8a4c", "#c8372d", "#8a4fd1", "#14a3a3", "#b5498f", "#7a8599", "#c9a227"];
const state = { offset: 0, total: 0, ws: null, groups: {} };
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

// --- access ------------------------------------------------------------------------------------------
const apiKey = () => sessionStorage.getItem(KEY_STORE);

async function api(path) {
  const resp = await fetch(path, { headers: { "x-api-key": apiKey() || "" } });
  const body = await resp.json().catch(() => ({}));
  if (resp.status === 401) { showLogin("The key was refused."); throw new Error("unauthorized"); }
  if (!resp.ok) throw new Error((body.error && body.error.message) || resp.statusText);
  return body;
}

function showLogin(message) {
  sessionStorage.removeItem(KEY_STORE);
  $("#login-error").textContent = message || "";
  $("#login").hidden = false;
  $("#login-key").focus();
}

async function login(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("#login-key").value.trim());
  try {
    const who = await api("/api/session");
    $("#login").hidden = true;
    $("#filter-search").disabled = !who.content;
    if (!who.content) $("#filter-search").placeholder = "content hidden for this key";
    refresh();
  } catch (err) {
    if (err.message !== "unauthorized") $("#login-error").textContent = err.message;
  }
}

// --- filters -----------------------------------------------------------------------------------------
function filterParams() {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData($("#filters"))) {
    const v = String(value).trim();
    if (!v) continue;
    if (name === "metadata") {
      for (const pair of v.split(",")) {
        const at = pair.indexOf("=");
        if (at > 0) params.set("metadata." + pair.slice(0, at).trim(), pair.slice(at + 1).trim());
      }
    } else if (name !== "sort_by" && name !== "order") params.set(name, v);
  }
  return params;
}

function setRange(seconds) {
  const form = $("#filters");
  form.start_time.value = seconds ? new Date(Date.now() - seconds * 1000).toISOString().replace(/\.\d+Z$/, "Z") : "";
  form.end_time.value = "";
  state.offset = 0;
  refresh();
}

// --- list --------------------------------------------------------------------------------------------
const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const fmtCost = (c) => (c === null || c === undefined ? "–" : "$" + Number(c).toFixed(c >= 1 ? 2 : 5));
const fmtMs = (ms) => (ms === null || ms === undefined ? "–" : ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : ms + " ms");
const fmtTime = (t) => (t || "").replace("T", " ").replace("Z", "").slice(0, 23);

function row(rec, live) {
  return el("tr", { class: live ? "live" : "", "data-request-id": rec.request_id, onclick: () => openDetail(rec.request_id) },
    el("td", { class: "mono" }, fmtTime(rec.timestamp)),
    el("td", {}, el("span", { class: "badge " + rec.status }, rec.status_code || rec.status)),
    el("td", {}, rec.provider), el("td", {}, rec.model), el("td", {}, rec.request_type), el("td", {}, rec.customer_id),
    el("td", { class: "r" }, fmtMs(rec.latency_ms)), el("td", { class: "r" }, fmtInt(rec.total_tokens)),
    el("td", { class: "r" }, fmtCost(rec.cost_usd)), el("td", { class: "mono" }, rec.request_id));
}

function renderStats(s) {
  const tiles = [
    ["Requests", fmtInt(s.total_requests)], ["Success", (s.success_rate * 100).toFixed(1) + "%"],
    ["Avg latency", fmtMs(Math.round(s.average_latency))], ["p95 latency", fmtMs(s.p95_latency)],
    ["Tokens", fmtInt(s.total_tokens)], ["Cost", fmtCost(s.total_cost)], ["Errors", fmtInt(s.errors)],
  ];
  $("#stats").replaceChildren(...tiles.map(([label, value]) => el("div", {}, el("b", {}, value), el("span", {}, label))));
}

async function loadList() {
  const params = filterParams();
  const form = $("#filters");
  params.set("sort_by", form.sort_by.value);
  params.set("order", form.order.value);
  params.set("limit", PAGE);
  params.set("offset", state.offset);
  const body = await api("/api/logs?" + params);
  state.total = body.pagination.total;
  $("#logs tbody").replaceChildren(...body.logs.map((r) => row(r, false)));
  const last = Math.min(state.offset + body.logs.length, state.total);
  $("#page-info").textContent = state.total ? `${state.offset + 1}–${last} of ${fmtInt(state.total)}` : "no records match";
  $("#prev").disabled = state.offset === 0;
  $("#next").disabled = last >= state.total;
  renderStats(body.stats);
}

async function refresh() {
  $("#filter-error").textContent = "";
  try {
    await Promise.all([loadList(), loadCharts()]);
  } catch (err) {
    if (err.message !== "unauthorized") $("#filter-error").textContent = err.message;
  }
  if ($("#live-toggle").checked) startLive();
}

// --- charts ------------------------------------------------------------------------------------------
const METRICS = [["requests", "Requests", fmtInt], ["tokens", "Tokens", fmtInt], ["cost", "Cost", fmtCost],
  ["errors", "Errors", fmtInt], ["p95_latency", "p95 latency", fmtMs]];

async function loadCharts() {
  const params = filterParams();
  params.set("group_by", $("#group-by").value);
  const data = await api("/api/logs/series?" + params);
  const color = (g) => COLORS[data.groups.indexOf(g) % COLORS.length];
  $("#legend").replaceChildren(...data.groups.map((g) => el("span", {}, el("i", { style: "background:" + color(g) }), g)));
  const times = [...new Set(data.points.map((p) => p.t))].sort();
  $("#charts").replaceChildren(...METRICS.map(([key, label, fmt]) => chart(data, times, key, label, fmt, color)));
}

function chart(data, times, key, label, fmt, color) {
  const W = 300, H = 110, L = 4, B = 14;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1e-9, ...data.points.map((p) => p[key] || 0));
  const x = (t) => L + (times.length > 1 ? (times.indexOf(t) / (times.length - 1)) * (W - 2 * L) : (W - 2 * L) / 2);
  const y = (v) => H - B - ((v || 0) / max) * (H - B - 6);
  for (const g of data.groups) {
    const byT = new Map(data.points.filter((p) => p.group === g).map((p) => [p.t, p[key]]));
    // a bucket without requests of this group is 0 (a gap in latency, since no request had one)
    const pts = times.filter((t) => key !== "p95_latency" || byT.has(t)).map((t) => `${x(t).toFixed(1)},${y(byT.get(t)).toFixed(1)}`);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", color(g));
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    if (pts.length === 1) line.setAttribute("stroke-width", "6"); // one bucket: a dot, not an invisible line
    line.setAttribute("stroke-linecap", "round");
    if (pts.length === 1) line.setAttribute("points", pts[0] + " " + pts[0]);
    const title = document.createElementNS(ns, "title");
    title.textContent = g;
    line.append(title);
    svg.append(line);
  }
  const axis = document.createElementNS(ns, "text");
  axis.setAttribute("x", L);
  axis.setAttribute("y", H - 2);
  axis.textContent = times.length ? `${fmtTime(times[0])} → ${fmtTime(times[times.length - 1])}` : "no data";
  svg.append(axis);
  return el("div", { class: "chart" }, el("h3", {}, `${label} (max ${fmt(max === 1e-9 ? 0 : max)} per ${data.bucket_seconds / 60} min)`), svg);
}

// --- live --------------------------------------------------------------------------------------------
function startLive() {
  stopLive();
  const params = filterParams();
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/ws?${params}`);
  state.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ api_key: apiKey() }));
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "subscribed") $("#live-state").textContent = "● streaming";
    else if (msg.type === "log") addLive(msg.payload);
    else if (msg.type === "dropped" || msg.type === "error") $("#live-state").textContent = msg.message;
  };
  ws.onclose = () => { if (state.ws === ws) $("#live-state").textContent = "stream closed"; };
}

function stopLive() {
  if (state.ws) { const ws = state.ws; state.ws = null; ws.close(); }
  $("#live-state").textContent = "";
}

function addLive(rec) {
  if (state.offset !== 0 || $("#filters").sort_by.value !== "timestamp" || $("#filters").order.value !== "desc") return;
  const body = $("#logs tbody");
  body.prepend(row(rec, true));
  while (body.children.length > PAGE) body.lastElementChild.remove();
  state.total += 1;
  $("#page-info").textContent = `1–${body.children.length} of ${fmtInt(state.total)}`;
}

// --- detail ------------------------------------------------------------------------------------------
const SHOWN = new Set(["timestamp", "ended_at", "request_id", "provider", "model", "status", "status_code", "latency_ms",
  "time_to_first_token_ms", "input_tokens", "output_tokens", "total_tokens", "cached_tokens", "reasoning_tokens",
  "cost_usd", "input_content", "output_content", "metadata", "tool_calls", "attempts", "error_type", "error_message"]);

async function openDetail(requestId) {
  const rec = await api("/api/logs/" + encodeURIComponent(requestId));
  $("#detail-title").textContent = rec.request_id;
  const parts = [summary(rec)];
  if (rec.error_message || rec.error_type) parts.push(section("Error", el("pre", {}, `${rec.error_type || ""}: ${rec.error_message || ""}`)));
  parts.push(section("Conversation", conversation(rec)));
  if (rec.tool_calls) parts.push(section("Tool calls", jsonBlock(rec.tool_calls)));
  if (Array.isArray(rec.attempts) && rec.attempts.length) parts.push(section("Attempts", table(rec.attempts)));
  if (rec.metadata && typeof rec.metadata === "object") parts.push(section("Metadata", kv(rec.metadata)));
  const rest = Object.fromEntries(Object.entries(rec).filter(([k, v]) => !SHOWN.has(k) && v !== null));
  parts.push(section("Request", kv(rest, (k, v) => k === "parent_request_id"
    ? el("a", { href: "#", onclick: (e) => { e.preventDefault(); openDetail(v); } }, v) : undefined)));
  $("#detail-body").replaceChildren(...parts);
  $("#detail").hidden = false;
}

function summary(rec) {
  const tiles = [["Status", `${rec.status} ${rec.status_code}`], ["Latency", fmtMs(rec.latency_ms)],
    ["First token", fmtMs(rec.time_to_first_token_ms)], ["Cost", fmtCost(rec.cost_usd)],
    ["Input tokens", fmtInt(rec.input_tokens)], ["Output tokens", fmtInt(rec.output_tokens)],
    ["Cached / reasoning", `${fmtInt(rec.cached_tokens)} / ${fmtInt(rec.reasoning_tokens)}`], ["Total tokens", fmtInt(rec.total_tokens)]];
  return el("div", {},
    el("div", { class: "muted" }, `${fmtTime(rec.timestamp)} → ${fmtTime(rec.ended_at)} · ${rec.provider} / ${rec.model}`),
    el("div", { class: "tiles" }, tiles.map(([l, v]) => el("div", {}, el("b", {}, v), el("span", {}, l)))));
}

const section = (title, body) => el("section", { class: "detail-section" }, el("h2", {}, title), body);
const jsonBlock = (v) => el("pre", { class: "mono" }, typeof v === "string" ? v : JSON.stringify(v, null, 2));

function kv(obj, special) {
  return el("dl", { class: "kv" }, Object.entries(obj).flatMap(([k, v]) => {
    const custom = special && special(k, v);
    const value = custom || (v !== null && typeof v === "object" ? jsonBlock(v) : String(v));
    return [el("dt", {}, k), el("dd", {}, value)];
  }));
}

function table(rows) {
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return el("table", {}, el("thead", {}, el("tr", {}, cols.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, cols.map((c) => el("td", {}, typeof r[c] === "object" && r[c] !== null ? JSON.stringify(r[c]) : r[c] ?? ""))))));
}

function parseContent(text) {
  if (text === null || text === undefined) return null;
  if (typeof text !== "string") return text;
  try { return JSON.parse(text); } catch { return text; }
}

// Content as landed: a list of messages, an object with messages / input / prompt / choices, or plain text.
function messagesOf(content, defaultRole) {
  if (content === null) return [];
  if (typeof content === "string") return [{ role: defaultRole, content }];
  if (Array.isArray(content)) return content.flatMap((m) => (m && typeof m === "object" && ("role" in m || "content" in m) ? [m] : messagesOf(m, defaultRole)));
  for (const key of ["messages", "input", "prompt", "choices", "output"]) {
    if (key in content) return messagesOf(key === "choices" ? content.choices.map((c) => c.message || c) : content[key], defaultRole);
  }
  if ("message" in content) return [content.message];
  return [{ role: defaultRole, content: JSON.stringify(content, null, 2) }];
}

function messageText(content) {
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((p) => p.text || (p.image_url ? `[image ${p.image_url.url || p.image_url}]` : JSON.stringify(p))).join("\n");
  return JSON.stringify(content, null, 2);
}

function conversation(rec) {
  if (!("input_content" in rec) && !("output_content" in rec)) return el("p", { class: "muted" }, "Content is hidden for this key (or content logging is off).");
  const msgs = [...messagesOf(parseContent(rec.input_content), "user"), ...messagesOf(parseContent(rec.output_content), "assistant")];
  if (!msgs.length) return el("p", { class: "muted" }, "No content was logged.");
  return el("div", {}, msgs.map((m) => el("div", { class: "msg " + (m.role || "user") },
    el("span", { class: "role" }, m.role || "?"), messageText(m.content),
    m.tool_calls ? jsonBlock(m.tool_calls) : null)));
}

// --- wiring ------------------------------------------------------------------------------------------
function init() {
  $("#login-form").addEventListener("submit", login);
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); state.offset = 0; refresh(); });
  $("#clear-filters").addEventListener("click", () => { $("#filters").reset(); state.offset = 0; refresh(); });
  for (const b of document.querySelectorAll("[data-range]")) b.addEventListener("click", () => setRange(Number(b.dataset.range)));
  $("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadList().catch(() => {}); });
  $("#next").addEventListener("click", () => { state.offset += PAGE; loadList().catch(() => {}); });
  $("#group-by").addEventListener("change", () => loadCharts().catch((e) => { $("#filter-error").textContent = e.message; }));
  $("#live-toggle").addEventListener("change", (e) => (e.target.checked ? startLive() : stopLive()));
  $("#detail-close").addEventListener("click", () => { $("#detail").hidden = true; });
  $("#logout").addEventListener("click", () => { stopLive(); showLogin(""); });
  if (apiKey()) api("/api/session").then(() => refresh()).catch(() => {});
  else showLogin("");
}

init();
