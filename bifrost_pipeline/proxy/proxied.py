"""The proxied endpoints (``/v1/chat/completions`` and the others in ``protocol.ENDPOINTS``): one request from
its arrival to its record in the landing queue.

Hot path: read the body, parse it once, route and rewrite it (``forward``), reserve a landing slot, call the
provider (aiohttp, pooled connections), send its answer on (whole, or as it streams: ``streaming``). Only
after the answer has been sent is the record finished and queued; the landing writer's thread serializes
and writes it. Nothing on the request's path touches the disk.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import orjson

from bifrost_pipeline.config import AppConfig

from .asgi import JSON_HEADERS, Receive, Scope, Send, error_body, read_body, send_whole
from .assembler import StreamAssembler
from .auth import Gate, VirtualKey, allows, refuse_model
from .forward import (
    ClientRequest,
    ForwardPlan,
    Rejected,
    Route,
    VideoBook,
    check_method,
    read_request,
    rewrite,
    route,
)
from .metrics import Metrics
from .otel_export import OtelExport
from .protocol import ENDPOINTS, video_call
from .record import (
    LogRecord,
    RecordRules,
    base_record,
    error_of,
    finish_record,
    hour_key,
    iso,
    logging_metadata,
    mark_aborted,
    set_error,
)
from .routing import KEY_STATUSES, Key, ProviderPolicy, backoff_s, next_step, parse_retry_after
from .streaming import relay_stream
from .upstream import Router, response_headers
from .writer import LandingWriter, QueueFull

log = logging.getLogger("bifrost_pipeline.proxy")


@dataclass(slots=True)
class Exchange:
    """One request in flight: the plan it follows, its record, its stream and its clock."""

    plan: ForwardPlan
    rec: LogRecord
    stream: StreamAssembler | None  # set when the answer is passed on as it comes
    t0: float  # time.perf_counter() at arrival
    started: datetime  # wall clock at arrival (the record's timestamp and landing hour)
    vk: VirtualKey | None = None
    key_name: str | None = None  # the provider key of the last attempt
    fallback_index: int = 0  # 0: the primary provider; n: the n-th of its fallbacks
    engines: str = ""  # the routing_engines_used metric label


@dataclass(slots=True)
class Admission:
    """What is known of a request while it is admitted: what a refusal's record can tell."""

    vk: VirtualKey | None = None
    request: ClientRequest | None = None
    route: Route | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """An attempt the provider answered: a stream still to relay (``body`` None), or its whole body."""

    resp: aiohttp.ClientResponse
    body: bytes | None

    @property
    def status(self) -> int:
        return self.resp.status


@dataclass(frozen=True, slots=True)
class Failure:
    """An attempt that got no answer: the connection failed or the provider did not answer in time."""

    status: int  # what the client is answered if it is the last attempt (502, 504)
    etype: str
    message: str
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """What the client was answered."""

    status: int
    body: bytes | None  # the provider's whole body; None when it was streamed or never came
    upstream_s: float  # from calling the provider to its whole answer (or its failure)
    content_type: str


class Forwarder:
    """Serves the proxied endpoints: takes a request to the provider and its answer back, and lands a record."""

    def __init__(
        self, app: AppConfig, *, router: Router, writer: LandingWriter, metrics: Metrics, rules: RecordRules,
        otel: OtelExport | None = None,
    ):
        self.client = app.client
        self.proxy = app.proxy
        self.router = router
        self.writer = writer
        self.metrics = metrics
        self.rules = rules
        self.otel = otel  # OTLP spans of finished records (config otel), else None
        self.gate = Gate.from_config(app.proxy)  # None: no virtual keys, no cost
        self.logging_headers = tuple(h.lower() for h in self.client.logging_headers)
        self.required_headers = tuple(self.client.required_headers)
        self.customer_header = self.proxy.customer_header.lower()
        self.drop_headers = frozenset({self.customer_header})
        self.session: aiohttp.ClientSession | None = None
        self.videos = VideoBook()

    async def open(self) -> None:
        # Idle upstream connections are dropped after 4 s, before servers with short keep-alive timeouts
        # (uvicorn's default is 5 s) close them under a request.
        connector = aiohttp.TCPConnector(
            limit=self.client.initial_pool_size, ttl_dns_cache=300, keepalive_timeout=4
        )
        self.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, path: str, headers: dict[str, str], t0: float,
        custom: tuple[str, ...],
    ) -> int:
        """Answer one request; returns the status sent. ``custom`` are its Prometheus label values."""
        started = datetime.now(UTC)
        admission = Admission()
        try:
            plan = await self._plan(scope, receive, path, headers, admission)
            await self.writer.reserve(self.client.drop_excess_requests)
        except Rejected as no:
            return await self._refuse(send, no, admission, scope, path, headers, started, t0)
        except QueueFull:
            self.metrics.records_rejected.inc()
            message = "the proxy's landing queue is full; retry later"
            return await send_whole(send, 429, error_body(429, message, "rate_limit_error"))
        request = plan.request
        stream = StreamAssembler(request.request_type, plan.hide_usage) if request.streamed else None
        vk = admission.vk
        ex = Exchange(plan, self._open_record(plan, started, vk), stream, t0, started, vk)
        return await self._exchange(send, receive, ex, custom)

    async def _plan(
        self, scope: Scope, receive: Receive, path: str, headers: dict[str, str], admission: Admission
    ) -> ForwardPlan:
        """Admit the request (method, headers, virtual key and its limit, body, model) and plan its call.

        The virtual key is checked before the body is read: a refused client costs no body read.
        """
        check_method(path, scope["method"])
        missing = [h for h in self.required_headers if h.lower() not in headers]
        if missing:
            raise Rejected(400, f"missing required header(s): {', '.join(missing)}", reason="missing_header")
        vk = None
        if self.gate is not None:
            vk = admission.vk = self.gate.identify(headers)
            if vk is not None:
                self.gate.admit(vk)
        body = await read_body(receive, self.proxy.max_body_bytes)
        if body is None:
            raise Rejected(
                413,
                f"the body is larger than proxy.max_body_bytes "
                f"({self.proxy.max_body_bytes}) or the client went away",
                reason="body_too_large",
            )
        request = admission.request = await read_request(scope, path, headers, body, self.videos)
        to = admission.route = route(request, self.router)
        if vk is not None and not allows(vk, to.provider, to.model, request.model):
            raise refuse_model(vk, to.provider, to.model)
        return rewrite(request, to, self.drop_headers)

    def _metadata(self, headers: dict[str, str]) -> dict[str, str] | None:
        meta, cut, dropped = logging_metadata(
            headers, self.logging_headers, self.client.max_logging_headers, self.client.max_logging_header_bytes
        )
        if cut:
            self.metrics.metadata_cut.labels("value").inc(cut)
        if dropped:
            self.metrics.metadata_cut.labels("key").inc(dropped)
        return meta

    def _open_record(self, plan: ForwardPlan, started: datetime, vk: VirtualKey | None) -> LogRecord:
        request = plan.request
        user = request.json.get("user")
        rec = base_record(
            timestamp=iso(started),
            request_id=str(uuid.uuid4()),
            # A virtual key says who pays; the customer header cannot override it.
            customer_id=vk.customer_id
            if vk is not None
            else plan.headers.get(self.customer_header) or self.proxy.default_customer,
            provider=plan.route.provider,
            model=plan.route.model,
            endpoint=request.endpoint or request.path,
            method=request.method,
            request_type=request.request_type,
            stream=request.stream,
            metadata=self._metadata(plan.headers),
            user_id=user if isinstance(user, str) else None,
        )
        if vk is not None:
            rec["team_id"] = vk.team_id
            rec["virtual_key_id"] = vk.id
        return rec

    async def _refuse(
        self, send: Send, no: Rejected, adm: Admission, scope: Scope, path: str, headers: dict[str, str],
        started: datetime, t0: float,
    ) -> int:
        """Answer a request refused before any provider saw it, and land its record (status error, the
        reason as error_type) when the landing queue has room: refusals never wait for it."""
        self.metrics.refused.labels(no.reason).inc()
        hdrs = [*JSON_HEADERS, *no.headers]
        if scope["method"] in RECORD_METHODS:
            if self.writer.slots.try_acquire():
                rec = self._refusal_record(no, adm, scope["method"], path, headers, started, t0)
                self.writer.submit(hour_key(started), rec)
                if self.otel is not None:
                    self.otel.record(rec)
                hdrs.append((b"x-request-id", rec["request_id"].encode()))
            else:
                self.metrics.refusals_unlanded.inc()
        return await send_whole(send, no.status, error_body(no.status, no.message, no.etype), hdrs)

    def _refusal_record(
        self, no: Rejected, adm: Admission, method: str, path: str, headers: dict[str, str],
        started: datetime, t0: float,
    ) -> LogRecord:
        vk, request, to = adm.vk, adm.request, adm.route
        rec = base_record(
            timestamp=iso(started),
            request_id=str(uuid.uuid4()),
            customer_id=vk.customer_id
            if vk is not None
            else headers.get(self.customer_header) or self.proxy.default_customer,
            provider=to.provider if to is not None else UNKNOWN,
            model=to.model if to is not None else (request.model if request is not None else UNKNOWN),
            endpoint=_endpoint(path),
            method=method,
            request_type=_request_type(path),
            stream=request.stream if request is not None else False,
            metadata=self._metadata(headers),
        )
        if vk is not None:
            rec["team_id"] = vk.team_id
            rec["virtual_key_id"] = vk.id
        set_error(rec, no.status, no.reason, no.message[:2000])
        rec["retries"] = None  # no provider was tried: no attempt, no retry, no fallback
        rec["fallback_index"] = None
        rec["attempts"] = []
        rec["ended_at"] = iso(datetime.now(UTC))
        rec["latency_ms"] = int((time.perf_counter() - t0) * 1000)
        return rec

    async def _exchange(self, send: Send, receive: Receive, ex: Exchange, custom: tuple[str, ...]) -> int:
        """Call, answer, finish and queue the record. Whatever happens, a reserved slot gets its record."""
        rec = ex.rec
        upstream_s: float | None = None
        submitted = False
        ids = None
        try:
            reply = await self._call(send, receive, ex)
            upstream_s = reply.upstream_s
            ids = finish_record(
                rec, ex.plan.request, ex.stream, ex.t0, self.rules, reply.body, reply.content_type,
                sent=getattr(send, "sent", None),
            )
            _close_trail(ex)
            self.videos.note(ex.plan.request, rec["video_id"])
            self.writer.submit(hour_key(ex.started), rec)
            submitted = True
            return reply.status
        except BaseException as err:
            # Cancelled (shutdown past its grace period) or a bug: the record still lands.
            if not submitted:
                mark_aborted(rec, err)
                try:  # keep what is known: usage and text received so far, timings
                    finish_record(rec, ex.plan.request, ex.stream, ex.t0, self.rules, sent=getattr(send, "sent", None))
                except Exception:
                    rec["ended_at"] = iso(datetime.now(UTC))
                    rec["latency_ms"] = int((time.perf_counter() - ex.t0) * 1000)
                _close_trail(ex)
                self.writer.submit(hour_key(ex.started), rec)
                submitted = True
            if not isinstance(err, asyncio.CancelledError):
                log.exception("request %s failed in the proxy", rec["request_id"])
            raise
        finally:
            if submitted:
                try:
                    gaps = ex.stream.gaps if ex.stream else []
                    routing = (ex.vk.name if ex.vk else "", ex.key_name or "", ex.engines)
                    self.metrics.observe_record(rec, upstream_s, custom, gaps, routing)
                except Exception:
                    log.exception("metrics of request %s", rec["request_id"])
                if self.otel is not None:
                    self.otel.record(rec, ids)  # only queues the span; never raises

    async def _call(self, send: Send, receive: Receive, ex: Exchange) -> Reply:
        """Call the provider, retrying, rotating keys and falling back as its policy says, and answer the
        client with the last attempt. Nothing reaches the client before that last attempt: a stream is
        retried only before its first byte."""
        plan, rec = ex.plan, ex.rec
        policy = self.router.policy(plan.route.provider)
        fallbacks = self._fallbacks(policy, ex.vk)
        trail: list[dict] = []
        rec["attempts"] = trail
        ex.engines = _engines(ex.vk, policy)
        retry = 0
        while True:
            key = policy.pool.choose() if policy.pool is not None else None
            ex.key_name = key.name if key is not None else policy.key_name
            headers = plan.upstream_headers
            if key is not None:
                headers = {**headers, "authorization": f"Bearer {key.value}"}
            t_up = time.perf_counter()
            outcome = await self._send(plan, headers, ex.stream)
            status = outcome.status if isinstance(outcome, Answer) else None
            retry_after = None
            if isinstance(outcome, Answer) and outcome.status >= 400:
                retry_after = parse_retry_after(outcome.resp.headers.get("retry-after"))
                if key is not None and status in KEY_STATUSES:
                    policy.pool.rest(key, retry_after)  # type: ignore[union-attr]
            if status is not None and status < 400:
                step = "answer"
            else:
                step = next_step(
                    status,
                    retries_left=policy.max_retries - retry,
                    fallbacks_left=len(fallbacks) - ex.fallback_index,
                    timed_out=isinstance(outcome, Failure) and outcome.timed_out,
                    other_key=key is not None and policy.pool.has_awake_other_than(key),  # type: ignore[union-attr]
                )
            if step == "answer":
                trail.append(_attempt(plan, ex.key_name, None, None, None, 0))  # settled in _close_trail
                reply = await self._answer(send, receive, ex, outcome, t_up)
                trail[-1]["latency_ms"] = int(reply.upstream_s * 1000)
                return reply
            trail.append(_failed_attempt(plan, ex.key_name, outcome, t_up))
            if step == "retry":
                await asyncio.sleep(_retry_wait(policy, key, status, retry, retry_after))
                retry += 1
                continue
            provider, model = fallbacks[ex.fallback_index]
            ex.fallback_index += 1
            plan = ex.plan = self._fallback_plan(plan, provider, model)
            policy = self.router.policy(provider)
            rec["provider"], rec["model"] = plan.route.provider, plan.route.model
            retry = 0

    def _fallbacks(self, policy: ProviderPolicy, vk: VirtualKey | None) -> tuple[tuple[str, str], ...]:
        """The primary's fallbacks that a target serves and the virtual key may use."""
        if not policy.fallbacks:
            return ()
        return tuple(
            (p, m)
            for p, m in policy.fallbacks
            if self.router.target(p) is not None and (vk is None or allows(vk, p, m, f"{p}/{m}"))
        )

    def _fallback_plan(self, plan: ForwardPlan, provider: str, model: str) -> ForwardPlan:
        target = self.router.target(provider)
        assert target is not None  # _fallbacks kept only providers with a target
        return rewrite(plan.request, Route(provider, model, target), self.drop_headers)

    async def _send(
        self, plan: ForwardPlan, headers: dict[str, str], stream: StreamAssembler | None
    ) -> Answer | Failure:
        """One attempt: the provider's answer, or why none came. A whole answer is read here, before the
        client sees any of it, so that a connection cut while reading can still be retried."""
        assert self.session is not None
        timeout_s = plan.route.target.timeout_s
        if stream is None:
            timeout = aiohttp.ClientTimeout(total=timeout_s)
        else:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        provider = plan.route.provider
        resp = None
        try:
            try:
                resp = await self.session.request(
                    plan.request.method, plan.url, data=plan.body, headers=headers, timeout=timeout
                )
            except aiohttp.ServerDisconnectedError:
                # A pooled connection the provider closed while it sat idle: the request got no answer at
                # all, so it is sent once more on a new connection (as HTTP clients do for a reused one).
                resp = await self.session.request(
                    plan.request.method, plan.url, data=plan.body, headers=headers, timeout=timeout
                )
            if stream is not None and resp.status == 200 and _streams(resp, plan.request.raw_stream):
                return Answer(resp, None)
            body = await resp.read()
            resp.release()
            return Answer(resp, body)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            _let_go(resp)
            return Failure(504, "timeout", f"provider {provider} did not answer within {timeout_s}s", True)
        except aiohttp.ClientError as err:
            _let_go(resp)
            etype = "upstream_unreachable" if resp is None else "upstream_error"
            return Failure(502, etype, f"provider {provider}: {type(err).__name__}: {err}")

    async def _answer(
        self, send: Send, receive: Receive, ex: Exchange, outcome: Answer | Failure, t_up: float
    ) -> Reply:
        """Answer the client with the last attempt's outcome."""
        rec, stream = ex.rec, ex.stream
        if isinstance(outcome, Failure):
            status = await _upstream_failed(send, rec, outcome.status, outcome.etype, outcome.message)
            return Reply(status, None, time.perf_counter() - t_up, "")
        resp = outcome.resp
        if outcome.body is not None:
            return await _send_whole_answer(send, resp, outcome.body, rec, t_up)
        assert stream is not None
        try:
            raw = resp.content_type != "text/event-stream"
            await relay_stream(send, receive, resp, rec, stream, raw=raw)
            return Reply(200, None, time.perf_counter() - t_up, resp.content_type)
        finally:
            _let_go(resp)


def _streams(resp: aiohttp.ClientResponse, raw_stream: bool) -> bool:
    """Whether a 200 answer is passed on as it comes: server-sent events, or bytes (speech audio, a video's
    content)."""
    return resp.content_type == "text/event-stream" or raw_stream


def _let_go(resp: aiohttp.ClientResponse | None) -> None:
    if resp is None:
        return
    if resp.content.at_eof():
        resp.release()
    else:
        resp.close()  # a stream cut short: this connection cannot be reused


def _endpoint(path: str) -> str:
    """What a record names: the path, or its template for a video's calls (no id in the endpoint)."""
    video = video_call(path)
    return video[0] if video else path


def _request_type(path: str) -> str:
    if path in ENDPOINTS:
        return ENDPOINTS[path]
    return "video" if video_call(path) else "chat"


RECORD_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})  # the record's `method` enum
UNKNOWN = "unknown"  # provider or model of a request refused before either was known


def _engines(vk: VirtualKey | None, policy: ProviderPolicy) -> str:
    """Seed 002's routing_engines_used: governance (a virtual key), loadbalancing (several keys)."""
    if vk is None:
        return "loadbalancing" if policy.pool is not None else ""
    return "governance,loadbalancing" if policy.pool is not None else "governance"


def _attempt(
    plan: ForwardPlan, key_name: str | None, status: int | None, etype: str | None, message: str | None,
    latency_ms: int,
) -> dict:
    """One entry of the record's attempt trail."""
    return {
        "provider": plan.route.provider,
        "model": plan.route.model,
        "key_name": key_name,
        "status_code": status,
        "error_type": etype,
        "error_message": message,
        "latency_ms": latency_ms,
    }


def _failed_attempt(plan: ForwardPlan, key_name: str | None, outcome: Answer | Failure, t_up: float) -> dict:
    """The trail entry of an attempt that is not the last."""
    ms = int((time.perf_counter() - t_up) * 1000)
    if isinstance(outcome, Failure):
        return _attempt(plan, key_name, outcome.status, outcome.etype, outcome.message[:2000], ms)
    doc = None
    if outcome.body:
        try:
            doc = orjson.loads(outcome.body)
        except orjson.JSONDecodeError:
            doc = None
    etype, message = error_of(doc, f"http_{outcome.status}")
    return _attempt(plan, key_name, outcome.status, etype, message, ms)


def _retry_wait(policy: ProviderPolicy, key: Key | None, status: int | None, retry: int, retry_after: float | None) -> float:
    """No wait when the key was at fault and another key is awake; else the policy's backoff."""
    if key is not None and status in KEY_STATUSES and policy.pool is not None and policy.pool.has_awake_other_than(key):
        return 0.0
    return backoff_s(retry, policy.backoff_base_s, policy.backoff_max_s, retry_after, random.random())


def _close_trail(ex: Exchange) -> None:
    """Settle the last attempt from the finished record, and count retries and the fallback used."""
    rec = ex.rec
    trail = rec.get("attempts")
    if not trail:
        return
    last = trail[-1]
    if last["status_code"] is None:
        last["status_code"] = rec["status_code"]
        last["error_type"] = rec["error_type"]
        last["error_message"] = rec["error_message"]
    rec["fallback_index"] = ex.fallback_index
    rec["retries"] = max(0, len(trail) - 1 - ex.fallback_index)


async def _send_whole_answer(
    send: Send, resp: aiohttp.ClientResponse, body: bytes, rec: LogRecord, t_up: float
) -> Reply:
    """Send the provider's whole answer on."""
    up_s = time.perf_counter() - t_up
    hdrs = response_headers(list(resp.headers.items()), rec["request_id"])
    hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": resp.status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})
    rec["status_code"] = resp.status
    if resp.status >= 400:
        rec["status"] = "error"
    return Reply(resp.status, body, up_s, resp.content_type)


async def _upstream_failed(send: Send, rec: LogRecord, status: int, etype: str, message: str) -> int:
    set_error(rec, status, etype, message)
    hdrs = [*JSON_HEADERS, (b"x-request-id", rec["request_id"].encode())]
    return await send_whole(send, status, error_body(status, message, etype), hdrs)
