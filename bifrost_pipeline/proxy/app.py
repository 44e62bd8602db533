"""The ingestion proxy as an ASGI application.

Hot path of a proxied request: read the body, parse it once (orjson), pick the provider, reserve a landing
slot, call the provider (aiohttp, pooled connections), send its answer on. Only after the answer has been
sent does the proxy fill the record and the metrics; the record then goes to the landing writer's queue,
whose thread serializes and writes it. Nothing on the request's path touches the disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from bifrost_pipeline.config import AppConfig

from . import intake, otlp
from .metrics import PROM_HEADER_PREFIX, Metrics
from .pricing import Pricing
from .record import (
    ENDPOINTS,
    base_record,
    error_of,
    finish_reason_of,
    hour_key,
    iso,
    json_text,
    logging_metadata,
    request_input,
    response_output,
    usage_fields,
)
from .upstream import Router, Target, response_headers, upstream_headers
from .writer import LandingWriter, QueueFull

log = logging.getLogger("bifrost_pipeline.proxy")

JSON_HEADERS = [(b"content-type", b"application/json")]
MOCK_PREFIX = "/_mock"
STREAM_USAGE_TYPES = ("chat", "text_completion")  # those that take stream_options.include_usage


def _error_body(status: int, message: str, etype: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": etype, "param": None, "code": status}})


class StreamState:
    """What the proxy learns from the SSE events it passes on."""

    __slots__ = (
        "request_type",
        "hide_usage",
        "usage",
        "text",
        "finish_reason",
        "first_token",
        "last_token",
        "gaps",
        "events",
        "output",
        "error",
        "response_status",
        "audio_bytes",
    )

    def __init__(self, request_type: str, hide_usage: bool):
        self.request_type = request_type
        self.hide_usage = hide_usage
        self.usage: Any = None
        self.text: list[str] = []
        self.finish_reason: str | None = None
        self.first_token: float | None = None
        self.last_token: float | None = None
        self.gaps: list[float] = []
        self.events = 0
        self.output: Any = None
        self.error: Any = None
        self.response_status: str | None = None
        self.audio_bytes = 0

    def _token(self, now: float) -> None:
        if self.first_token is None:
            self.first_token = now
        elif self.last_token is not None:
            self.gaps.append(now - self.last_token)
        self.last_token = now

    def progress(self) -> str:
        if self.audio_bytes:
            return f"{self.audio_bytes} byte(s) of audio"
        return f"{self.events} event(s)"

    def audio(self, chunk: bytes, now: float) -> None:
        """A chunk of raw audio (speech): its size and when the first one came, not its bytes."""
        if chunk:
            self.audio_bytes += len(chunk)
            if self.first_token is None:
                self.first_token = now

    def feed(self, event: bytes, now: float) -> bool:
        """Read one SSE event; False when it must not be passed on (the usage chunk the client did not ask for)."""
        data = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
        if not data:
            return True
        payload = b"\n".join(data)
        if payload == b"[DONE]":
            return True
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(obj, dict):
            return True
        self.events += 1
        choices = obj.get("choices")
        if isinstance(choices, list):
            if choices and isinstance(choices[0], dict):
                c = choices[0]
                delta = c.get("delta")
                piece = delta.get("content") if isinstance(delta, dict) else c.get("text")
                if piece:
                    self.text.append(piece)
                    self._token(now)
                if c.get("finish_reason"):
                    self.finish_reason = c["finish_reason"]
            if isinstance(obj.get("usage"), dict):
                self.usage = obj["usage"]
                if not choices and self.hide_usage:
                    return False
            return True
        etype = obj.get("type")
        if isinstance(etype, str):
            if etype.endswith(".delta") and isinstance(obj.get("delta"), str):
                if obj["delta"]:
                    self.text.append(obj["delta"])
                    self._token(now)
            elif etype == "speech.audio.delta" and isinstance(obj.get("audio"), str):
                b64 = obj["audio"]  # the audio is counted, never kept: it is not text a person reads
                self.audio_bytes += len(b64) * 3 // 4 - b64[-2:].count("=")
                if self.first_token is None:
                    self.first_token = now
            resp = obj.get("response")
            if isinstance(resp, dict):
                if isinstance(resp.get("usage"), dict):
                    self.usage = resp["usage"]
                if resp.get("status"):
                    self.response_status = resp["status"]
                if etype in ("response.completed", "response.incomplete", "response.failed"):
                    self.output = resp.get("output")
                    if isinstance(resp.get("error"), dict):
                        self.error = resp["error"]
            if isinstance(obj.get("usage"), dict):
                self.usage = obj["usage"]
            if etype == "error" or etype.endswith(".failed"):
                self.error = obj.get("error") or obj
        elif isinstance(obj.get("error"), dict):
            self.error = obj["error"]
        return True


class ProxyApp:
    def __init__(self, app: AppConfig, *, mock_upstream: bool = False):
        self.config = app
        self.client = app.client
        self.proxy = app.proxy
        self.metrics = Metrics(self.client.prometheus_labels, self.client.prometheus_max_label_values)
        self.pricing = Pricing(self.proxy.pricing)
        self.logging_headers = tuple(h.lower() for h in self.client.logging_headers)
        self.required_headers = tuple(self.client.required_headers)
        self.customer_header = self.proxy.customer_header.lower()
        self.content = not self.client.disable_content_logging
        self.mock = None
        if mock_upstream:
            from .mock import MockUpstream

            self.mock = MockUpstream(prefix=MOCK_PREFIX)
        self.router = Router(app.providers)
        self.writer = LandingWriter(
            app.landing_dir,
            queue_size=self.proxy.queue_size,
            segment_max_bytes=self.proxy.segment_max_bytes,
            segment_max_age_s=self.proxy.segment_max_age_s,
            flush_interval_s=self.proxy.flush_interval_s,
            on_landed=self.metrics.records_landed.inc,
            on_wait=self.metrics.queue_waits.inc,
            on_error=self.metrics.landing_errors.inc,
            on_lost=self.metrics.records_lost.inc,
        )
        self.session: aiohttp.ClientSession | None = None
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.drop_headers = frozenset({self.customer_header})
        self.routes = {
            "/health": self._health,
            "/health/live": self._live,
            "/metrics": self._metrics,
            "/v1/logs": self._logs,
            "/v1/traces": self._traces,
            "/v1/models": self._models,
        }

    def use_mock_at(self, base_url: str) -> None:
        """Send every request to the built-in mock served by this process at ``base_url`` (…/_mock/v1)."""
        self.router.mock = Target("mock", base_url, None, 60.0)

    # --- ASGI -----------------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path in ENDPOINTS:
                await self._proxied(scope, receive, send, path)
                return
            if self.mock is not None and path.startswith(MOCK_PREFIX + "/"):
                await self.mock(scope, receive, send)
                return
            t0 = time.perf_counter()
            handler = self.routes.get(path)
            if handler is None:
                status = await self._send(send, 404, _error_body(404, f"no route {path}", "not_found_error"))
                label = "unmatched"
            else:
                status = await handler(scope, receive, send)
                label = path
            self.metrics.observe_http(
                label, scope["method"], status, time.perf_counter() - t0, self._custom(scope)
            )
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as err:
                    log.exception("proxy failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        # Idle upstream connections are dropped after 4 s, before servers with short keep-alive timeouts
        # (uvicorn's default is 5 s) close them under a request.
        connector = aiohttp.TCPConnector(
            limit=self.client.initial_pool_size, ttl_dns_cache=300, keepalive_timeout=4
        )
        self.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )
        recovered = self.writer.start(asyncio.get_running_loop())
        log.info("landing records in %s (%d segment(s) recovered)", self.writer.root, len(recovered))

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """After the server stopped taking requests: let in-flight ones end, then drain and publish."""
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            log.error("%d request(s) still running at shutdown", self.inflight)
        if self.session is not None:
            await self.session.close()
        await self.writer.aclose()
        log.info(
            "landing writer closed: %d record(s) submitted, %d written",
            self.writer.submitted,
            self.writer.written,
        )

    # --- helpers ----------------------------------------------------------------------------------------

    @staticmethod
    async def _send(send, status: int, body: bytes, headers: list | None = None) -> int:
        hdrs = list(headers or JSON_HEADERS)
        hdrs.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})
        return status

    async def _read_body(self, receive, limit: int) -> bytes | None:
        chunks = []
        size = 0
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            more = msg.get("more_body", False)
        return b"".join(chunks)

    def _custom(self, scope, headers: dict[str, str] | None = None) -> tuple[str, ...]:
        if not self.metrics.custom:
            return ()
        if headers is None:
            headers = {}
            for k, v in scope["headers"]:
                if k.startswith(b"x-bf-prom-"):
                    headers[k.decode("latin-1")] = v.decode("latin-1")
        return self.metrics.custom_values(
            {
                PROM_HEADER_PREFIX + k[len(PROM_HEADER_PREFIX) :].replace("_", "-"): v
                for k, v in headers.items()
                if k.startswith(PROM_HEADER_PREFIX)
            }
        )

    # --- simple endpoints -------------------------------------------------------------------------------

    async def _health(self, scope, receive, send) -> int:
        alive = self.writer._thread is not None and self.writer._thread.is_alive()
        doc = {
            "status": "ok" if alive and self.writer.error is None else "degraded",
            "landing_writer": "running" if alive else "stopped",
            "queue_free": self.writer.slots.free,
            "queue_size": self.writer.slots.size,
            "records_submitted": self.writer.submitted,
            "records_written": self.writer.written,
            "writer_error": f"{type(self.writer.error).__name__}: {self.writer.error}"[:500]
            if self.writer.error
            else None,
            "write_errors": self.writer.write_errors,
        }
        return await self._send(send, 200 if doc["status"] == "ok" else 503, orjson.dumps(doc))

    async def _live(self, scope, receive, send) -> int:
        # For a liveness probe: 200 while the process serves, even when /health is 503 because the disk
        # refuses writes; restarting then would lose the records held in memory for the retry.
        return await self._send(send, 200, b'{"status": "alive"}')

    async def _models(self, scope, receive, send) -> int:
        """The configured models, as OpenAI's model list (tools call it to fill their model pickers)."""
        data = []
        for name, model in sorted((p, m) for m, p in self.router.by_model.items()):
            data.append({"id": model, "object": "model", "created": 0, "owned_by": name})
        return await self._send(send, 200, orjson.dumps({"object": "list", "data": data}))

    async def _metrics(self, scope, receive, send) -> int:
        body, ctype = self.metrics.render()
        return await self._send(send, 200, body, [(b"content-type", ctype.encode())])

    def _header(self, scope, name: bytes) -> str:
        for k, v in scope["headers"]:
            if k == name:
                return v.decode("latin-1")
        return ""

    async def _intake_body(self, scope, receive, send) -> bytes | int:
        if scope["method"] != "POST":
            return await self._send(send, 405, _error_body(405, "use POST", "invalid_request_error"))
        body = await self._read_body(receive, self.proxy.max_intake_bytes)
        if body is None:
            return await self._send(
                send,
                413,
                _error_body(
                    413,
                    f"the body is larger than proxy.max_intake_bytes ({self.proxy.max_intake_bytes})",
                    "invalid_request_error",
                ),
            )
        return body

    async def _logs(self, scope, receive, send) -> int:
        body = await self._intake_body(scope, receive, send)
        if isinstance(body, int):
            return body
        try:
            groups, report = await asyncio.to_thread(
                intake.process_batch, body, strip_content=not self.content
            )
        except ValueError as err:
            return await self._send(send, 400, _error_body(400, str(err), "invalid_request_error"))
        if groups:
            try:
                await asyncio.to_thread(intake.land_groups, self.writer.root, groups, "intake")
            except OSError as err:
                message = self._landing_refused(err)
                return await self._send(send, 503, _error_body(503, message, "landing_unavailable"))
            self.metrics.records_landed.inc(report["accepted"])
        return await self._send(send, 200, orjson.dumps(report))

    def _landing_refused(self, err: OSError) -> str:
        """Count and log an intake batch the disk refused; the message for the sender (who sends it again)."""
        self.metrics.landing_errors.inc()
        log.error("intake batch not landed: the landing zone refused it (%s)", err)
        return f"the landing zone refused the batch ({err}); none of it was landed: send it again"

    async def _traces(self, scope, receive, send) -> int:
        body = await self._intake_body(scope, receive, send)
        if isinstance(body, int):
            return body
        ctype = self._header(scope, b"content-type").lower()
        customer = self._header(scope, self.customer_header.encode()) or self.proxy.default_customer
        try:
            spans, is_json = otlp.decode(body, ctype, self._header(scope, b"content-encoding"))
        except (ValueError, OSError) as err:
            return await self._send(send, 400, orjson.dumps({"code": 3, "message": str(err)[:500]}))

        def convert() -> tuple[dict, int, int, list[str]]:
            groups: dict = {}
            skipped = rejected = 0
            reasons: list[str] = []
            for span in spans:
                if not otlp.is_genai(span):
                    skipped += 1
                    continue
                try:
                    if "error" in span:
                        raise ValueError(span["error"])
                    rec = otlp.span_to_record(
                        span, customer_id=customer, content=self.content, pricing=self.pricing
                    )
                    problems = intake.check_record(rec)
                except Exception as err:  # a span we cannot read is reported, not fatal
                    problems = [{"path": "(span)", "reason": str(err)}]
                if problems:
                    rejected += 1
                    reasons.append(f"span {span['span_id']}: {problems[0]['path']}: {problems[0]['reason']}")
                    continue
                groups.setdefault(intake.record_hour(rec), []).append(orjson.dumps(rec))
            if groups:
                intake.land_groups(self.writer.root, groups, "otlp")
            return groups, skipped, rejected, reasons

        try:
            groups, skipped, rejected, reasons = await asyncio.to_thread(convert)
        except OSError as err:
            # OTLP/HTTP: 503 is a retryable answer; the body is a google.rpc.Status (14: UNAVAILABLE).
            message = self._landing_refused(err)
            return await self._send(send, 503, orjson.dumps({"code": 14, "message": message}))
        landed = sum(len(v) for v in groups.values())
        if landed:
            self.metrics.records_landed.inc(landed)
        if skipped:
            log.debug("/v1/traces: %d span(s) without gen_ai attributes skipped", skipped)
        body = otlp.encode_response(is_json, rejected, "; ".join(reasons)[:2000])
        ctype_out = b"application/json" if is_json else b"application/x-protobuf"
        return await self._send(send, 200, body, [(b"content-type", ctype_out)])

    # --- the proxied endpoints ------------------------------------------------------------------------

    async def _proxied(self, scope, receive, send, path: str) -> None:
        t0 = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        custom = self._custom(scope, headers)
        self.inflight += 1
        self._idle.clear()
        status = 500
        try:
            status = await self._proxy_request(scope, receive, send, path, headers, t0, custom)
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.set()
            self.metrics.observe_http(path, scope["method"], status, time.perf_counter() - t0, custom)

    async def _reject(self, send, status: int, message: str, etype: str = "invalid_request_error") -> int:
        return await self._send(send, status, _error_body(status, message, etype))

    async def _proxy_request(self, scope, receive, send, path, headers, t0, custom) -> int:
        started = datetime.now(UTC)
        if scope["method"] != "POST":
            return await self._reject(send, 405, f"{path} takes POST")
        missing = [h for h in self.required_headers if h.lower() not in headers]
        if missing:
            return await self._reject(send, 400, f"missing required header(s): {', '.join(missing)}")
        body = await self._read_body(receive, self.proxy.max_body_bytes)
        if body is None:
            return await self._reject(
                send,
                413,
                f"the body is larger than proxy.max_body_bytes "
                f"({self.proxy.max_body_bytes}) or the client went away",
            )
        request_type = ENDPOINTS[path]
        ctype = headers.get("content-type", "")
        form: dict | None = None
        form_items: list | None = None
        req: dict = {}
        if ctype.startswith("multipart/form-data"):
            try:
                form, form_items = await self._parse_form(scope, body)
            except Exception as err:
                return await self._reject(send, 400, f"the multipart body cannot be read: {err}")
            model = form.get("model")
            stream = str(form.get("stream", "")).lower() == "true"
        else:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError as err:
                return await self._reject(send, 400, f"the body is not JSON: {err}")
            if not isinstance(parsed, dict):
                return await self._reject(send, 400, "the body must be a JSON object")
            req = parsed
            model = req.get("model")
            stream = req.get("stream") is True or (
                request_type == "speech" and req.get("stream_format") == "sse"
            )
        if not isinstance(model, str) or not model:
            return await self._reject(send, 400, "the request names no model")
        resolved = self.router.resolve(model)
        if resolved is None:
            return await self._reject(
                send,
                400,
                f"no provider serves model {model!r}: prefix it with a configured provider "
                f"({', '.join(sorted(self.router.targets)) or 'none configured'}/…) or list it under "
                "providers.<name>.models",
                "invalid_request_error",
            )
        provider, upstream_model, target = resolved

        # Forward the body untouched unless the model name or the stream options must change.
        hide_usage = False
        if form is not None:
            if upstream_model != model:
                body, ctype = self._rebuild_form(form_items, upstream_model)
                headers = {**headers, "content-type": ctype}
        else:
            changed = upstream_model != model
            if stream and request_type in STREAM_USAGE_TYPES:
                opts = req.get("stream_options")
                opts = dict(opts) if isinstance(opts, dict) else {}
                if opts.get("include_usage") is not True:
                    hide_usage = True
                    opts["include_usage"] = True
                    req = {**req, "stream_options": opts}
                    changed = True
            if changed:
                body = orjson.dumps({**req, "model": upstream_model})

        try:
            await self.writer.reserve(self.client.drop_excess_requests)
        except QueueFull:
            self.metrics.records_rejected.inc()
            return await self._reject(
                send, 429, "the proxy's landing queue is full; retry later", "rate_limit_error"
            )

        request_id = str(uuid.uuid4())
        rec = base_record(
            started=started,
            request_id=request_id,
            customer_id=headers.get(self.customer_header) or self.proxy.default_customer,
            provider=provider,
            model=upstream_model,
            endpoint=path,
            method="POST",
            request_type=request_type,
            stream=stream,
            metadata=logging_metadata(headers, self.logging_headers),
            user_id=req.get("user") if isinstance(req.get("user"), str) else None,
        )
        # Speech audio is passed on as it comes (TTS playback starts on the first chunk), SSE or not.
        state = StreamState(request_type, hide_usage) if stream or request_type == "speech" else None
        upstream_s: float | None = None
        submitted = False
        try:
            fwd = upstream_headers(headers, target, self.drop_headers)
            status, resp_body, upstream_s, resp_ctype = await self._call(
                send, target, path, fwd, body, rec, state, receive, t0
            )
            self._finish(rec, req, form, resp_body, resp_ctype, state, t0)
            self.writer.submit(hour_key(started), rec)
            submitted = True
            return status
        except BaseException as err:
            # Cancelled (shutdown past its grace period) or a bug: the record still lands.
            if not submitted:
                if rec["status"] == "success":
                    rec["status"] = "error"
                    rec["status_code"] = 503 if isinstance(err, asyncio.CancelledError) else 500
                    rec["error_type"] = (
                        "cancelled" if isinstance(err, asyncio.CancelledError) else "proxy_error"
                    )
                    rec["error_message"] = (
                        "the proxy shut down (proxy.shutdown_grace_s) before the request ended"
                        if isinstance(err, asyncio.CancelledError)
                        else f"{type(err).__name__}: {err}"[:2000]
                    )
                try:  # keep what is known: usage and text received so far, timings
                    self._finish(rec, req, form, None, "", state, t0)
                except Exception:
                    rec["ended_at"] = iso(datetime.now(UTC))
                    rec["latency_ms"] = int((time.perf_counter() - t0) * 1000)
                self.writer.submit(hour_key(started), rec)
                submitted = True
            if not isinstance(err, asyncio.CancelledError):
                log.exception("request %s failed in the proxy", request_id)
            raise
        finally:
            if submitted:
                try:
                    self.metrics.observe_record(rec, upstream_s, custom, state.gaps if state else [])
                except Exception:
                    log.exception("metrics of request %s", request_id)

    async def _call(self, send, target: Target, path, fwd, body, rec, state, receive, t0):
        """Call the provider and answer the client. Returns (status sent, response body or None, upstream s)."""
        assert self.session is not None
        rid = rec["request_id"]
        if state is None:
            timeout = aiohttp.ClientTimeout(total=target.timeout_s)
        else:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=target.timeout_s, sock_read=target.timeout_s
            )
        t_up = time.perf_counter()
        try:
            try:
                resp = await self.session.post(target.url(path), data=body, headers=fwd, timeout=timeout)
            except aiohttp.ServerDisconnectedError:
                # A pooled connection the provider closed while it sat idle: the request got no answer at
                # all, so it is sent once more on a new connection (as HTTP clients do for a reused one).
                resp = await self.session.post(target.url(path), data=body, headers=fwd, timeout=timeout)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return await self._timed_out(send, rec, target, t_up)
        except aiohttp.ClientError as err:
            return await self._client_error(send, rec, "upstream_unreachable", err, t_up)
        try:
            is_sse = resp.status == 200 and resp.content_type == "text/event-stream"
            is_audio = resp.status == 200 and state is not None and state.request_type == "speech"
            if state is not None and (is_sse or is_audio):
                await self._stream(send, resp, rec, state, receive, t0, raw=not is_sse)
                return 200, None, time.perf_counter() - t_up, resp.content_type
            try:
                resp_body = await resp.read()
            except (TimeoutError, aiohttp.ServerTimeoutError):
                return await self._timed_out(send, rec, target, t_up)
            except aiohttp.ClientError as err:
                return await self._client_error(send, rec, "upstream_error", err, t_up)
            up_s = time.perf_counter() - t_up
            hdrs = response_headers(list(resp.headers.items()), rid)
            hdrs.append((b"content-length", str(len(resp_body)).encode()))
            await send({"type": "http.response.start", "status": resp.status, "headers": hdrs})
            await send({"type": "http.response.body", "body": resp_body})
            rec["status_code"] = resp.status
            if resp.status >= 400:
                rec["status"] = "error"
            return resp.status, resp_body, up_s, resp.content_type
        finally:
            if resp.content.at_eof():
                resp.release()
            else:
                resp.close()  # a stream cut short: this connection cannot be reused

    async def _timed_out(self, send, rec, target, t_up: float):
        message = f"provider {rec['provider']} did not answer within {target.timeout_s}s"
        status = await self._upstream_failed(send, rec, 504, "timeout", message)
        return status, None, time.perf_counter() - t_up, ""

    async def _client_error(self, send, rec, etype: str, err: Exception, t_up: float):
        message = f"provider {rec['provider']}: {type(err).__name__}: {err}"
        status = await self._upstream_failed(send, rec, 502, etype, message)
        return status, None, time.perf_counter() - t_up, ""

    async def _upstream_failed(self, send, rec, status: int, etype: str, message: str) -> int:
        rec["status"] = "error"
        rec["status_code"] = status
        rec["error_type"] = etype
        rec["error_message"] = message
        hdrs = [*JSON_HEADERS, (b"x-request-id", rec["request_id"].encode())]
        return await self._send(send, status, _error_body(status, message, etype), hdrs)

    async def _stream(self, send, resp, rec, state: StreamState, receive, t0, raw: bool = False) -> None:
        """Pass a stream on as it comes: SSE events (read into ``state``), or raw bytes (``raw``: audio)."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": response_headers(list(resp.headers.items()), rec["request_id"]),
            }
        )

        async def pump() -> None:
            buf = b""
            try:
                async for chunk in resp.content.iter_any():
                    now = time.perf_counter()
                    if raw:
                        state.audio(chunk, now)
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        continue
                    if b"\r" in chunk:
                        chunk = chunk.replace(b"\r\n", b"\n")
                    buf += chunk
                    out = []
                    while True:
                        i = buf.find(b"\n\n")
                        if i < 0:
                            break
                        event, buf = buf[: i + 2], buf[i + 2 :]
                        if state.feed(event, now):
                            out.append(event)
                    if out:
                        await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
            except (TimeoutError, aiohttp.ServerTimeoutError):
                rec["status"], rec["status_code"], rec["error_type"] = "error", 504, "timeout"
                rec["error_message"] = f"provider {rec['provider']} stopped sending mid-stream"
            except aiohttp.ClientError as err:
                rec["status"], rec["status_code"], rec["error_type"] = "error", 502, "upstream_error"
                rec["error_message"] = f"provider {rec['provider']}: {type(err).__name__}: {err}"[:2000]
            await send({"type": "http.response.body", "body": buf, "more_body": False})

        async def watch() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return

        pump_task = asyncio.ensure_future(pump())
        watch_task = asyncio.ensure_future(watch())
        cancelled = False
        try:
            await asyncio.wait((pump_task, watch_task), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            cancelled = True  # the proxy is shutting down past its grace period
            raise
        finally:
            if not pump_task.done():
                pump_task.cancel()
                if cancelled:
                    rec["status"], rec["status_code"], rec["error_type"] = "error", 503, "cancelled"
                    rec["error_message"] = (
                        f"the proxy shut down (proxy.shutdown_grace_s) after {state.progress()}"
                    )
                else:
                    rec["status"], rec["status_code"], rec["error_type"] = "error", 499, "client_disconnected"
                    rec["error_message"] = f"the client closed the connection after {state.progress()}"
            watch_task.cancel()
            await asyncio.gather(pump_task, watch_task, return_exceptions=True)
        if pump_task.done() and not pump_task.cancelled() and pump_task.exception() is not None:
            raise pump_task.exception()

    # --- the record -------------------------------------------------------------------------------------

    def _finish(
        self,
        rec: dict,
        req: dict,
        form: dict | None,
        resp_body: bytes | None,
        ctype: str,
        state: StreamState | None,
        t0: float,
    ) -> None:
        end = time.perf_counter()
        rec["ended_at"] = iso(datetime.now(UTC))
        rec["latency_ms"] = int((end - t0) * 1000)
        request_type = rec["request_type"]
        doc: Any = None
        if resp_body is not None and "json" in (ctype or ""):
            try:
                doc = orjson.loads(resp_body)
            except orjson.JSONDecodeError:
                doc = None
        if state is not None and resp_body is None:
            rec.update(usage_fields(state.usage))
            rec["time_to_first_token_ms"] = (
                int((state.first_token - t0) * 1000) if state.first_token else None
            )
            rec["finish_reason"] = state.finish_reason or state.response_status
            if state.error is not None and rec["status"] == "success":
                rec["status"], rec["status_code"] = "error", 500
                etype, msg = error_of({"error": state.error}, "stream_error")
                rec["error_type"], rec["error_message"] = etype, msg
            output = state.output
            if request_type == "speech":
                ok = state.audio_bytes or rec["status"] == "success"
                output = {"audio_bytes": state.audio_bytes, "content_type": ctype} if ok else None
            elif output is None:
                text = "".join(state.text)
                output = {"role": "assistant", "content": text} if request_type == "chat" else {"text": text}
        else:
            if rec["status"] == "success" and isinstance(doc, dict):
                rec.update(usage_fields(doc.get("usage")))
                rec["finish_reason"] = finish_reason_of(request_type, doc)
            elif rec["status"] == "error" and rec["error_type"] is None:
                etype, msg = error_of(doc, f"http_{rec['status_code']}")
                rec["error_type"], rec["error_message"] = etype, msg
            output = response_output(request_type, doc) if rec["status"] == "success" else None
        rec["cost_usd"] = self.pricing.cost(
            rec["provider"], rec["model"], rec["input_tokens"], rec["output_tokens"]
        )
        if self.content:
            rec["input_content"] = json_text(request_input(request_type, req, form))
            rec["output_content"] = json_text(output)

    # --- multipart --------------------------------------------------------------------------------------

    async def _parse_form(self, scope, body: bytes) -> tuple[dict, list]:
        from starlette.datastructures import UploadFile
        from starlette.requests import Request

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        fields: dict = {}
        items: list = []
        async with Request(scope, replay).form() as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    items.append((key, (value.filename or "file", value.content_type, data)))
                    fields.setdefault(
                        "file",
                        {"name": value.filename, "bytes": len(data), "content_type": value.content_type},
                    )
                else:
                    items.append((key, value))
                    fields[key] = value
        return fields, items

    @staticmethod
    def _rebuild_form(items: list, model: str) -> tuple[bytes, str]:
        boundary = uuid.uuid4().hex
        out = []
        for key, value in items:
            out.append(f"--{boundary}\r\n".encode())
            if isinstance(value, tuple):
                filename, ctype, data = value
                out.append(
                    f'Content-Disposition: form-data; name="{key}"; filename="{filename}"\r\n'.encode()
                )
                out.append(f"Content-Type: {ctype or 'application/octet-stream'}\r\n\r\n".encode())
                out.append(data)
            else:
                out.append(f'Content-Disposition: form-data; name="{key}"\r\n\r\n'.encode())
                out.append((model if key == "model" else str(value)).encode())
            out.append(b"\r\n")
        out.append(f"--{boundary}--\r\n".encode())
        return b"".join(out), f"multipart/form-data; boundary={boundary}"
