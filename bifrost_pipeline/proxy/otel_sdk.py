"""The OpenTelemetry SDK side of ``otel_export``: imported only when ``otel.enabled``.

- spans: a TracerProvider whose BatchSpanProcessor counts what it drops (the SDK's drops silently when its
  queue is full) and whose exporter counts what the collector refused;
- metrics: a PeriodicExportingMetricReader over the proxy's Prometheus registry. The OpenTelemetry Python
  SDK has no Prometheus-to-OTel bridge (the Go contrib one has), and mirroring every metric as an OTel
  instrument would double the work on each request; instead, each tick reads the registry (what /metrics
  serves) and hands it to the official OTLP metric exporter as cumulative sums, gauges and histograms.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from bifrost_pipeline.config.otel import OtelConfig

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .metrics import Metrics
    from .record import LogRecord

log = logging.getLogger("bifrost_pipeline.proxy.otel")

SCOPE = "bifrost_pipeline.proxy"  # the instrumentation scope of the proxy's spans and metrics


def _ns(ts: str) -> int:
    """Nanoseconds since the epoch of a record timestamp (RFC 3339, UTC, millisecond precision)."""
    return round(datetime.fromisoformat(ts).timestamp() * 1000) * 1_000_000


# --- spans ------------------------------------------------------------------------------------------------


class CountingSpanExporter(SpanExporter):
    """The OTLP span exporter, counting spans exported and spans lost to a failed export (after its retries)."""

    def __init__(self, inner: SpanExporter, metrics: Metrics):
        self.inner = inner
        self.metrics = metrics

    def export(self, spans) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            log.exception("OTLP span export failed")
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.metrics.otel_spans_exported.inc(len(spans))
        else:
            self.metrics.otel_export_failures.labels("traces").inc()
            self.metrics.otel_spans_dropped.labels("export_failed").inc(len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """BatchSpanProcessor counting the spans it drops when its queue is full.

    The SDK's processor drops the oldest span of a full queue with no count anyone can read; the queue is
    its (private) deque, checked before each span is added. tests/proxy/test_otel_export.py overflows the
    queue, so an SDK that moves it fails a test instead of counting nothing.
    """

    def __init__(self, exporter: SpanExporter, metrics: Metrics, *, max_queue_size: int, **kwargs: Any):
        super().__init__(exporter, max_queue_size=max_queue_size, **kwargs)
        self._max_queue = max_queue_size
        self._dropped = metrics.otel_spans_dropped.labels("queue_full")

    def queued(self) -> int:
        return len(self._batch_processor._queue)

    def on_end(self, span) -> None:
        if self.queued() >= self._max_queue:
            self._dropped.inc()
        super().on_end(span)

    def shutdown_within(self, timeout_millis: int) -> None:
        """Send what is queued, for at most ``timeout_millis`` (the SDK's shutdown() waits up to 30 s)."""
        self._batch_processor.shutdown(timeout_millis=timeout_millis)


def _span_exporter(cfg: OtelConfig, args: dict[str, Any]) -> SpanExporter:
    if cfg.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(**args)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(**args)


def tracer(
    cfg: OtelConfig, resource, metrics: Metrics, args: dict[str, Any], max_attributes: int
) -> tuple[Any, CountingBatchSpanProcessor]:
    """A tracer whose spans go to the collector in batches; every span is kept (no sampling: one span per
    request, whatever the caller's traceparent flags say)."""
    provider = TracerProvider(
        resource=resource, sampler=ALWAYS_ON, span_limits=SpanLimits(max_span_attributes=max_attributes)
    )
    processor = CountingBatchSpanProcessor(
        CountingSpanExporter(_span_exporter(cfg, args), metrics),
        metrics,
        max_queue_size=cfg.traces.queue_size,
        max_export_batch_size=cfg.traces.batch_size,
        schedule_delay_millis=cfg.traces.delay_s * 1000,
    )
    provider.add_span_processor(processor)
    return provider.get_tracer(SCOPE), processor


def _parent(rec: LogRecord):
    """The caller's span (the request's traceparent) as the parent context, else None (a new trace)."""
    trace_id, span_id = rec.get("trace_id"), rec.get("span_id")
    if not trace_id or not span_id:
        return None
    ctx = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def emit(tracer: Any, rec: LogRecord, attributes: dict[str, Any]) -> None:
    """Start and end the span of one finished record at the record's own times: the processor queues it."""
    start = _ns(rec["timestamp"])
    end = _ns(rec["ended_at"]) if rec.get("ended_at") else start + rec["latency_ms"] * 1_000_000
    span = tracer.start_span(
        f"{attributes['gen_ai.operation.name']} {rec['model']}",
        context=_parent(rec),
        kind=SpanKind.CLIENT,
        attributes=attributes,
        start_time=start,
    )
    if rec["status"] != "success":
        span.set_status(Status(StatusCode.ERROR, rec.get("error_message")))
    span.end(end_time=max(start, end))


# --- metrics ----------------------------------------------------------------------------------------------


class CountingMetricExporter(MetricExporter):
    """The OTLP metric exporter, counting failed pushes."""

    def __init__(self, inner: MetricExporter, metrics: Metrics):
        super().__init__(preferred_temporality=inner._preferred_temporality)
        self.inner = inner
        self.metrics = metrics

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            log.exception("OTLP metric export failed")
            result = MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            self.metrics.otel_export_failures.labels("metrics").inc()
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class PrometheusBridgeReader(PeriodicExportingMetricReader):
    """A periodic reader whose collection is the proxy's Prometheus registry, not an OTel MeterProvider."""

    def __init__(self, exporter: MetricExporter, registry: CollectorRegistry, resource, interval_s: float):
        self._registry = registry
        self._resource = resource
        self._start_ns = time.time_ns()
        super().__init__(exporter, export_interval_millis=interval_s * 1000)

    def collect(self, timeout_millis: float = 10_000) -> None:
        data = registry_metrics(self._registry, self._resource, self._start_ns)
        self._receive_metrics(data, timeout_millis=timeout_millis)


def metric_reader(cfg: OtelConfig, resource, metrics: Metrics, args: dict[str, Any]) -> PrometheusBridgeReader:
    if cfg.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        inner: MetricExporter = Grpc(**args)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

        inner = Http(**args)
    exporter = CountingMetricExporter(inner, metrics)
    return PrometheusBridgeReader(exporter, metrics.registry, resource, cfg.metrics.interval_s)


def registry_metrics(registry: CollectorRegistry, resource, start_ns: int) -> MetricsData:
    """One reading of a Prometheus registry as OTLP metrics: counters as cumulative monotonic sums (named
    without ``_total``, which Prometheus-side exporters add back), gauges as gauges, histograms with their
    buckets made per-bucket (Prometheus's are cumulative). A series' ``_created`` sample is its start time."""
    now = time.time_ns()
    out = []
    for family in registry.collect():
        if family.type == "counter":
            points = _counter_points(family.samples, start_ns, now)
            data: Any = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True)
        elif family.type == "gauge":
            data = Gauge([NumberDataPoint(s.labels, start_ns, now, s.value) for s in family.samples])
        elif family.type == "histogram":
            data = Histogram(_histogram_points(family.samples, start_ns, now), AggregationTemporality.CUMULATIVE)
        else:
            continue
        if data.data_points:
            out.append(Metric(family.name, family.documentation, "", data))
    scope = ScopeMetrics(InstrumentationScope(SCOPE), out, None)
    return MetricsData([ResourceMetrics(resource, [scope], None)])


def _created(samples, start_ns: int) -> dict[tuple, int]:
    return {
        tuple(sorted(s.labels.items())): int(s.value * 1e9) for s in samples if s.name.endswith("_created")
    } or {}


def _counter_points(samples, start_ns: int, now: int) -> list[NumberDataPoint]:
    created = _created(samples, start_ns)
    return [
        NumberDataPoint(s.labels, created.get(tuple(sorted(s.labels.items())), start_ns), now, s.value)
        for s in samples
        if s.name.endswith("_total")
    ]


def _histogram_points(samples, start_ns: int, now: int) -> list[HistogramDataPoint]:
    created = _created(samples, start_ns)
    series: dict[tuple, dict[str, Any]] = {}
    for s in samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        one = series.setdefault(tuple(sorted(labels.items())), {"labels": labels, "buckets": []})
        if s.name.endswith("_bucket"):
            one["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_sum"):
            one["sum"] = s.value
        elif s.name.endswith("_count"):
            one["count"] = s.value
    points = []
    for key, one in series.items():
        buckets = sorted(one["buckets"])
        bounds = [le for le, _ in buckets if le != float("inf")]
        cumulative = [int(c) for _, c in buckets]
        counts = [c - p for c, p in zip(cumulative, [0, *cumulative[:-1]], strict=True)]
        points.append(
            HistogramDataPoint(
                one["labels"], created.get(key, start_ns), now, int(one.get("count", 0)), one.get("sum", 0.0),
                counts, bounds, None, None,  # Prometheus keeps no min or max
            )
        )
    return points
