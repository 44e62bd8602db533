#!/usr/bin/env python3
"""Record what real OpenTelemetry GenAI emitters send to ``/v1/traces`` (and ``/v1/logs``), byte for byte.

    python scripts/record_otel_fixtures.py                 # every emitter
    python scripts/record_otel_fixtures.py litellm         # one emitter (names: see EMITTERS)

Each emitter gets its own virtualenv under ``.emulators/otel-emitters/<name>`` built from the pinned
``scripts/otel-emitters/<name>.txt`` (the project's environment never needs these libraries). This script
then starts, on loopback only, a fake OpenAI upstream and an OTLP/HTTP receiver that keeps every request
body as it arrived, and runs each case in a child process of that virtualenv (this same file, ``--child``).
What the receiver got is written to ``bifrost_pipeline_tests/data/otlp/``: ``<emitter>--<case>.<n>.<kind>``
bodies plus a ``<emitter>--<case>.json`` sidecar (emitter, version, case, settings, one entry per body).

The driver uses the standard library only; the child imports the emitter libraries. Re-record after a
version bump in ``scripts/otel-emitters/`` and read the diff of the tests in
``bifrost_pipeline_tests/proxy/test_otlp_emitters.py``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import subprocess
import threading
import time
import venv
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "scripts" / "otel-emitters"
VENVS = ROOT / ".emulators" / "otel-emitters"
OUT = ROOT / "bifrost_pipeline_tests" / "data" / "otlp"

# What the fake upstream answers: distinct numbers per call kind, so a test that reads the wrong field fails.
CHAT_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 7,
    "total_tokens": 19,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 2},
}
STREAM_USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 6,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 3},
    "completion_tokens_details": {"reasoning_tokens": 1},
}
EMBEDDING_USAGE = {"prompt_tokens": 5, "total_tokens": 5}
RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"
MISSING_MODEL = "no-such-model"
ANSWER = "Hello from the fake upstream."
QUESTION = "Say hello."


@dataclass(frozen=True)
class Case:
    name: str
    call: str  # the child's function that makes the call(s)
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Emitter:
    package: str  # the distribution whose version the sidecar names
    setup: str  # the child's function that installs the emitter and returns its flush
    cases: tuple[Case, ...]
    env: dict[str, str] = field(default_factory=dict)


_CONTENT = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"}
EMITTERS: dict[str, Emitter] = {
    "openai-v2": Emitter(
        "opentelemetry-instrumentation-openai-v2",
        "setup_openai_v2",
        (
            Case("chat", "openai_chat"),
            Case("chat-stream", "openai_chat_stream"),
            Case("chat-content", "openai_chat", _CONTENT),
            Case("chat-stream-content", "openai_chat_stream", _CONTENT),
            Case("embedding", "openai_embedding"),
            Case("error-404", "openai_error"),
            # the same spans sent twice: once as protobuf and once as OTLP/JSON
            Case("chat-json", "openai_chat", {**_CONTENT, "RECORD_ALSO_JSON": "1"}),
        ),
    ),
    "openai-v2-legacy": Emitter(
        "opentelemetry-instrumentation-openai-v2",
        "setup_openai_v2_legacy",
        (
            Case("chat", "openai_chat"),
            Case("chat-content", "openai_chat", {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}),
        ),
    ),
    "litellm": Emitter(
        "litellm",
        "setup_litellm",
        (
            Case("acompletion", "litellm_acompletion"),
            Case("acompletion-stream", "litellm_acompletion_stream"),
            Case("aembedding", "litellm_aembedding"),
            Case("completion-error", "litellm_completion_error"),
        ),
        # the cost map ships inside the package; without this LiteLLM fetches it from the internet
        {"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    ),
    "traceloop": Emitter(
        "traceloop-sdk",
        "setup_traceloop",
        (Case("chat", "openai_chat"), Case("chat-stream", "openai_chat_stream")),
        {"TRACELOOP_TELEMETRY": "false", "TRACELOOP_TRACE_CONTENT": "true"},
    ),
}


# --- driver: loopback servers ---------------------------------------------------------------------------


def _chat_answer(req: dict) -> dict:
    return {
        "id": "chatcmpl-fixture-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": RESPONSE_MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
        ],
        "usage": CHAT_USAGE,
        "service_tier": "default",
    }


def _chat_chunks(req: dict) -> list[dict]:
    base = {"id": "chatcmpl-fixture-2", "object": "chat.completion.chunk", "created": 1_700_000_000}
    base["model"] = RESPONSE_MODEL
    words = ANSWER.split(" ")
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    for i, word in enumerate(words):
        text = word if i == 0 else " " + word
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (req.get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "choices": [], "usage": STREAM_USAGE})
    return chunks


def _embedding_answer(req: dict) -> dict:
    vector = [0.25, -0.5, 0.125]
    if req.get("encoding_format") == "base64":
        item: object = base64.b64encode(struct.pack("<3f", *vector)).decode()
    else:
        item = vector
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": item}],
        "model": "text-embedding-3-small",
        "usage": EMBEDDING_USAGE,
    }


class FakeOpenAI(BaseHTTPRequestHandler):
    """Just enough of the OpenAI API: chat (plain and SSE), embeddings, and a 404 for MISSING_MODEL."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _json(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        if req.get("model") == MISSING_MODEL:
            message = f"The model `{MISSING_MODEL}` does not exist or you do not have access to it."
            err = {"message": message, "type": "invalid_request_error", "param": None, "code": "model_not_found"}
            return self._json(404, {"error": err})
        if self.path.endswith("/embeddings"):
            return self._json(200, _embedding_answer(req))
        if not self.path.endswith("/chat/completions"):
            return self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
        if not req.get("stream"):
            return self._json(200, _chat_answer(req))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        for chunk in _chat_chunks(req):
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that keeps each traces/logs body exactly as sent (metrics are answered, not kept)."""

    protocol_version = "HTTP/1.1"
    received: list[dict] = []

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        ctype = self.headers.get("content-type", "")
        if self.path in ("/v1/traces", "/v1/logs"):
            self.received.append(
                {
                    "path": self.path,
                    "content_type": ctype,
                    "content_encoding": self.headers.get("content-encoding", ""),
                    "body": body,
                }
            )
        answer = b"{}" if "json" in ctype else b""
        self.send_response(200)
        self.send_header("content-type", "application/json" if "json" in ctype else "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# --- driver: environments and recording -----------------------------------------------------------------


def emitter_python(name: str) -> Path:
    """The emitter's own virtualenv, (re)built when its pinned requirements changed."""
    env_dir = VENVS / name
    python = env_dir / "bin" / "python"
    requirements = REQUIREMENTS / f"{name}.txt"
    stamp = env_dir / "requirements.txt"
    if python.exists() and stamp.exists() and stamp.read_text() == requirements.read_text():
        return python
    print(f"== {name}: building {env_dir} from {requirements.relative_to(ROOT)}", flush=True)
    venv.EnvBuilder(clear=True, with_pip=True).create(env_dir)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--pre", "-r", str(requirements)], check=True)
    stamp.write_text(requirements.read_text())
    return python


def _installed_version(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def _suffix(entry: dict) -> str:
    kind = "traces" if entry["path"] == "/v1/traces" else "logs"
    return f"{kind}.json" if "json" in entry["content_type"] else f"{kind}.pb"


def record_case(name: str, emitter: Emitter, case: Case, python: Path, upstream: str, otlp: str) -> dict:
    Receiver.received.clear()
    env = {**os.environ, **emitter.env, **case.env, "FAKE_UPSTREAM": upstream, "OTLP_RECEIVER": otlp}
    env.pop("PYTHONPATH", None)  # the child sees only its own virtualenv
    args = [str(python), __file__, "--child", emitter.setup, case.call]
    subprocess.run(args, check=True, env=env, cwd=ROOT, timeout=300)
    time.sleep(0.2)  # a last export still in flight when the child exited
    stem = f"{name}--{case.name}"
    for old in OUT.glob(f"{stem}.*"):
        old.unlink()
    bodies = []
    for i, entry in enumerate(Receiver.received):
        path = OUT / f"{stem}.{i}.{_suffix(entry)}"
        path.write_bytes(entry["body"])
        bodies.append({k: v for k, v in entry.items() if k != "body"} | {"file": path.name})
    if not any(b["path"] == "/v1/traces" for b in bodies):
        raise SystemExit(f"{stem}: the emitter sent no spans to /v1/traces")
    return {
        "emitter": emitter.package,
        "version": _installed_version(python, emitter.package),
        "requirements": f"scripts/otel-emitters/{name}.txt",
        "case": case.name,
        "settings": {**emitter.env, **case.env},
        "bodies": bodies,
    }


def record(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    upstream_server, upstream = _serve(FakeOpenAI)
    receiver, otlp = _serve(Receiver)
    try:
        for name in names:
            emitter = EMITTERS[name]
            python = emitter_python(name)
            for case in emitter.cases:
                sidecar = record_case(name, emitter, case, python, upstream, otlp)
                (OUT / f"{name}--{case.name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
                print(f"{name}--{case.name}: {len(sidecar['bodies'])} bodies ({sidecar['version']})", flush=True)
    finally:
        upstream_server.shutdown()
        receiver.shutdown()


# --- child: runs inside the emitter's virtualenv ----------------------------------------------------------


def _resource():
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": "otel-fixture-recorder", "deployment.environment": "fixtures"})


def _sdk(*, events: bool = False):
    """Global tracer and logger providers exporting OTLP/HTTP protobuf to the receiver; returns the flush."""
    from opentelemetry import _logs, trace
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    otlp = os.environ["OTLP_RECEIVER"]
    tracer_provider = TracerProvider(resource=_resource())
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp + "/v1/traces")))
    if os.environ.get("RECORD_ALSO_JSON"):
        from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter as JSONExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(JSONExporter(endpoint=otlp + "/v1/traces")))
    trace.set_tracer_provider(tracer_provider)
    logger_provider = LoggerProvider(resource=_resource())
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=otlp + "/v1/logs")))
    _logs.set_logger_provider(logger_provider)
    if events:  # the Events API of OpenTelemetry Python <= 1.3x, which the legacy instrumentation uses
        from opentelemetry._events import set_event_logger_provider
        from opentelemetry.sdk._events import EventLoggerProvider

        set_event_logger_provider(EventLoggerProvider(logger_provider))

    def flush() -> None:
        tracer_provider.shutdown()
        logger_provider.shutdown()

    return flush


def setup_openai_v2():
    flush = _sdk()
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    OpenAIInstrumentor().instrument()
    return flush


def setup_openai_v2_legacy():
    flush = _sdk(events=True)
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    OpenAIInstrumentor().instrument()
    return flush


def setup_traceloop():
    from opentelemetry import trace
    from traceloop.sdk import Traceloop

    Traceloop.init(
        app_name="otel-fixture-recorder",
        api_endpoint=os.environ["OTLP_RECEIVER"],
        disable_batch=True,
        telemetry_enabled=False,
        resource_attributes={"deployment.environment": "fixtures"},
    )
    return lambda: trace.get_tracer_provider().force_flush()


def setup_litellm():
    import litellm

    os.environ["OTEL_EXPORTER"] = "otlp_http"
    os.environ["OTEL_ENDPOINT"] = os.environ["OTLP_RECEIVER"] + "/v1/traces"
    os.environ["OTEL_SERVICE_NAME"] = "otel-fixture-recorder"
    litellm.callbacks = ["otel"]

    def flush() -> None:
        from opentelemetry import trace

        time.sleep(1.0)  # LiteLLM logs success and failure from a background worker
        provider = trace.get_tracer_provider()
        if hasattr(provider, "force_flush"):
            provider.force_flush()
        for callback in litellm.callbacks + litellm._async_success_callback + litellm.success_callback:
            tracer_provider = getattr(getattr(callback, "tracer", None), "_tracer_provider", None)
            getattr(tracer_provider, "force_flush", lambda: None)()

    return flush


def _client():
    import openai

    return openai.OpenAI(base_url=os.environ["FAKE_UPSTREAM"] + "/v1", api_key="sk-fixture", max_retries=0)


def _in_app_span(fn):
    """Run fn under a parent span that is not a GenAI call (the proxy must skip it)."""
    from opentelemetry import trace

    with trace.get_tracer("fixture-app").start_as_current_span("handle_user_request") as span:
        span.set_attribute("app.route", "/ask")
        return fn()


def openai_chat() -> None:
    messages = [{"role": "user", "content": QUESTION}]
    _in_app_span(lambda: _client().chat.completions.create(model="gpt-4o-mini", messages=messages, user="u-42"))


def openai_chat_stream() -> None:
    def call() -> None:
        stream = _client().chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
        )
        for _ in stream:
            pass

    _in_app_span(call)


def openai_embedding() -> None:
    _in_app_span(lambda: _client().embeddings.create(model="text-embedding-3-small", input=QUESTION))


def openai_error() -> None:
    import openai

    try:
        _in_app_span(
            lambda: _client().chat.completions.create(
                model=MISSING_MODEL, messages=[{"role": "user", "content": QUESTION}]
            )
        )
    except openai.NotFoundError:
        return
    raise SystemExit("the fake upstream did not refuse the missing model")


def _litellm_args() -> dict:
    return {"api_base": os.environ["FAKE_UPSTREAM"] + "/v1", "api_key": "sk-fixture", "num_retries": 0}


def _settled(call) -> None:
    """Run an async LiteLLM call, then give its logging task (same event loop) time to export."""
    import asyncio

    async def run() -> None:
        await call()
        await asyncio.sleep(1.5)

    asyncio.run(run())


def litellm_acompletion() -> None:
    import litellm

    messages = [{"role": "user", "content": QUESTION}]
    _settled(lambda: litellm.acompletion(model="openai/gpt-4o-mini", messages=messages, **_litellm_args()))


def litellm_acompletion_stream() -> None:
    import litellm

    async def call() -> None:
        stream = await litellm.acompletion(
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
            **_litellm_args(),
        )
        async for _ in stream:
            pass

    _settled(call)


def litellm_aembedding() -> None:
    import litellm

    _settled(lambda: litellm.aembedding(model="openai/text-embedding-3-small", input=[QUESTION], **_litellm_args()))


def litellm_completion_error() -> None:
    import litellm

    try:
        litellm.completion(
            model=f"openai/{MISSING_MODEL}", messages=[{"role": "user", "content": QUESTION}], **_litellm_args()
        )
    except litellm.exceptions.NotFoundError:
        return
    raise SystemExit("the fake upstream did not refuse the missing model")


def child(setup: str, call: str) -> None:
    flush = globals()[setup]()
    try:
        globals()[call]()
    finally:
        flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("emitters", nargs="*", help=f"default: all of {', '.join(EMITTERS)}")
    parser.add_argument("--child", nargs=2, metavar=("SETUP", "CALL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = sorted(set(args.emitters) - set(EMITTERS))
    if unknown:
        parser.error(f"unknown emitter(s) {', '.join(unknown)}; known: {', '.join(EMITTERS)}")
    if args.child:
        child(*args.child)
    else:
        record(args.emitters or list(EMITTERS))


if __name__ == "__main__":
    main()
