"""Intake benchmark: `/v1/logs` records/s and MB/s and `/v1/traces` spans/s on one core, beside a floor.

    python bench/intake_bench.py [--records 100000] [--batch 1000 5000] [--spans 50000] [--otlp-rounds 3]
                                 [--senders 1 4]

Everything runs in this process, on one thread for the work and the landing writer's thread for the I/O,
as a proxy worker does (no HTTP: the proxy_bench measures requests; malloc tuned as a worker tunes it,
``server.keep_freed_memory``):

- floor: orjson.loads of every line of the batch and an append of the batch to a file, no validation;
- intake: ``intake.process_batch`` (the compiled schema checks, the UTC hour of each record) and
  ``LandingWriter.commit`` (group commit: appended to the rotating segments and fsynced before the
  answer). Target (issue 13): >= 100,000 records/s of about 2 KB, and >= 0.5x the floor;
- OTLP: ``otlp.decode`` + ``intake.convert_spans`` of protobuf bodies of 1,000 openai-v2 chat spans each (the
  GenAI span of a recording (bifrost_pipeline_tests/data/otlp), and the same group commit. Target: >= 50,000 spans/s.
  With 1 sender, and with ``--senders`` clients sending at once, as a gateway's instances and collectors do:
  each sends its next body once the last is answered, so while one waits for its fsync the core converts
  another's body, and the bodies that wait together share one group commit (the figure says how many);
  Run twice, each in a process of its own: with the proxy's compiled modules (``proxy/native.py``) as
  installed, and from source (BIFROST_NATIVE=0), the baseline: what an install without a C compiler does;
  each also converts every body once without landing it (the share of the group commit);
- files: the segments the run created, beside one per batch and UTC hour (how intake landed before);
- peak RSS of the process.

The figures depend on the machine and on what else runs on it: run it on a quiet machine. Each figure is
given per wall second and per CPU second of the process (both threads): on a busy machine compare the CPU
figures, which leave out the time other processes held the core.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bifrost_pipeline.proxy import intake, otlp  # noqa: E402
from bifrost_pipeline.proxy.pricing import Pricing  # noqa: E402
from bifrost_pipeline.proxy.server import keep_freed_memory  # noqa: E402
from bifrost_pipeline.proxy.writer import LandingWriter  # noqa: E402

OTLP_FIXTURE = ROOT / "bifrost_pipeline_tests" / "data" / "otlp" / "openai-v2--chat-content.0.traces.pb"


def canonical_records(n: int, start: datetime) -> list[bytes]:
    """``n`` valid records of about 2.2 KB (content included), spread over two UTC hours."""
    out = []
    for i in range(n):
        ts = start + timedelta(seconds=7200 * i / n)
        rec = {
            "schema_version": "1",
            "timestamp": ts.isoformat().replace("+00:00", "Z"),
            "ended_at": (ts + timedelta(milliseconds=830)).isoformat().replace("+00:00", "Z"),
            "request_id": str(uuid.uuid4()),
            "customer_id": f"cust_{i % 50}",
            "user_id": f"user_{i % 997}",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "endpoint": "/v1/chat/completions",
            "method": "POST",
            "request_type": "chat",
            "stream": i % 3 == 0,
            "status": "success",
            "status_code": 200,
            "finish_reason": "stop",
            "latency_ms": 830,
            "time_to_first_token_ms": 210,
            "input_tokens": 412,
            "output_tokens": 230,
            "total_tokens": 642,
            "cost_usd": 0.000199,
            "metadata": {"team": "search", "env": "prod"},
            "input_content": json.dumps([{"role": "user", "content": "lorem ipsum " * 80}]),
            "output_content": json.dumps([{"role": "assistant", "content": "dolor sit amet " * 60}]),
        }
        out.append(orjson.dumps(rec))
    return out


class Clock:
    """Wall seconds and CPU seconds of this process (every thread: the work and the writer's I/O). On a busy
    machine the CPU figure is the one to compare: the wall figure counts the time others held the core."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def floor(batches: list[bytes], path: Path) -> Clock:
    """Time to parse every line and append each batch to a file (fsynced per batch), no validation."""
    with Clock() as clock, open(path, "ab") as fh:
        for body in batches:
            for line in body.split(b"\n"):
                orjson.loads(line)
            fh.write(body + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
    return clock


async def _land(root: Path, bodies: list[bytes], convert, senders: int = 1) -> tuple[Clock, LandingWriter]:
    """Convert and commit every body, as a worker does for ``senders`` clients sending at once: each client
    sends its next body when the last one is answered (landed and fsynced); while one waits for its fsync,
    the loop converts another's body, and bodies waiting together share one group commit."""
    writer = LandingWriter(root, queue_size=1000, segment_max_bytes=64 << 20, segment_max_age_s=60, flush_interval_s=1)
    writer.start(asyncio.get_running_loop())
    queued = iter(bodies)  # shared by the senders: each takes the next body not yet sent

    async def sender() -> None:
        for body in queued:
            groups = convert(body)
            await writer.commit(groups)

    with Clock() as clock:
        await asyncio.gather(*(sender() for _ in range(senders)))
    await writer.aclose()
    return clock, writer


def run_logs(records: list[bytes], batch: int, work: Path, senders: int) -> dict:
    bodies = [b"\n".join(records[i : i + batch]) for i in range(0, len(records), batch)]
    mb = sum(len(b) for b in bodies) / 1e6
    base = floor(bodies, work / f"floor-{batch}-{senders}.ndjson")
    root = work / f"landing-{batch}-{senders}"
    convert = lambda b: intake.process_batch(b, strip_content=False)[0]  # noqa: E731
    clock, writer = asyncio.run(_land(root, bodies, convert, senders))
    files = len(list(root.rglob("*.ndjson")))
    per_batch_hours = sum(len(intake.process_batch(b, strip_content=False)[0]) for b in bodies[:1]) * len(bodies)
    n = len(records)
    return {
        "batch": batch,
        "senders": senders,
        "floor_rps": n / base.wall,
        "intake_rps": n / clock.wall,
        "intake_mbps": mb / clock.wall,
        "ratio": base.wall / clock.wall,
        "floor_cpu_rps": n / base.cpu,
        "intake_cpu_rps": n / clock.cpu,
        "cpu_ratio": base.cpu / clock.cpu,
        "files": files,
        "files_one_per_batch_hour": per_batch_hours,
        "group_commits": writer.group_commits,
    }


def otlp_bodies(spans_per_body: int, bodies: int) -> list[bytes]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    template = ExportTraceServiceRequest()
    template.ParseFromString(OTLP_FIXTURE.read_bytes())
    spans = [
        s
        for rs in template.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
        if any(kv.key.startswith("gen_ai.") for kv in s.attributes)
    ]
    out = []
    for b in range(bodies):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.CopyFrom(template.resource_spans[0].resource)
        ss = rs.scope_spans.add()
        for i in range(spans_per_body):
            s = ss.spans.add()
            s.CopyFrom(spans[i % len(spans)])
            s.span_id = (b * spans_per_body + i + 1).to_bytes(8, "big")
            s.trace_id = uuid.uuid4().bytes
        out.append(req.SerializeToString())
    return out


def run_otlp(total: int, work: Path, senders: int) -> dict:
    bodies = otlp_bodies(1000, max(1, total // 1000))
    pricing = Pricing()

    def convert(body: bytes) -> dict:
        spans, _ = otlp.decode(body, "application/x-protobuf", "")
        return intake.convert_spans(spans, customer_id="bench", content=True, pricing=pricing).groups

    convert(bodies[0])  # warm, as a worker is after its first request: the check compiled, the prices read
    with Clock() as alone:  # decode, map, check and serialize, nothing landed: where the commit's share shows
        for body in bodies:
            convert(body)
    clock, writer = asyncio.run(_land(work / "landing-otlp", bodies, convert, senders))
    n = 1000 * len(bodies)
    return {
        "spans": n,
        "group_commits": writer.group_commits,
        "spans_per_s": n / clock.wall,
        "spans_per_cpu_s": n / clock.cpu,
        "convert_only_per_cpu_s": n / alone.cpu,
        "landed": writer.rotating.lines_published,
    }


def _spread(values: list[float]) -> str:
    values = sorted(values)
    return f"{statistics.median(values):,.0f} ({values[0]:,.0f} - {values[-1]:,.0f})"


def otlp_in_child(spans: int, native: bool, senders: int) -> dict:
    """run_otlp in a process of its own, with the compiled modules or from source (BIFROST_NATIVE=0)."""
    env = {**os.environ, "BIFROST_NATIVE": "1" if native else "0"}
    out = subprocess.run(
        [sys.executable, __file__, "--otlp-child", str(spans), "--senders", str(senders)],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def _as_a_worker_starts() -> None:
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core for the work (and the writer)
    except (AttributeError, OSError):
        pass
    keep_freed_memory()  # as a proxy worker does at its start
    gc.collect()
    gc.freeze()  # as a proxy worker does once loaded (server.serve)


def otlp_rounds(spans: int, senders: int, rounds_wanted: int) -> None:
    rounds: dict[bool, list[dict]] = {True: [], False: []}
    for _ in range(rounds_wanted):
        for native in (True, False):
            rounds[native].append(otlp_in_child(spans, native, senders))
    bodies_per_commit = statistics.median(o["spans"] / 1000 / o["group_commits"] for o in rounds[True])
    print(f"  {senders} sender(s) at once, {bodies_per_commit:.1f} bodies per group commit (compiled, median):")
    for runs in rounds.values():
        states = {state for o in runs for state in o["native"].values()}
        how = "compiled" if states == {"compiled"} else "from source" if "compiled" not in states else "partly compiled"
        figures = [
            f"{_spread([o[key] for o in runs])} {label}"
            for key, label in (
                ("spans_per_s", "spans/s"),
                ("spans_per_cpu_s", "per CPU second"),
                ("convert_only_per_cpu_s", "per CPU second without landing"),
            )
        ]
        print(f"  {how:>15}: " + "; ".join(figures) + f" ({sum(o['landed'] for o in runs)} landed)")
    ratios = [a["spans_per_cpu_s"] / b["spans_per_cpu_s"] for a, b in zip(rounds[True], rounds[False], strict=True)]
    print(f"  compiled / from source per CPU second, round by round: {' '.join(f'{r:.2f}' for r in ratios)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--otlp-rounds", type=int, default=3, help="OTLP runs of each side, in turn")
    parser.add_argument(
        "--senders", type=int, nargs="+", default=[1, 4], help="clients sending at once (each waits for its answer)"
    )
    parser.add_argument("--otlp-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.otlp_child:
        from bifrost_pipeline.proxy import native

        _as_a_worker_starts()
        with tempfile.TemporaryDirectory(prefix="intake-bench-otlp-") as tmp:
            result = run_otlp(args.otlp_child, Path(tmp), args.senders[0])
            print(json.dumps({**result, "native": native.states()}))
        return
    _as_a_worker_starts()
    records = canonical_records(args.records, datetime(2026, 3, 4, 5, tzinfo=UTC))
    size = sum(len(r) for r in records) / len(records)
    print(f"{args.records} canonical records of {size:.0f} bytes on average, two UTC hours")
    print(f"{'batch':>6} {'senders':>7} {'floor rec/s':>12} {'intake rec/s':>13} {'MB/s':>7} {'x floor':>8} {'files':>6} "
          f"{'(1/batch/hour)':>15} {'fsyncs':>7}   per CPU second: {'floor':>8} {'intake':>8} {'x floor':>8}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="intake-bench-") as tmp:
        work = Path(tmp)
        for batch in args.batch:
            for senders in args.senders:
                r = run_logs(records, batch, work, senders)
                print(
                    f"{r['batch']:>6} {r['senders']:>7} {r['floor_rps']:>12,.0f} {r['intake_rps']:>13,.0f} "
                    f"{r['intake_mbps']:>7.1f} "
                    f"{r['ratio']:>8.2f} {r['files']:>6} {r['files_one_per_batch_hour']:>15} {r['group_commits']:>7}"
                    f"{'':>19}{r['floor_cpu_rps']:>9,.0f} {r['intake_cpu_rps']:>8,.0f} {r['cpu_ratio']:>8.2f}"
                )
    print(
        f"OTLP protobuf, 1,000 openai-v2 chat spans a body (target: 50,000 spans/s), {args.otlp_rounds} rounds, "
        "compiled and from source in turn: median (lowest - highest)"
    )
    for senders in args.senders:
        otlp_rounds(args.spans, senders, args.otlp_rounds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")
    print(
        "files per hour of intake: at most one segment per UTC hour per segment_max_age_s (default 60 s: 60 an "
        "hour) or per segment_max_bytes (64 MB), per worker, however many batches arrive"
    )


if __name__ == "__main__":
    main()
