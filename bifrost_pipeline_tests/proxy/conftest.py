"""Fixtures of the proxy tests: a mock upstream and proxies started as real processes on loopback ports."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bifrost_pipeline_tests.emulators.servers import Server, free_port, start_server
from bifrost_pipeline_tests.helpers import record

CLIENT_KEY = "sk-client-secret-never-forwarded-0123456789"
PROVIDER_KEY = "sk-provider-key-from-env-9876543210"


def _healthy(url: str) -> bool:
    return httpx.get(url + "/health", timeout=1).status_code == 200


def start_mock(log_dir: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "bifrost_pipeline.proxy.mock", "--port", str(port)]
    return start_server(
        "mock-upstream", cmd, port, log_dir, ready=lambda: _healthy(f"http://127.0.0.1:{port}")
    )


def write_config(
    path: Path,
    landing: Path,
    mock_url: str,
    *,
    client: dict | None = None,
    proxy: dict | None = None,
    providers: dict | None = None,
    extra: dict | None = None,
) -> Path:
    doc = {
        "client": {
            "logging_headers": ["X-Tenant-ID", "X-Correlation-ID"],
            "prometheus_labels": ["team", "env"],
            **(client or {}),
        },
        "providers": providers
        if providers is not None
        else {
            "openai": {
                "base_url": f"{mock_url}/v1",
                "api_key": "${TEST_PROVIDER_KEY}",
                "models": ["gpt-4o-mini", "text-embedding-3-small", "tts-1", "whisper-1"],
            },
            "anthropic": {
                "base_url": f"{mock_url}/v1",
                "api_key": "sk-anthropic-test",
                "models": ["claude-3-haiku"],
            },
            "slow": {"base_url": f"{mock_url}/v1", "timeout_s": 0.5},
            "down": {"base_url": f"http://127.0.0.1:{free_port()}/v1", "timeout_s": 2},
        },
        "proxy": {
            "segment_max_age_s": 0.2,
            "flush_interval_s": 0.05,
            "customer_header": "X-Customer",
            "shutdown_grace_s": 20,
            "require_virtual_key": False,  # the tests of virtual keys turn it on
            **(proxy or {}),
        },
        "landing": {"path": str(landing)},
        **(extra or {}),
    }
    path.write_text(json.dumps(doc, indent=2))
    return path


def start_proxy(name: str, config: Path, log_dir: Path, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "bifrost_pipeline.proxy", "--config", str(config), "--port", str(port)]
    return start_server(
        name,
        cmd,
        port,
        log_dir,
        env={"TEST_PROVIDER_KEY": PROVIDER_KEY, **(env or {})},
        ready=lambda: _healthy(f"http://127.0.0.1:{port}"),
        timeout=30,
    )


def landed(root: Path) -> list[dict]:
    """Every record in the published segments under `root`."""
    out = []
    for seg in sorted(Path(root).glob("date=*/hour=*/*.ndjson")):
        if seg.name.startswith("."):
            continue
        for line in seg.read_bytes().splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def wait_for(check: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def record_of(root: Path, request_id: str, timeout: float = 10.0) -> dict:
    def find():
        for r in landed(root):
            if r["request_id"] == request_id:
                return r
        return None

    return wait_for(find, timeout, f"the record of request {request_id}")


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("proxy-logs")


@pytest.fixture(scope="session")
def mock_upstream(log_dir):
    server = start_mock(log_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy_env(tmp_path_factory, mock_upstream, log_dir):
    """The main proxy: two keyed providers, a slow one (0.5 s timeout) and an unreachable one."""
    base = tmp_path_factory.mktemp("proxy")
    landing = base / "landing"
    cfg = write_config(
        base / "config.json", landing, mock_upstream.url, extra={"pipeline": {"data_dir": str(base / "data")}}
    )
    server = start_proxy("proxy-main", cfg, log_dir)
    yield {"url": server.url, "landing": landing, "config": cfg, "server": server, "mock": mock_upstream}
    server.stop()


def mock_requests(mock: Server) -> list[dict]:
    return httpx.get(mock.url + "/mock/requests", timeout=5).json()


def canonical_record(**over) -> dict:
    """A valid record in the canonical schema, as a gateway would push it to /v1/logs (a new request id)."""
    defaults = {
        "timestamp": "2026-03-04T05:06:07.123Z",
        "ended_at": None,
        "request_id": str(uuid.uuid4()),
        "latency_ms": 321,
        "metadata": {"team": "a"},
    }
    return record(**{**defaults, **over})
