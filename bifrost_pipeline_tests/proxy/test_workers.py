"""``--workers 2``: requests spread over both processes, /metrics sums both, SIGTERM drains both."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from ..emulators.servers import free_port, start_server
from .conftest import PROVIDER_KEY, canonical_record, landed, write_config


def _metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_workers_share_the_port_sum_their_metrics_and_drain_on_sigterm(tmp_path, mock_upstream, log_dir):
    landing_dir = tmp_path / "landing"
    cfg = write_config(
        tmp_path / "config.json", landing_dir, mock_upstream.url, proxy={"segment_max_age_s": 3600, "flush_interval_s": 5}
    )  # nothing published before the stop: SIGTERM must publish every worker's segments
    port = free_port()
    cmd = [sys.executable, "-m", "bifrost_pipeline.proxy", "--config", str(cfg), "--port", str(port), "--workers", "2"]
    server = start_server(
        "proxy-workers",
        cmd,
        port,
        log_dir,
        env={"TEST_PROVIDER_KEY": PROVIDER_KEY, "PROMETHEUS_MULTIPROC_DIR": ""},
        ready=lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200,
        timeout=30,
    )
    marker = uuid.uuid4().hex
    n = 120

    def post(i: int) -> int:
        rec = canonical_record(request_id=f"{marker}-{i}")
        # A new connection each time, so that either worker may accept it.
        with httpx.Client(timeout=10) as client:
            return client.post(server.url + "/v1/logs", json=[rec]).status_code

    try:
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(post, range(n))) == {200}
        text = httpx.get(server.url + "/metrics", timeout=5).text
        assert _metric_sum(text, "http_requests_total", path="/v1/logs", status="200") == n  # both workers
        os.killpg(server.proc.pid, signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.stop()
    mine = [r for r in landed(landing_dir) if r["request_id"].startswith(marker)]
    assert sorted(r["request_id"] for r in mine) == sorted(f"{marker}-{i}" for i in range(n))  # each once
    assert not list(landing_dir.rglob("*.part")) and not list(landing_dir.glob(".commit-*"))
    pids = {seg.name.split("-")[-2] for seg in landing_dir.rglob("*.ndjson")}
    assert len(pids) == 2  # the requests were spread over both workers, each with its own segments
