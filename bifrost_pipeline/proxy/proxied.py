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
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

from bifrost_pipeline.config import AppConfig

from .asgi import JSON_HEADERS, Receive, Scope, Send, error_body, read_body, send_whole
from .assembler import StreamAssembler
from .forward import ForwardPlan, Rejected, VideoBook, check_method, read_request, rewrite, route
from .metrics import Metrics
from .record import (
    LogRecord,
    RecordRules,
    base_record,
    finish_record,
    hour_key,
    iso,
    logging_metadata,
    mark_aborted,
    set_error,
)
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
        self, app: AppConfig, *, router: Router, writer: LandingWriter, metrics: Metrics, rules: RecordRules
    ):
        self.client = app.client
        self.proxy = app.proxy
        self.router = router
        self.writer = writer
        self.metrics = metrics
        self.rules = rules
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
        try:
            plan = await self._plan(scope, receive, path, headers)
            await self.writer.reserve(self.client.drop_excess_requests)
        except Rejected as no:
            return await send_whole(send, no.status, error_body(no.status, no.message, no.etype))
        except QueueFull:
            self.metrics.records_rejected.inc()
            message = "the proxy's landing queue is full; retry later"
            return await send_whole(send, 429, error_body(429, message, "rate_limit_error"))
        request = plan.request
        stream = StreamAssembler(request.request_type, plan.hide_usage) if request.streamed else None
        ex = Exchange(plan, self._open_record(plan, started), stream, t0, started)
        return await self._exchange(send, receive, ex, custom)

    async def _plan(self, scope: Scope, receive: Receive, path: str, headers: dict[str, str]) -> ForwardPlan:
        check_method(path, scope["method"])
        missing = [h for h in self.required_headers if h.lower() not in headers]
        if missing:
            raise Rejected(400, f"missing required header(s): {', '.join(missing)}")
        body = await read_body(receive, self.proxy.max_body_bytes)
        if body is None:
            raise Rejected(
                413,
                f"the body is larger than proxy.max_body_bytes "
                f"({self.proxy.max_body_bytes}) or the client went away",
            )
        request = await read_request(scope, path, headers, body, self.videos)
        return rewrite(request, route(request, self.router), self.drop_headers)

    def _open_record(self, plan: ForwardPlan, started: datetime) -> LogRecord:
        request = plan.request
        user = request.json.get("user")
        return base_record(
            started=started,
            request_id=str(uuid.uuid4()),
            customer_id=plan.headers.get(self.customer_header) or self.proxy.default_customer,
            provider=plan.route.provider,
            model=plan.route.model,
            endpoint=request.endpoint or request.path,
            method=request.method,
            request_type=request.request_type,
            stream=request.stream,
            metadata=logging_metadata(plan.headers, self.logging_headers),
            user_id=user if isinstance(user, str) else None,
        )

    async def _exchange(self, send: Send, receive: Receive, ex: Exchange, custom: tuple[str, ...]) -> int:
        """Call, answer, finish and queue the record. Whatever happens, a reserved slot gets its record."""
        rec = ex.rec
        upstream_s: float | None = None
        submitted = False
        try:
            reply = await self._call(send, receive, ex)
            upstream_s = reply.upstream_s
            finish_record(
                rec, ex.plan.request, ex.stream, ex.t0, self.rules, reply.body, reply.content_type,
                sent=getattr(send, "sent", None),
            )
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
                self.writer.submit(hour_key(ex.started), rec)
                submitted = True
            if not isinstance(err, asyncio.CancelledError):
                log.exception("request %s failed in the proxy", rec["request_id"])
            raise
        finally:
            if submitted:
                try:
                    gaps = ex.stream.gaps if ex.stream else []
                    self.metrics.observe_record(rec, upstream_s, custom, gaps)
                except Exception:
                    log.exception("metrics of request %s", rec["request_id"])

    async def _call(self, send: Send, receive: Receive, ex: Exchange) -> Reply:
        """Call the provider and answer the client."""
        assert self.session is not None
        plan, rec, stream = ex.plan, ex.rec, ex.stream
        timeout_s = plan.route.target.timeout_s
        if stream is None:
            timeout = aiohttp.ClientTimeout(total=timeout_s)
        else:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        t_up = time.perf_counter()
        try:
            try:
                resp = await self.session.request(
                    plan.request.method, plan.url, data=plan.body, headers=plan.upstream_headers, timeout=timeout
                )
            except aiohttp.ServerDisconnectedError:
                # A pooled connection the provider closed while it sat idle: the request got no answer at
                # all, so it is sent once more on a new connection (as HTTP clients do for a reused one).
                resp = await self.session.request(
                    plan.request.method, plan.url, data=plan.body, headers=plan.upstream_headers, timeout=timeout
                )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return await _timed_out(send, rec, timeout_s, t_up)
        except aiohttp.ClientError as err:
            return await _client_error(send, rec, "upstream_unreachable", err, t_up)
        try:
            is_sse = resp.status == 200 and resp.content_type == "text/event-stream"
            is_raw = resp.status == 200 and stream is not None and plan.request.raw_stream
            if stream is not None and (is_sse or is_raw):
                await relay_stream(send, receive, resp, rec, stream, raw=not is_sse)
                return Reply(200, None, time.perf_counter() - t_up, resp.content_type)
            return await _relay_whole(send, resp, rec, timeout_s, t_up)
        finally:
            if resp.content.at_eof():
                resp.release()
            else:
                resp.close()  # a stream cut short: this connection cannot be reused


async def _relay_whole(
    send: Send, resp: aiohttp.ClientResponse, rec: LogRecord, timeout_s: float, t_up: float
) -> Reply:
    """Read the provider's whole answer, then send it on."""
    try:
        body = await resp.read()
    except (TimeoutError, aiohttp.ServerTimeoutError):
        return await _timed_out(send, rec, timeout_s, t_up)
    except aiohttp.ClientError as err:
        return await _client_error(send, rec, "upstream_error", err, t_up)
    up_s = time.perf_counter() - t_up
    hdrs = response_headers(list(resp.headers.items()), rec["request_id"])
    hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": resp.status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})
    rec["status_code"] = resp.status
    if resp.status >= 400:
        rec["status"] = "error"
    return Reply(resp.status, body, up_s, resp.content_type)


async def _timed_out(send: Send, rec: LogRecord, timeout_s: float, t_up: float) -> Reply:
    message = f"provider {rec['provider']} did not answer within {timeout_s}s"
    status = await _upstream_failed(send, rec, 504, "timeout", message)
    return Reply(status, None, time.perf_counter() - t_up, "")


async def _client_error(send: Send, rec: LogRecord, etype: str, err: Exception, t_up: float) -> Reply:
    message = f"provider {rec['provider']}: {type(err).__name__}: {err}"
    status = await _upstream_failed(send, rec, 502, etype, message)
    return Reply(status, None, time.perf_counter() - t_up, "")


async def _upstream_failed(send: Send, rec: LogRecord, status: int, etype: str, message: str) -> int:
    set_error(rec, status, etype, message)
    hdrs = [*JSON_HEADERS, (b"x-request-id", rec["request_id"].encode())]
    return await send_whole(send, status, error_body(status, message, etype), hdrs)
