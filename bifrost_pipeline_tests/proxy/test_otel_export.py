"""OTLP out (config ``otel``): spans and metrics from real proxy processes, received by this project's own
``/v1/traces`` intake (OTLP/HTTP) and by an in-process gRPC receiver built on the official OTLP protos; a
dead or hanging collector never slows a request, and what cannot leave is counted."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from concurrent import futures

import grpc
import httpx
import orjson
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bifrost_pipeline.config.otel import OtelConfig
from bifrost_pipeline.proxy import otlp_wire
from bifrost_pipeline.proxy.metrics import Metrics
from bifrost_pipeline.proxy.otel_export import OtelExport, span_attributes
from bifrost_pipeline.proxy.record import ResponseIds
from bifrost_pipeline_tests.emulators.servers import free_port
from bifrost_pipeline_tests.proxy.conftest import landed, start_proxy, wait_for, write_config

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def _chat_body(**extra) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}], **extra}


PARAMS = {
    "temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "seed": -7, "stop": ["END"], "n": 1,
    "presence_penalty": -0.5, "frequency_penalty": 0.25,
}

# Fields that cannot come back equal through a span: metadata (the intake builds its own: service.name,
# trace and span ids; the proxy's logging headers travel as bifrost.metadata.* attributes), and the
# content, which travels in the conventions' shape (role + parts), not OpenAI's. Latency and times do come
# back exact: the span carries the record's own times (millisecond precision) and bifrost.latency_ms.
NOT_ROUND_TRIPPED = {"metadata", "input_content", "output_content"}


def _metrics_text(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=5).text


def _sample(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- the intake round trip (OTLP/HTTP protobuf into this project's own /v1/traces) --------------------------


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory, mock_upstream, log_dir):
    base = tmp_path_factory.mktemp("otel-rt")
    intake_cfg = write_config(base / "intake.json", base / "landing-intake", mock_upstream.url)
    intake = start_proxy("otel-intake", intake_cfg, log_dir)
    otel = {"enabled": True, "endpoint": intake.url, "capture_content": True, "traces": {"delay_s": 0.1}}
    sender_cfg = write_config(base / "sender.json", base / "landing-sender", mock_upstream.url, extra={"otel": otel})
    sender = start_proxy("otel-sender", sender_cfg, log_dir)
    yield {"sender": sender, "intake": intake, "base": base}
    sender.stop()
    intake.stop()


def _requests(url: str) -> list[str]:
    """Requests of every kind through the sending proxy; returns their request ids."""
    headers = {"authorization": "Bearer sk-client", "x-customer": "tenant-rt", "x-tenant-id": "t-1"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
        responses = [
            c.post("/v1/chat/completions", json=_chat_body(**PARAMS, tools=[WEATHER_TOOL]),
                   headers={"traceparent": TRACEPARENT}),
            c.post("/v1/chat/completions", json=_chat_body(stream=True, temperature=1)),
            c.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"}),
            c.post("/v1/chat/completions", json=_chat_body(model="down/gpt-4o-mini")),
            c.post("/v1/chat/completions", content=b"{not json"),  # refused by the proxy itself
        ]
    assert [r.status_code for r in responses] == [200, 200, 200, 502, 400]
    return [r.headers["x-request-id"] for r in responses]


def test_spans_sent_to_our_own_intake_land_as_the_proxys_records(round_trip):
    ids = _requests(round_trip["sender"].url)
    base = round_trip["base"]

    def both():
        mine = {r["request_id"]: r for r in landed(base / "landing-sender")}
        back = {r["request_id"]: r for r in landed(base / "landing-intake")}
        return (mine, back) if all(i in mine and i in back for i in ids) else None

    mine, back = wait_for(both, 20, "every record, landed by the sender and by the intake")
    for request_id in ids:
        sent, got = mine[request_id], back[request_id]
        # without a traceparent the span starts a new trace: its id is in the intake's record only
        allowed = NOT_ROUND_TRIPPED | ({"trace_id"} if sent["trace_id"] is None else set())
        # a record made of a span leaves out the fields that are null
        assert None not in got.values()
        differ = {k for k in set(sent) | set(got) if sent.get(k) != got.get(k)}
        assert differ <= allowed, {k: (sent.get(k), got.get(k)) for k in differ - allowed}

    chat = back[ids[0]]
    assert (chat["trace_id"], chat["span_id"]) == (TRACE_ID, CALLER_SPAN)
    assert {k: chat[k] for k in PARAMS} == {**PARAMS, "temperature": 0.2, "seed": -7}
    assert chat["tool_names"] == ["get_weather"] and chat["tool_call_names"] == ["get_weather"]
    assert chat["tool_calls"] == mine[ids[0]]["tool_calls"] and chat["tool_calls"]
    # the content arrives in the conventions' shape
    assert orjson.loads(chat["input_content"]) == [{"role": "user", "parts": [{"type": "text", "content": "Say hello."}]}]
    assert orjson.loads(chat["output_content"])[0]["parts"][-1]["type"] == "tool_call"
    # no traceparent: the span starts a trace of its own, and the record says no caller span
    assert back[ids[1]].get("span_id") is None and back[ids[1]]["trace_id"] and mine[ids[1]]["trace_id"] is None
    assert back[ids[3]]["status"] == "error" and back[ids[3]]["error_type"] == mine[ids[3]]["error_type"]
    text = _metrics_text(round_trip["sender"].url)
    assert _sample(text, "bifrost_proxy_otel_spans_exported_total") >= len(ids)
    assert _sample(text, "bifrost_proxy_otel_spans_dropped_total") == 0


# --- the in-process gRPC receiver ---------------------------------------------------------------------------


class Receiver(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    """An OTLP/gRPC collector on 127.0.0.1 that keeps what it is sent, with each call's metadata."""

    def __init__(self):
        self.spans: list = []  # (resource attributes, span)
        self.metrics: list = []  # (resource attributes, metric)
        self.metadata: list[dict] = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (the generated servicer's name)
        with self.lock:
            self.metadata.append(dict(context.invocation_metadata()))
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                for rs in request.resource_spans:
                    res = {kv.key: otlp_wire.any_value(kv.value) for kv in rs.resource.attributes}
                    self.spans += [(res, s) for ss in rs.scope_spans for s in ss.spans]
                return trace_service_pb2.ExportTraceServiceResponse()
            for rm in request.resource_metrics:
                res = {kv.key: otlp_wire.any_value(kv.value) for kv in rm.resource.attributes}
                self.metrics += [(res, m) for sm in rm.scope_metrics for m in sm.metrics]
            return metrics_service_pb2.ExportMetricsServiceResponse()


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: Receiver):
        self.receiver = receiver

    def Export(self, request, context):  # noqa: N802
        return self.receiver.Export(request, context)


@pytest.fixture(scope="module")
def grpc_receiver():
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsServicer(receiver), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, port
    server.stop(0)


def _grpc_proxy(tmp_path_factory, mock_upstream, log_dir, port: int, name: str, capture: bool):
    base = tmp_path_factory.mktemp(name)
    otel = {
        "enabled": True, "protocol": "grpc", "endpoint": f"http://127.0.0.1:{port}", "capture_content": capture,
        "headers": {"x-honeycomb-team": "${TEST_OTEL_KEY}"}, "traces": {"delay_s": 0.1},
        "metrics": {"enabled": True, "interval_s": 1}, "service_name": name,
    }
    cfg = write_config(base / "c.json", base / "landing", mock_upstream.url, extra={"otel": otel})
    env = {"TEST_OTEL_KEY": "hc-secret-123", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging,team=llm"}
    return start_proxy(name, cfg, log_dir, env=env)


def _spans_of(receiver: Receiver, service: str, request_id: str):
    def find():
        with receiver.lock:
            return [(r, s) for r, s in receiver.spans
                    if r.get("service.name") == service
                    and {kv.key: otlp_wire.any_value(kv.value) for kv in s.attributes}.get("bifrost.request_id") == request_id]
    return wait_for(find, 20, f"the span of {request_id} at the gRPC receiver")


def test_grpc_export_spans_metrics_headers_resource_and_parent(tmp_path_factory, mock_upstream, log_dir, grpc_receiver):
    receiver, port = grpc_receiver
    proxy = _grpc_proxy(tmp_path_factory, mock_upstream, log_dir, port, "otel-grpc", capture=True)
    try:
        with httpx.Client(base_url=proxy.url, timeout=30) as c:
            ok = c.post("/v1/chat/completions", json=_chat_body(**PARAMS), headers={"traceparent": TRACEPARENT})
            streamed = c.post("/v1/chat/completions", json=_chat_body(stream=True))
        [(resource, span)] = _spans_of(receiver, "otel-grpc", ok.headers["x-request-id"])
        attrs = {kv.key: otlp_wire.any_value(kv.value) for kv in span.attributes}
        assert (span.trace_id.hex(), span.parent_span_id.hex()) == (TRACE_ID, CALLER_SPAN)
        assert span.kind == span.SPAN_KIND_CLIENT and span.name == "chat gpt-4o-mini"
        assert {k: attrs[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")} == {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}
        assert attrs["gen_ai.request.temperature"] == 0.2 and attrs["gen_ai.request.seed"] == -7
        assert attrs["gen_ai.request.stop_sequences"] == ["END"] and attrs["gen_ai.request.max_tokens"] == 64
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.response.finish_reasons"] == ["stop"]
        assert attrs["gen_ai.response.id"].startswith("chatcmpl") and attrs["http.response.status_code"] == 200
        assert attrs["server.address"] == "127.0.0.1" and "gen_ai.input.messages" in attrs
        assert (span.end_time_unix_nano - span.start_time_unix_nano) // 1_000_000 >= 0
        assert resource["deployment.environment"] == "staging" and resource["team"] == "llm"
        assert resource["service.name"] == "otel-grpc"
        with receiver.lock:
            assert any(m.get("x-honeycomb-team") == "hc-secret-123" for m in receiver.metadata)
        # one span for the whole stream, with its response id from the chunks
        [(_, stream_span)] = _spans_of(receiver, "otel-grpc", streamed.headers["x-request-id"])
        assert len(stream_span.parent_span_id) == 0  # no traceparent: a root span
        assert {kv.key: otlp_wire.any_value(kv.value) for kv in stream_span.attributes}["gen_ai.response.id"]

        def pushed():
            with receiver.lock:
                return {m.name: m for r, m in receiver.metrics if r.get("service.name") == "otel-grpc"}

        names = wait_for(lambda: (p := pushed()) and "bifrost_upstream_requests" in p and p, 20, "pushed metrics")
        assert {"http_requests", "bifrost_upstream_latency_seconds", "bifrost_proxy_otel_spans_dropped"} <= set(names)
        latency = names["bifrost_upstream_latency_seconds"].histogram.data_points[0]
        assert latency.count >= 1 and sum(latency.bucket_counts) == latency.count
        assert len(latency.bucket_counts) == len(latency.explicit_bounds) + 1
    finally:
        proxy.stop()


def test_content_is_not_sent_unless_asked(tmp_path_factory, mock_upstream, log_dir, grpc_receiver):
    receiver, port = grpc_receiver
    proxy = _grpc_proxy(tmp_path_factory, mock_upstream, log_dir, port, "otel-grpc-nocontent", capture=False)
    try:
        r = httpx.post(proxy.url + "/v1/chat/completions", json=_chat_body(tools=[WEATHER_TOOL]), timeout=30)
        [(_, span)] = _spans_of(receiver, "otel-grpc-nocontent", r.headers["x-request-id"])
        attrs = {kv.key: otlp_wire.any_value(kv.value) for kv in span.attributes}
        assert not {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.definitions"} & set(attrs)
        assert attrs["bifrost.tool_call_names"] == ["get_weather"]  # names are not content
    finally:
        proxy.stop()


# --- a dead or hanging collector ----------------------------------------------------------------------------


def _hanging_collector() -> tuple[socket.socket, int]:
    """A port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, sock.getsockname()[1]


def _latencies(url: str, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=url, timeout=30) as c:
        for _ in range(n):
            t = time.perf_counter()
            assert c.post("/v1/chat/completions", json=_chat_body()).status_code == 200
            out.append(time.perf_counter() - t)
    return out


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def test_a_hanging_collector_slows_no_request_and_drops_are_counted(tmp_path_factory, mock_upstream, log_dir):
    sock, port = _hanging_collector()
    base = tmp_path_factory.mktemp("otel-dead")
    otel = {"enabled": True, "endpoint": f"http://127.0.0.1:{port}", "timeout_s": 30,
            "traces": {"queue_size": 4, "batch_size": 2, "delay_s": 0.05}}
    with_otel = start_proxy("otel-hang", write_config(base / "a.json", base / "la", mock_upstream.url, extra={"otel": otel}), log_dir)
    without = start_proxy("otel-off", write_config(base / "b.json", base / "lb", mock_upstream.url), log_dir)
    try:
        _latencies(with_otel.url, 5), _latencies(without.url, 5)  # warm up both
        n = 60
        on, off = _latencies(with_otel.url, n), _latencies(without.url, n)
        # No request waits on the export (one would wait timeout_s = 30 s); the bound is generous for a
        # shared machine.
        assert max(on) < 5
        assert _p99(on) < _p99(off) + 0.05, (statistics.median(on), _p99(on), statistics.median(off), _p99(off))
        text = _metrics_text(with_otel.url)
        assert _sample(text, 'bifrost_proxy_otel_spans_dropped_total{reason="queue_full"}') >= n - 10
        assert _sample(text, "bifrost_proxy_otel_spans_exported_total") == 0
    finally:
        with_otel.stop()
        without.stop()
        sock.close()


def test_a_dead_collector_never_blocks_the_hook_and_failures_are_counted():
    """In process: the hook only queues; a port nobody listens on fails exports, counted, off the request."""
    metrics = Metrics([])
    cfg = OtelConfig(enabled=True, endpoint=f"http://127.0.0.1:{free_port()}", timeout_s=2,
                     traces={"queue_size": 8, "batch_size": 4, "delay_s": 0.05})
    export = OtelExport(cfg, metrics, servers={}, keep_content=True, max_metadata=64)
    export.start()
    rec = _record()
    try:
        t = time.perf_counter()
        for _ in range(500):
            export.record(rec)
        per_call = (time.perf_counter() - t) / 500
        assert per_call < 0.002, per_call  # building and queueing a span; no network on this thread
        dropped = metrics.otel_spans_dropped.labels("queue_full")._value.get()
        assert dropped >= 500 - 8 - 4 * 10  # at most the queue and a few batches were taken
        wait_for(lambda: metrics.otel_export_failures.labels("traces")._value.get() > 0, 20, "a failed export")
        assert metrics.otel_spans_dropped.labels("export_failed")._value.get() > 0
    finally:
        export.cfg = cfg.model_copy(update={"shutdown_timeout_s": 0.5})
        export.shutdown()


# --- the mapping, without a process -------------------------------------------------------------------------


def _record(**over) -> dict:
    from datetime import UTC, datetime

    from bifrost_pipeline.proxy.record import base_record, iso, set_error

    rec = base_record(
        timestamp=iso(datetime(2026, 1, 1, tzinfo=UTC)), request_id="r-1", customer_id="c", provider="openai",
        model="gpt-4o-mini", endpoint="/v1/chat/completions", method="POST", request_type="chat", stream=False,
        metadata={"tenant": "a"},
    )
    rec.update(ended_at="2026-01-01T00:00:00.250Z", latency_ms=250, input_tokens=3, output_tokens=2, cost_usd=1e-6,
               temperature=0.5, stop=["x"], input_content='[{"role":"user","content":"hi"}]')
    if over.pop("error", False):
        set_error(rec, 429, "rate_limit_error", "slow down")
    rec.update(over)
    return rec


def test_span_attributes_follow_the_genai_conventions():
    a = span_attributes(_record(), ResponseIds("chatcmpl-1", "gpt-4o-mini-2024"), ("api.openai.com", 443), content=False)
    assert a["gen_ai.usage.cost"] == 1e-6 and a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.request.stop_sequences"] == ["x"] and a["bifrost.metadata.tenant"] == "a"
    assert (a["gen_ai.response.id"], a["gen_ai.response.model"]) == ("chatcmpl-1", "gpt-4o-mini-2024")
    assert (a["server.address"], a["server.port"]) == ("api.openai.com", 443)
    assert "error.type" not in a and "gen_ai.input.messages" not in a
    failed = span_attributes(_record(error=True), None, None, content=True)
    assert failed["error.type"] == "rate_limit_error" and failed["http.response.status_code"] == 429
    assert orjson.loads(failed["gen_ai.input.messages"]) == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]


def test_the_sdk_is_not_imported_when_otel_is_off():
    import subprocess
    import sys

    code = (
        "import sys; from bifrost_pipeline.config import AppConfig; from bifrost_pipeline.proxy.app import ProxyApp;"
        "ProxyApp(AppConfig(landing={'path': sys.argv[1]}));"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk') or m.startswith('grpc')))"
    )
    out = subprocess.run([sys.executable, "-c", code, "/tmp/otel-off-landing"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
