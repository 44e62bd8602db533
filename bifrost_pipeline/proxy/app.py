"""The ingestion proxy as an ASGI application: dispatch, lifespan and the health endpoints.

The proxied endpoints are served by ``proxied.Forwarder`` (forwarding in ``forward``, streams in
``streaming``, the record in ``record``); ``/v1/logs`` and ``/v1/traces`` by ``intake_http``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from bifrost_pipeline.config import AppConfig

from .asgi import Metered, Receive, Scope, Send, error_body, send_whole
from .intake_http import IntakeEndpoints
from .metrics import PROM_HEADER_PREFIX, Metrics
from .otel_export import OtelExport, servers_of
from .pricing import Pricing
from .protocol import ENDPOINTS, video_call
from .proxied import Forwarder
from .record import RecordRules
from .upstream import Router, Target
from .writer import LandingWriter

log = logging.getLogger("bifrost_pipeline.proxy")

MOCK_PREFIX = "/_mock"


class ProxyApp:
    def __init__(self, app: AppConfig, *, mock_upstream: bool = False):
        self.config = app
        self.metrics = Metrics(app.client.prometheus_labels, app.client.prometheus_max_label_values)
        self.pricing = Pricing(app.proxy.pricing)
        self.mock = None
        if mock_upstream:
            from .mock import MockUpstream

            self.mock = MockUpstream(prefix=MOCK_PREFIX)
        self.router = Router(app.providers)
        self.writer = self._landing_writer(app)
        rules = RecordRules(self.pricing, keep_content=not app.client.disable_content_logging)
        self.otel = self._otel_export(app)
        self.forwarder = Forwarder(
            app, router=self.router, writer=self.writer, metrics=self.metrics, rules=rules, otel=self.otel
        )
        self.intake = IntakeEndpoints(app, writer=self.writer, metrics=self.metrics, pricing=self.pricing)
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.routes = {
            "/health": self._health,
            "/health/live": self._live,
            "/metrics": self._metrics,
            "/v1/logs": self.intake.logs,
            "/v1/traces": self.intake.traces,
            "/v1/models": self._models,
        }

    def _landing_writer(self, app: AppConfig) -> LandingWriter:
        return LandingWriter(
            app.landing_dir,
            queue_size=app.proxy.queue_size,
            segment_max_bytes=app.proxy.segment_max_bytes,
            segment_max_age_s=app.proxy.segment_max_age_s,
            flush_interval_s=app.proxy.flush_interval_s,
            on_landed=self.metrics.records_landed.labels("proxy").inc,
            on_wait=self.metrics.queue_waits.inc,
            on_error=self.metrics.landing_errors.inc,
            on_lost=self.metrics.records_lost.inc,
        )

    def _otel_export(self, app: AppConfig) -> OtelExport | None:
        if not app.otel.enabled:
            return None
        return OtelExport(
            app.otel,
            self.metrics,
            servers=servers_of(app.providers),
            keep_content=not app.client.disable_content_logging,
            max_metadata=app.client.max_logging_headers,
        )

    def use_mock_at(self, base_url: str) -> None:
        """Send every request to the built-in mock served by this process at ``base_url`` (…/_mock/v1)."""
        self.router.mock = Target("mock", base_url, None, 60.0)

    # --- ASGI -----------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if self.mock is not None and path.startswith(MOCK_PREFIX + "/"):
                await self.mock(scope, receive, send)
                return
            metered = Metered(send, receive)
            if path in ENDPOINTS:
                await self._proxied(scope, metered, path, path)
                return
            video = video_call(path)
            if video is not None:
                await self._proxied(scope, metered, path, video[0])
                return
            t0 = time.perf_counter()
            handler = self.routes.get(path)
            if handler is None:
                status = await send_whole(metered, 404, error_body(404, f"no route {path}", "not_found_error"))
                label = "unmatched"
            else:
                status = await handler(scope, metered.receive, metered)
                label = path
            self.metrics.observe_http(
                label, scope["method"], status, time.perf_counter() - t0, self._custom(scope), metered
            )
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _proxied(self, scope: Scope, metered: Metered, path: str, label: str) -> None:
        """A proxied request, counted in flight so that shutdown can wait for it. ``label`` is its path in
        the metrics (a video's calls by their template, so that ids make no series)."""
        receive, send = metered.receive, metered
        t0 = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        custom = self._custom(scope, headers)
        self.inflight += 1
        self._idle.clear()
        status = 500
        try:
            status = await self.forwarder.handle(scope, receive, send, path, headers, t0, custom)
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.set()
            self.metrics.observe_http(label, scope["method"], status, time.perf_counter() - t0, custom, metered)

    def _custom(self, scope: Scope, headers: dict[str, str] | None = None) -> tuple[str, ...]:
        """The request's values of the configured Prometheus labels (its ``x-bf-prom-*`` headers)."""
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

    # --- lifespan -------------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
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
        await self.forwarder.open()
        if self.otel is not None:
            self.otel.start()  # here, not in __init__: its threads must start in the (forked) worker
        recovered = self.writer.start(asyncio.get_running_loop())
        log.info("landing records in %s (%d segment(s) recovered)", self.writer.root, len(recovered))

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """After the server stopped taking requests: let in-flight ones end, then drain and publish."""
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            log.error("%d request(s) still running at shutdown", self.inflight)
        await self.forwarder.close()
        if self.otel is not None:
            await asyncio.to_thread(self.otel.shutdown)
        await self.writer.aclose()
        log.info(
            "landing writer closed: %d record(s) submitted, %d written",
            self.writer.submitted,
            self.writer.written,
        )

    # --- health and discovery -------------------------------------------------------------------------

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> int:
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
        return await send_whole(send, 200 if doc["status"] == "ok" else 503, orjson.dumps(doc))

    async def _live(self, scope: Scope, receive: Receive, send: Send) -> int:
        # For a liveness probe: 200 while the process serves, even when /health is 503 because the disk
        # refuses writes; restarting then would lose the records held in memory for the retry.
        return await send_whole(send, 200, b'{"status": "alive"}')

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> int:
        """The configured models, as OpenAI's model list (tools call it to fill their model pickers)."""
        data = []
        for name, model in sorted((p, m) for m, p in self.router.by_model.items()):
            data.append({"id": model, "object": "model", "created": 0, "owned_by": name})
        return await send_whole(send, 200, orjson.dumps({"object": "list", "data": data}))

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> int:
        body, ctype = self.metrics.render()
        return await send_whole(send, 200, body, [(b"content-type", ctype.encode())])
