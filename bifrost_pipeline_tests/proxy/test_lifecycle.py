"""Whole-process behaviour: strict client settings, queue full, SIGTERM, crash recovery, imports, pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import pytest

from ..emulators.servers import free_port, start_server
from .conftest import (
    CLIENT_KEY,
    PROVIDER_KEY,
    canonical_record,
    landed,
    mock_requests,
    record_of,
    start_proxy,
    wait_for,
    write_config,
)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def strict_proxy(tmp_path_factory, mock_upstream, log_dir):
    base = tmp_path_factory.mktemp("strict")
    cfg = write_config(
        base / "config.json",
        base / "landing",
        mock_upstream.url,
        client={
            "required_headers": ["X-Tenant-ID"],
            "disable_content_logging": True,
            "drop_excess_requests": True,
        },
        proxy={
            "queue_size": 1,
            "pricing": {"gpt-4o-mini": {"input_per_million": 1000, "output_per_million": 2000}},
        },
    )
    server = start_proxy("proxy-strict", cfg, log_dir)
    yield {"url": server.url, "landing": base / "landing", "server": server}
    server.stop()


def test_required_header_missing_is_400_and_lands_nothing(strict_proxy, mock_upstream):
    marker = uuid.uuid4().hex
    with pytest.raises(openai.BadRequestError) as exc:
        _client(strict_proxy["url"]).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-marker": marker},
        )
    assert exc.value.status_code == 400
    assert "missing required header(s): X-Tenant-ID" in str(exc.value)
    assert not [r for r in mock_requests(mock_upstream) if r["headers"].get("x-marker") == marker]


def test_content_logging_off_keeps_usage_and_metadata(strict_proxy):
    raw = _client(strict_proxy["url"]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "a secret prompt"}],
        extra_headers={"X-Tenant-ID": "acme"},
    )
    raw.parse()
    rec = record_of(strict_proxy["landing"], raw.headers["x-request-id"])
    assert rec["input_content"] is None and rec["output_content"] is None
    assert rec["metadata"] == {"x-tenant-id": "acme"}
    assert rec["input_tokens"] == 3 and rec["output_tokens"] > 0 and rec["cost_usd"] > 0
    text = "".join(p.read_text() for p in strict_proxy["landing"].rglob("*.ndjson"))
    assert "a secret prompt" not in text and "mock reply" not in text


def test_pricing_override_from_config(strict_proxy):
    raw = _client(strict_proxy["url"]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "one two"}],
        extra_headers={"X-Tenant-ID": "a"},
    )
    usage = raw.parse().usage
    rec = record_of(strict_proxy["landing"], raw.headers["x-request-id"])
    assert rec["cost_usd"] == pytest.approx(
        (usage.prompt_tokens * 1000 + usage.completion_tokens * 2000) / 1e6
    )


def test_intake_blanks_content_when_content_logging_is_off(strict_proxy):
    rid = str(uuid.uuid4())
    rec = {
        "schema_version": "1",
        "timestamp": datetime.now(UTC).isoformat(),
        "request_id": rid,
        "customer_id": "c",
        "provider": "p",
        "model": "m",
        "endpoint": "/v1/chat/completions",
        "method": "POST",
        "request_type": "chat",
        "stream": False,
        "status": "success",
        "status_code": 200,
        "latency_ms": 5,
        "input_content": '"private"',
        "output_content": '"private too"',
    }
    r = httpx.post(strict_proxy["url"] + "/v1/logs", content=json.dumps(rec).encode())
    assert r.json()["accepted"] == 1
    got = record_of(strict_proxy["landing"], rid)
    assert got["input_content"] is None and got["output_content"] is None and got["latency_ms"] == 5


def test_queue_full_answers_429_when_drop_excess_requests(strict_proxy, mock_upstream):
    """queue_size 1: a stream in flight holds the only landing slot until its record is written."""
    client = _client(strict_proxy["url"])
    marker = uuid.uuid4().hex
    done = threading.Event()

    def long_stream():
        try:
            list(
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "x"}],
                    stream=True,
                    extra_headers={
                        "X-Tenant-ID": "t",
                        "x-marker": marker,
                        "x-mock-chunks": "40",
                        "x-mock-chunk-delay-ms": "25",
                    },
                )
            )
        finally:
            done.set()

    t = threading.Thread(target=long_stream)
    t.start()
    wait_for(
        lambda: [r for r in mock_requests(mock_upstream) if r["headers"].get("x-marker") == marker],
        5,
        "the stream to reach the upstream",
    )
    with pytest.raises(openai.RateLimitError) as exc:
        client.embeddings.create(
            model="text-embedding-3-small", input="x", extra_headers={"X-Tenant-ID": "t"}
        )
    assert "landing queue is full" in str(exc.value)
    assert not done.is_set()
    t.join(10)
    metrics = httpx.get(strict_proxy["url"] + "/metrics").text
    assert "bifrost_proxy_requests_rejected_total 1.0" in metrics
    # Once the stream's record is written the slot is free again.
    wait_for(lambda: httpx.get(strict_proxy["url"] + "/health").json()["queue_free"] == 1, 5, "a free slot")
    client.embeddings.create(model="text-embedding-3-small", input="x", extra_headers={"X-Tenant-ID": "t"})


def test_queue_full_applies_backpressure_by_default(tmp_path, mock_upstream, log_dir):
    """queue_size 1 without drop_excess_requests: the second request waits for the slot, then succeeds."""
    cfg = write_config(
        tmp_path / "config.json", tmp_path / "landing", mock_upstream.url, proxy={"queue_size": 1}
    )
    server = start_proxy("proxy-backpressure", cfg, log_dir)
    try:
        client = _client(server.url)
        marker = uuid.uuid4().hex
        stream_done = threading.Event()

        def long_stream():
            list(
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "x"}],
                    stream=True,
                    extra_headers={"x-marker": marker, "x-mock-chunks": "30", "x-mock-chunk-delay-ms": "20"},
                )
            )
            stream_done.set()

        t = threading.Thread(target=long_stream)
        t.start()
        wait_for(
            lambda: [r for r in mock_requests(mock_upstream) if r["headers"].get("x-marker") == marker],
            5,
            "the stream to reach the upstream",
        )
        raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="waits")
        assert stream_done.wait(10)
        t.join(10)
        rec = record_of(tmp_path / "landing", raw.headers["x-request-id"])
        streamed = [r for r in landed(tmp_path / "landing") if r["stream"]]
        assert rec["status"] == "success" and len(streamed) == 1
        # It waited for the slot: it ended after the stream ended, having spent most of the stream waiting.
        assert datetime.fromisoformat(rec["ended_at"]) >= datetime.fromisoformat(streamed[0]["ended_at"])
        assert rec["latency_ms"] >= 300
        assert "bifrost_proxy_queue_full_waits_total 1.0" in httpx.get(server.url + "/metrics").text
    finally:
        server.stop()


def test_sigterm_finishes_in_flight_requests_and_lands_every_record(tmp_path, mock_upstream, log_dir):
    landing_dir = tmp_path / "landing"
    cfg = write_config(
        tmp_path / "config.json",
        landing_dir,
        mock_upstream.url,
        proxy={"segment_max_age_s": 3600, "flush_interval_s": 5},
    )  # nothing published before exit
    server = start_proxy("proxy-sigterm", cfg, log_dir)
    client = _client(server.url)
    marker = uuid.uuid4().hex

    def call(i: int) -> str:
        headers = {"x-bf-lh-run": marker, "x-marker": marker}
        if i % 2:
            headers.update({"x-mock-chunks": "20", "x-mock-chunk-delay-ms": "40"})
            chunks = list(
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": str(i)}],
                    stream=True,
                    extra_headers=headers,
                )
            )
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        headers["x-mock-delay-ms"] = "600"
        return (
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": str(i)}], extra_headers=headers
            )
            .choices[0]
            .message.content
        )

    n = 16
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(call, i) for i in range(n)]
        wait_for(
            lambda: (
                len([r for r in mock_requests(mock_upstream) if r["headers"].get("x-marker") == marker]) == n
            ),
            10,
            "every request to reach the upstream",
        )
        os.killpg(server.proc.pid, signal.SIGTERM)
        answers = [f.result(timeout=30) for f in futures]
    assert server.proc.wait(timeout=30) == 0
    assert all(len(a.split()) == 20 for a in answers[1::2])  # streams ran to their end
    assert all(a.startswith("This is a mock reply") for a in answers[0::2])
    recs = [r for r in landed(landing_dir) if (r["metadata"] or {}).get("run") == marker]
    assert len(recs) == n and all(r["status"] == "success" for r in recs)
    assert not list(landing_dir.rglob("*.part"))
    log = server.log.read_text()
    assert "landing writer closed: 16 record(s) submitted, 16 written" in log


def test_crash_leaves_part_segments_that_the_next_start_publishes(tmp_path, mock_upstream, log_dir):
    landing_dir = tmp_path / "landing"
    cfg = write_config(
        tmp_path / "config.json",
        landing_dir,
        mock_upstream.url,
        proxy={"segment_max_age_s": 3600, "flush_interval_s": 0.05},
    )
    server = start_proxy("proxy-crash", cfg, log_dir)
    client = _client(server.url)
    ids = []
    for i in range(5):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": str(i)}]
        )
        ids.append(raw.headers["x-request-id"])

    def flushed():
        parts = list(landing_dir.rglob(".*.ndjson.part"))
        return parts if parts and sum(p.read_bytes().count(b"\n") for p in parts) == 5 else None

    wait_for(flushed, 5, "the five records flushed to the open segment")
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    assert landed(landing_dir) == []  # nothing was published: the segment was still open
    server2 = start_proxy("proxy-crash-2", cfg, log_dir)
    try:
        assert sorted(r["request_id"] for r in landed(landing_dir)) == sorted(ids)
        assert not list(landing_dir.rglob("*.part"))
        assert "recovered 1 segment(s) left incomplete by a previous run" in server2.log.read_text()
    finally:
        server2.stop()


def test_proxy_imports_no_pipeline_engine(tmp_path):
    cfg = write_config(
        tmp_path / "config.json",
        tmp_path / "landing",
        "http://127.0.0.1:9",
        extra={
            "log_exports": {
                "exports": [
                    {
                        "name": "daily",
                        "schedule": "daily",
                        "destination": {"type": "local", "config": {"path": str(tmp_path / "out")}},
                    }
                ]
            }
        },
    )
    code = (
        "import sys, time; t = time.perf_counter();"
        "from bifrost_pipeline.config import load_config;"
        "from bifrost_pipeline.proxy.app import ProxyApp; from bifrost_pipeline.proxy import server, cli, mock;"
        f"app = ProxyApp(load_config({str(cfg)!r}));"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'dagster', 'polars', 'duckdb', 'pyarrow', 'pandas'});"
        "print(heavy, round(time.perf_counter() - t, 2))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TEST_PROVIDER_KEY": "k"},
    )
    assert out.returncode == 0, out.stderr
    heavy, _seconds = out.stdout.strip().rsplit(" ", 1)
    assert heavy == "[]", (
        f"the proxy imported {heavy}"
    )  # start-up time itself is measured in bench/, not here


def test_cli_parser_runs_the_proxy_command():
    import argparse

    from bifrost_pipeline.proxy.cli import add_proxy_parser, run_proxy

    parser = argparse.ArgumentParser()
    add_proxy_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["proxy", "--config", "x.yaml", "--port", "9", "--mock-upstream"])
    assert (args.config, args.port, args.mock_upstream, args.func) == ("x.yaml", 9, True, run_proxy)
    assert run_proxy(parser.parse_args(["proxy", "--config", "/nonexistent.yaml"])) == 2


def test_mock_upstream_mode_needs_no_provider(tmp_path, log_dir):
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "landing": {"path": str(tmp_path / "landing")},
                "proxy": {"segment_max_age_s": 0.2, "flush_interval_s": 0.05, "require_virtual_key": False},
            }
        )
    )
    port = __import__("bifrost_pipeline_tests.emulators.servers", fromlist=["free_port"]).free_port()
    from bifrost_pipeline_tests.emulators.servers import start_server

    server = start_server(
        "proxy-mockmode",
        [
            sys.executable,
            "-m",
            "bifrost_pipeline.proxy",
            "--config",
            str(cfg),
            "--port",
            str(port),
            "--mock-upstream",
        ],
        port,
        log_dir,
    )
    try:
        raw = _client(server.url).chat.completions.with_raw_response.create(
            model="openai/gpt-4o", messages=[{"role": "user", "content": "demo"}]
        )
        assert raw.parse().choices[0].message.content.startswith("This is a mock reply")
        rec = record_of(tmp_path / "landing", raw.headers["x-request-id"])
        assert (rec["provider"], rec["model"], rec["status"]) == ("openai", "gpt-4o", "success")
        assert rec["cost_usd"] > 0
    finally:
        server.stop()


def test_landed_segments_are_read_by_the_pipeline(proxy_env):
    """Last: the pipeline's validation (raw_logs) reads what the proxy landed, with nothing quarantined."""
    from bifrost_pipeline import validation
    from bifrost_pipeline.config import load_config

    client = _client(proxy_env["url"])
    ids = []
    for i in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"pipeline {i}"}],
            extra_headers={"x-bf-lh-case": "pipeline"},
        )
        ids.append(raw.headers["x-request-id"])
    list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "s"}], stream=True
        )
    )
    for rid in ids:
        record_of(proxy_env["landing"], rid)
    day = datetime.now(UTC).date()
    expected = [r for r in landed(proxy_env["landing"]) if r["timestamp"].startswith(day.isoformat())]
    app = load_config(proxy_env["config"], env={"TEST_PROVIDER_KEY": "k"})
    result = validation.validate_day(app, day)
    assert result.quarantined_rows == 0, result.reasons
    assert result.valid_rows == len(expected) >= 4
    import polars as pl

    df = pl.read_parquet(Path(result.raw_path))
    got = df.filter(pl.col("request_id").is_in(ids))
    assert got.height == 3 and set(got["status"].to_list()) == {"success"}
    assert got["metadata"].str.contains('"case"').all()


def test_demo_traffic_lands_records(tmp_path):
    from bifrost_pipeline.config import parse_config
    from bifrost_pipeline.proxy.demo import send_demo_traffic

    app = parse_config({"landing": {"path": str(tmp_path / "landing")}}, env={}, base_dir=tmp_path)
    assert send_demo_traffic(app, 20) == 20
    recs = landed(tmp_path / "landing")
    assert len(recs) == 20 and not list((tmp_path / "landing").rglob("*.part"))
    assert {r["status"] for r in recs} == {"success", "error"}
    assert {r["provider"] for r in recs} >= {"openai", "anthropic"}
    assert all(r["metadata"]["source"] == "demo" for r in recs)


def test_sigterm_past_the_grace_period_cuts_streams_but_lands_their_records(tmp_path, mock_upstream, log_dir):
    landing_dir = tmp_path / "landing"
    cfg = write_config(
        tmp_path / "config.json",
        landing_dir,
        mock_upstream.url,
        proxy={"segment_max_age_s": 3600, "flush_interval_s": 5, "shutdown_grace_s": 0.5},
    )
    server = start_proxy("proxy-grace", cfg, log_dir)
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "long"}]}
    headers = {"x-mock-chunks": "100", "x-mock-chunk-delay-ms": "50"}  # a 5 s stream
    with httpx.Client(timeout=20) as http:
        with http.stream("POST", server.url + "/v1/chat/completions", json=body, headers=headers) as resp:
            rid = resp.headers["x-request-id"]
            got = b""
            chunks = resp.iter_raw()
            for chunk in chunks:
                got += chunk
                if got.count(b"data:") >= 2:
                    break
            os.killpg(server.proc.pid, signal.SIGTERM)
            try:
                for chunk in chunks:
                    got += chunk
            except httpx.HTTPError:
                pass  # the connection is cut when the grace period ends
    assert server.proc.wait(timeout=30) == 0
    assert b"[DONE]" not in got  # the stream did not get to its end
    (rec,) = [r for r in landed(landing_dir) if r["request_id"] == rid]
    assert (rec["status"], rec["status_code"], rec["error_type"]) == ("error", 503, "cancelled")
    assert rec["latency_ms"] < 4000 and not list(landing_dir.rglob("*.part"))
    assert rec["time_to_first_token_ms"] is not None
    assert json.loads(rec["output_content"])["content"].startswith("This is")  # the text received so far


def _proxy_under_file_size_limit(tmp_path, mock_upstream, log_dir, limit: int):
    """The proxy under a file-size limit (RLIMIT_FSIZE): a real write error from the kernel (EFBIG) for any
    write that would make a file larger than ``limit``."""
    cfg = write_config(
        tmp_path / "config.json",
        tmp_path / "landing",
        mock_upstream.url,
        proxy={"flush_interval_s": 0.1, "segment_max_age_s": 1},
    )
    boot = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
        "sys.argv = ['proxy'] + sys.argv[1:]; "
        "runpy.run_module('bifrost_pipeline.proxy', run_name='__main__', alter_sys=True)"
    )
    port = free_port()
    return start_server(
        "proxy-fsize",
        [sys.executable, "-c", boot, "--config", str(cfg), "--port", str(port), "--log-level", "warning"],
        port,
        log_dir,
        env={"TEST_PROVIDER_KEY": PROVIDER_KEY},
        ready=lambda: httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200,
        timeout=30,
    )


def _metric(url: str, name: str) -> float:
    lines = [ln for ln in httpx.get(url + "/metrics").text.splitlines() if ln.startswith(name + " ")]
    return float(lines[0].split()[1]) if lines else 0.0


def test_a_disk_that_refuses_writes_holds_the_records_until_they_can_be_written(
    tmp_path, mock_upstream, log_dir
):
    """A segment that reaches the limit refuses the next write: the records wait in memory, the proxy
    reports it, and they land in the next segment, each exactly once."""
    n_requests, limit = 600, 128 * 1024
    landing_dir = tmp_path / "landing"
    server = _proxy_under_file_size_limit(tmp_path, mock_upstream, log_dir, limit)
    try:
        client = _client(server.url)
        ids = []
        for i in range(n_requests):  # about 700 bytes a record: several segments' worth
            raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=f"n{i}")
            ids.append(raw.headers["x-request-id"])
        wait_for(lambda: len(landed(landing_dir)) == n_requests, 20, "every record to land")
        assert _metric(server.url, "bifrost_proxy_landing_errors_total") >= 1
    finally:
        server.stop()
    assert server.proc.returncode == 0  # every record written: a clean exit
    recs = landed(landing_dir)
    assert sorted(r["request_id"] for r in recs) == sorted(ids)  # each exactly once
    assert all(seg.stat().st_size <= limit for seg in landing_dir.rglob("*.ndjson"))
    assert not list(landing_dir.rglob("*.part"))
    log = server.log.read_text()
    assert "File too large" in log and "landing writer recovered" in log


def test_an_intake_batch_the_disk_refuses_gets_503_and_lands_none_of_it(tmp_path, mock_upstream, log_dir):
    limit = 64 * 1024
    landing_dir = tmp_path / "landing"
    server = _proxy_under_file_size_limit(tmp_path, mock_upstream, log_dir, limit)
    pad = "x" * 900

    def record(i: int, hour: int) -> dict:
        return canonical_record(
            timestamp=f"2026-03-04T{hour:02d}:00:00Z",
            request_id=f"batch-{hour}-{i}",
            input_content=json.dumps(pad),
        )

    try:
        small = [record(i, 5) for i in range(10)]  # the 05:00 segment fits
        large = [record(i, 6) for i in range(100)]  # the 06:00 one (about 150 KB) is over the limit
        body = "\n".join(json.dumps(r) for r in small + large).encode()
        r = httpx.post(
            server.url + "/v1/logs", content=body, headers={"content-type": "application/x-ndjson"}
        )
        assert r.status_code == 503
        message = r.json()["error"]["message"]
        assert "File too large" in message and "none of it was landed" in message
        assert _metric(server.url, "bifrost_proxy_landing_errors_total") == 1
        # All or none: the hour that fitted was not published either, and no .part is left behind.
        assert landed(landing_dir) == [] and not list(landing_dir.rglob("*.part"))
        # Sent again in parts that fit, the same records are accepted, each once.
        for part in (small, *(large[i : i + 30] for i in range(0, len(large), 30))):  # about 45 KB each
            body = "\n".join(json.dumps(r) for r in part).encode()
            ok = httpx.post(
                server.url + "/v1/logs", content=body, headers={"content-type": "application/x-ndjson"}
            )
            assert ok.status_code == 200 and ok.json()["accepted"] == len(part)
        # Answered once fsynced in the open segments, published when they rotate (age: 1 s), each record once.
        want = sorted(r["request_id"] for r in small + large)
        wait_for(lambda: sorted(r["request_id"] for r in landed(landing_dir)) == want, 10, "the batches published")
    finally:
        server.stop()
