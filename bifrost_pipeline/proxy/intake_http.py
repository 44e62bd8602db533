"""The intake endpoints over HTTP: ``POST /v1/logs`` (canonical records) and ``POST /v1/traces`` (OTLP).

The checking and converting is in ``intake``; here are the bounded body, the answers and the metrics. A batch
is landed by the landing writer's group commit (fsynced into its rotating segments) before the answer, all or
none: a refusal by the disk is a retryable 503. The records count as landed when their segment is published.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from bifrost_pipeline.config import AppConfig

from . import intake, otlp
from .asgi import Receive, Scope, Send, error_body, header, read_body, send_whole
from .metrics import Metrics
from .pricing import Pricing
from .writer import LandingWriter

log = logging.getLogger("bifrost_pipeline.proxy")


class IntakeEndpoints:
    def __init__(self, app: AppConfig, *, writer: LandingWriter, metrics: Metrics, pricing: Pricing):
        self.proxy = app.proxy
        self.content = not app.client.disable_content_logging
        self.customer_header = self.proxy.customer_header.lower().encode()
        self.writer = writer
        self.metrics = metrics
        self.pricing = pricing

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> bytes | int:
        """The batch, or the status of the answer already sent (wrong method, too large)."""
        if scope["method"] != "POST":
            return await send_whole(send, 405, error_body(405, "use POST", "invalid_request_error"))
        limit = self.proxy.max_intake_bytes
        body = await read_body(receive, limit)
        if body is None:
            message = f"the body is larger than proxy.max_intake_bytes ({limit})"
            return await send_whole(send, 413, error_body(413, message, "invalid_request_error"))
        return body

    def _landing_refused(self, err: OSError) -> str:
        """Count and log an intake batch the disk refused; the message for the sender (who sends it again)."""
        self.metrics.landing_errors.inc()
        log.error("intake batch not landed: the landing zone refused it (%s)", err)
        return f"the landing zone refused the batch ({err}); none of it was landed: send it again"

    async def logs(self, scope: Scope, receive: Receive, send: Send) -> int:
        body = await self._body(scope, receive, send)
        if isinstance(body, int):
            return body
        try:
            groups, report = await asyncio.to_thread(intake.process_batch, body, strip_content=not self.content)
        except ValueError as err:
            return await send_whole(send, 400, error_body(400, str(err), "invalid_request_error"))
        if groups:
            try:
                await self.writer.commit(groups)
            except OSError as err:
                message = self._landing_refused(err)
                return await send_whole(send, 503, error_body(503, message, "landing_unavailable"))
            self.metrics.records_landed.labels("logs").inc(report["accepted"])
        return await send_whole(send, 200, orjson.dumps(report))

    def _spans(self, body: bytes, ctype: str, encoding: str, customer: str) -> tuple[intake.SpanBatch, bool]:
        """The records of a trace export; raises ValueError on a body that is not one, all or none (its spans
        are decoded as they are converted)."""
        spans, is_json = otlp.decode(body, ctype, encoding)
        return intake.convert_spans(spans, customer_id=customer, content=self.content, pricing=self.pricing), is_json

    async def traces(self, scope: Scope, receive: Receive, send: Send) -> int:
        body = await self._body(scope, receive, send)
        if isinstance(body, int):
            return body
        ctype = header(scope, b"content-type").lower()
        customer = header(scope, self.customer_header) or self.proxy.default_customer
        try:
            batch, is_json = await asyncio.to_thread(self._spans, body, ctype, header(scope, b"content-encoding"), customer)
        except (ValueError, OSError) as err:
            return await send_whole(send, 400, orjson.dumps({"code": 3, "message": str(err)[:500]}))
        if batch.groups:
            try:
                await self.writer.commit(batch.groups)
            except OSError as err:
                # OTLP/HTTP: 503 is a retryable answer; the body is a google.rpc.Status (14: UNAVAILABLE).
                message = self._landing_refused(err)
                return await send_whole(send, 503, orjson.dumps({"code": 14, "message": message}))
        if batch.landed:
            self.metrics.records_landed.labels("traces").inc(batch.landed)
        if batch.skipped:
            log.debug("/v1/traces: %d span(s) without gen_ai attributes skipped", batch.skipped)
        answer = otlp.encode_response(is_json, batch.rejected, "; ".join(batch.reasons)[:2000])
        ctype_out = b"application/json" if is_json else b"application/x-protobuf"
        return await send_whole(send, 200, answer, [(b"content-type", ctype_out)])
