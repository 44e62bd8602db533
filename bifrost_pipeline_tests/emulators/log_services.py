"""Local stand-ins for Datadog's Logs intake (v2) and Splunk's HTTP Event Collector, on 127.0.0.1.

CloudWatch Logs runs in moto_server (`moto_logs`). Each receiver checks every request against the
service's documented format and limits, answering as the service documents (Datadog: 202, 400, 401, 403, 413; Splunk HEC: 200 `{"text":"Success","code":0}`, 400
with codes 5/6/7/12/13, 401 codes 2/3, 403 code 4, 413), and keeps what it accepted. A test can make the
next N requests answer a given status (429, 500, 503, ...) to exercise retries, with Retry-After /
X-Ratelimit-Reset set to 0 so the tests do not wait. Anything a real service would refuse is also
recorded in `violations`, so a test can assert that the destination never relied on leniency.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

# Datadog "Send logs" (v2) limits.
DD_MAX_PAYLOAD = 5 * 1000 * 1000
DD_MAX_LOG = 1000 * 1000
DD_MAX_ENTRIES = 1000


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


@dataclass
class Receiver:
    """What the fake services share: the server thread, scripted failures and what was received."""

    requests: int = 0
    accepted: list[dict[str, Any]] = field(default_factory=list)  # every accepted event, in order
    payloads: list[dict[str, Any]] = field(default_factory=list)  # per accepted request: sizes, count, encoding
    violations: list[str] = field(default_factory=list)
    script: list[int] = field(default_factory=list)  # statuses to answer next, one per request
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, status: int, times: int = 1) -> None:
        self.script.extend([status] * times)

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with receiver.lock:
                    receiver.requests += 1
                    answer = receiver.scripted() or receiver.handle(self.path, self.headers, raw)
                data = json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if answer.status in (429, 503):
                    self.send_header("Retry-After", "0")
                    self.send_header("X-Ratelimit-Reset", "0")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def scripted(self) -> Answer | None:
        if not self.script:
            return None
        status = self.script.pop(0)
        return Answer(status, self.error_body(status))

    def error_body(self, status: int) -> dict[str, Any]:
        return {"errors": [f"scripted {status}"]}

    def handle(self, path: str, headers, raw: bytes) -> Answer:
        raise NotImplementedError

    def refuse(self, status: int, why: str, body: dict[str, Any] | None = None) -> Answer:
        self.violations.append(f"{status}: {why}")
        return Answer(status, body or {"errors": [why]})


def _decode(headers, raw: bytes) -> bytes:
    encoding = (headers.get("Content-Encoding") or "").lower()
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    if encoding:
        raise ValueError(f"unsupported Content-Encoding {encoding!r}")
    return raw


@dataclass
class DatadogIntake(Receiver):
    """POST /api/v2/logs with DD-API-KEY: a JSON array of log objects (each with a string `message`)."""

    api_key: str = "dd-test-key-0123456789"

    def handle(self, path: str, headers, raw: bytes) -> Answer:
        if path.split("?")[0] != "/api/v2/logs":
            return self.refuse(404, f"unknown path {path}")
        key = headers.get("DD-API-KEY")
        if not key:
            return self.refuse(401, "missing DD-API-KEY header")
        if key != self.api_key:
            return self.refuse(403, "invalid API key")
        if not (headers.get("Content-Type") or "").startswith("application/json"):
            return self.refuse(400, f"Content-Type {headers.get('Content-Type')!r} is not application/json")
        try:
            body = _decode(headers, raw)
        except (ValueError, OSError, zlib.error) as err:
            return self.refuse(400, f"cannot decode the body: {err}")
        if len(body) > DD_MAX_PAYLOAD:
            return self.refuse(413, f"payload of {len(body)} bytes is above {DD_MAX_PAYLOAD}")
        try:
            logs = json.loads(body)
        except ValueError as err:
            return self.refuse(400, f"body is not JSON: {err}")
        if not isinstance(logs, list) or not logs:
            return self.refuse(400, "body is not a non-empty JSON array")
        if len(logs) > DD_MAX_ENTRIES:
            return self.refuse(400, f"{len(logs)} entries, above {DD_MAX_ENTRIES}")
        for log in logs:
            if not isinstance(log, dict) or not isinstance(log.get("message"), str):
                return self.refuse(400, "a log is not an object with a string message")
            size = len(json.dumps(log, separators=(",", ":"), ensure_ascii=False).encode())
            if size > DD_MAX_LOG:
                # Datadog accepts and cuts such a log: a destination must not rely on that.
                self.violations.append(f"a log of {size} bytes is above {DD_MAX_LOG}")
        self.accepted.extend(logs)
        self.payloads.append(
            {"count": len(logs), "bytes": len(body), "encoding": headers.get("Content-Encoding")}
        )
        return Answer(202, {})


@dataclass
class SplunkHec(Receiver):
    """POST /services/collector/event with `Authorization: Splunk <token>`: concatenated JSON events."""

    token: str = "11111111-2222-3333-4444-555555555555"
    max_content_length: int = 1_000_000
    indexes: tuple[str, ...] = ("main", "llm")

    def error_body(self, status: int) -> dict[str, Any]:
        return {"text": "Server is busy", "code": 9} if status == 503 else {"text": f"scripted {status}", "code": 8}

    def handle(self, path: str, headers, raw: bytes) -> Answer:
        if path.split("?")[0] != "/services/collector/event":
            return self.refuse(404, f"unknown path {path}", {"text": "The requested URL was not found", "code": 404})
        auth = headers.get("Authorization")
        if not auth:
            return self.refuse(401, "no token", {"text": "Token is required", "code": 2})
        scheme, _, token = auth.partition(" ")
        if scheme != "Splunk" or not token:
            return self.refuse(401, "malformed Authorization", {"text": "Invalid authorization", "code": 3})
        if token != self.token:
            return self.refuse(403, "unknown token", {"text": "Invalid token", "code": 4})
        if len(raw) > self.max_content_length:
            return self.refuse(413, f"{len(raw)} bytes", {"text": "Content too large", "code": 27})
        try:
            body = _decode(headers, raw)
        except (ValueError, OSError, zlib.error) as err:
            return self.refuse(400, f"cannot decode: {err}", {"text": "Invalid data format", "code": 6})
        if len(body) > self.max_content_length:
            return self.refuse(413, f"{len(body)} bytes uncompressed", {"text": "Content too large", "code": 27})
        events, problem = self._parse(body)
        if problem:
            return problem
        self.accepted.extend(events)
        self.payloads.append({"count": len(events), "bytes": len(body), "encoding": headers.get("Content-Encoding")})
        return Answer(200, {"text": "Success", "code": 0})

    def _parse(self, body: bytes) -> tuple[list[dict], Answer | None]:
        text, decoder, events, at = body.decode(), json.JSONDecoder(), [], 0
        if not text.strip():
            return [], self.refuse(400, "no data", {"text": "No data", "code": 5})
        while at < len(text):
            while at < len(text) and text[at].isspace():
                at += 1
            if at == len(text):
                break
            try:
                event, at = decoder.raw_decode(text, at)
            except ValueError:
                return [], self.refuse(400, "not JSON", {"text": "Invalid data format", "code": 6})
            if "event" not in event:
                return [], self.refuse(400, "no event field", {"text": "Event field is required", "code": 12})
            if event["event"] in ("", None, {}):
                return [], self.refuse(400, "blank event", {"text": "Event field cannot be blank", "code": 13})
            if "time" in event and not isinstance(event["time"], int | float):
                return [], self.refuse(400, "time is not epoch seconds", {"text": "Invalid data format", "code": 6})
            if "index" in event and event["index"] not in self.indexes:
                return [], self.refuse(400, f"index {event['index']}", {"text": "Incorrect index", "code": 7})
            events.append(event)
        return events, None


@pytest.fixture
def datadog_intake():
    intake = DatadogIntake()
    intake.start()
    yield intake
    intake.close()


@pytest.fixture
def splunk_hec():
    hec = SplunkHec()
    hec.start()
    yield hec
    hec.close()


@pytest.fixture(scope="session")
def moto_logs(object_store_logs):
    """moto_server for CloudWatch Logs (its own process: the tests delete and recreate streams freely)."""
    from bifrost_pipeline_tests.emulators.object_stores import _moto

    server = _moto("moto-logs", object_store_logs)
    yield server
    server.stop()
