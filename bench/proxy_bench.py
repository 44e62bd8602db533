"""Proxy benchmark (issue 3): the latency the ingestion proxy adds, beside LiteLLM's, on loopback.

Three targets serve the same request (a small non-streamed chat completion) from the same built-in mock
upstream (no delay): the mock directly, our proxy in front of it, and the LiteLLM proxy (one worker, from
its own venv) in front of it. Each target gets an open-loop load at a fixed rate (default 50, 200 and 500
requests/s: 200 and 500 are issue 3's, 50 is a rate LiteLLM sustains on one core), 10 s each after a short
warm-up, from a separate load-generator process: an asyncio client on uvloop with raw HTTP/1.1 keep-alive
connections, so that the client costs little. Latency is measured per
request from the moment it is written to the moment its response is fully read; the client also reports how
late it sent requests against the schedule, so an overloaded client is visible.

"Added latency" is the target's percentile minus the direct percentile in the same run (a difference of
percentiles, not a percentile of differences). Everything runs on the same 2-core machine: the mock, the
proxy under test and the load generator compete for the CPU, as they would in any loopback benchmark.

At the end our proxy is stopped with SIGTERM and the records in its landing zone are counted against the
requests it was sent (all of them, warm-up included).

    .venv/bin/python bench/proxy_bench.py [--rates 200 500] [--duration 10] [--no-litellm] [--otel]

With ``--otel`` the proxy exports a span per request (and pushes its metrics every 5 s) over OTLP/HTTP to
a sink in this process that accepts every export and discards it: the added latency with export on.

Loops are bounded (rate x duration requests per target and rate; per-request timeout) and every server is
started on 127.0.0.1 and stopped by its process id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
LITELLM_VENV = OUT / ".litellm-venv"
MASTER_KEY = "sk-bench-master-0123456789abcdef"
BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}
).encode()


# --- load generator (runs in its own process) ---------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _loadgen(url: str, rate: float, duration: float, timeout: float, headers: dict[str, str]) -> dict:
    host, port = url.split("//")[1].split(":")
    port = int(port)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(BODY)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    ).encode()
    request = head + BODY
    n = int(rate * duration)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    latencies: list[float] = []
    slow: list[tuple[float, float]] = []  # (sent, seconds from the start of the run) of requests over SLOW_S
    lags: list[float] = []
    statuses: dict[str, int] = {}
    clock = time.perf_counter  # uvloop's loop.time() has a 1 ms resolution: too coarse for the lag
    start = clock() + 0.2

    async def one(i: int) -> None:
        scheduled = start + i / rate
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0.0, clock() - scheduled))
        conn = None
        try:
            reused = bool(idle)
            conn = (
                idle.pop() if idle else await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            )
            sent = time.perf_counter()
            conn[1].write(request)
            try:
                status = await asyncio.wait_for(_read_response(conn[0]), timeout)
            except (asyncio.IncompleteReadError, ConnectionResetError) as err:
                # A kept-alive connection the server closed while it was idle: the request never reached
                # the server, so it is sent again on a new connection (as HTTP clients do).
                if not reused or getattr(err, "partial", b""):
                    raise
                conn[1].close()
                conn = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                sent = time.perf_counter()
                conn[1].write(request)
                status = await asyncio.wait_for(_read_response(conn[0]), timeout)
            elapsed = time.perf_counter() - sent
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 200:
                latencies.append(elapsed)
            if elapsed > SLOW_S:
                slow.append((sent - start, elapsed))
            idle.append(conn)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as err:
            key = "timeout" if isinstance(err, TimeoutError) else type(err).__name__
            statuses[key] = statuses.get(key, 0) + 1
            if conn is not None:
                conn[1].close()

    await asyncio.gather(*(one(i) for i in range(n)))
    for _, w in idle:
        w.close()
    return {
        "sent": n,
        "ok": len(latencies),
        "latencies": latencies,
        "statuses": statuses,
        "lag_p99_ms": _pct(lags, 99) * 1000 if lags else 0.0,
        "slow": sorted(slow),
    }


SLOW_S = 0.020  # a request slower than this is listed, so that one stall can be told from many small delays


def _stalls(slow: list[list[float]]) -> str:
    """Slow requests grouped into stalls (sent within 100 ms of each other): how many, and the worst."""
    if not slow:
        return ""
    groups: list[list[list[float]]] = []
    for sent, elapsed in slow:
        if groups and sent - groups[-1][-1][0] < 0.1:
            groups[-1].append([sent, elapsed])
        else:
            groups.append([[sent, elapsed]])
    worst = max(groups, key=lambda g: max(e for _, e in g))
    return (
        f"{len(slow)} request(s) over {SLOW_S * 1000:.0f} ms in {len(groups)} stall(s); the worst at "
        f"{worst[0][0]:.2f} s: {len(worst)} request(s), up to {max(e for _, e in worst) * 1000:.0f} ms"
    )


def _cpu_times() -> tuple[int, int]:
    """(steal, total) jiffies of the machine: time the hypervisor gave to other machines shows as steal."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]  # nearest rank


def loadgen_main(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    headers = json.loads(args.headers)
    res = asyncio.run(_loadgen(args.loadgen, args.rate, args.duration, args.timeout, headers))
    print(json.dumps(res))


# --pin: the client side (load generator, mock upstream) on one core and the server under test on the
# other, as when the client runs on another machine; without it all processes share both cores.
CLIENT_CPUS: set[int] | None = None
SERVER_CPUS: set[int] | None = None


def _affinity(cpus: set[int] | None):
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def run_load(url: str, rate: float, duration: float, headers: dict[str, str], timeout: float = 10.0) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--loadgen",
        url,
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--timeout",
        str(timeout),
        "--headers",
        json.dumps(headers),
    ]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=duration + timeout + 60,
        preexec_fn=_affinity(CLIENT_CPUS),
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


# --- servers --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in {timeout}s:\n{log.read_text()[-3000:]}")


def start(
    cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None, cpus: set[int] | None = None
) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        preexec_fn=_affinity(cpus),
    )


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def _cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for path in Path(f"/proc/{pid}/task").glob("*/stat"):
            try:
                fields = path.read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
    return total


def wait_quiet(pids: list[int], limit_s: float = 60.0) -> None:
    """Wait (at most limit_s) until the servers use under 5% of a core, so one run does not load the next."""
    hz = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = _cpu_ticks(pids)
        time.sleep(0.5)
        if (_cpu_ticks(pids) - before) / hz < 0.025:
            return


def ensure_litellm() -> Path | None:
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"installing litellm[proxy] into {LITELLM_VENV} (once; a few minutes) ...", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    r = subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"])
    if r.returncode != 0 or not exe.exists():
        print("could not install litellm[proxy]: the LiteLLM column is left out", flush=True)
        return None
    return exe


# --- the benchmark --------------------------------------------------------------------------------------------


def start_otlp_sink():
    """An OTLP/HTTP collector that accepts every export and discards it (a thread of this process)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[50, 200, 500],
        help="requests/s (50: a rate LiteLLM sustains on one core; 200 and 500: issue 3's)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per target and rate")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--no-litellm", action="store_true")
    p.add_argument(
        "--workers", type=int, default=1, help="proxy worker processes (run once with 1 and once with 2 to compare)"
    )
    p.add_argument(
        "--pin", action="store_true", help="client side on CPU 0, the proxy under test (and LiteLLM) on CPU 1"
    )
    p.add_argument(
        "--otel", action="store_true", help="OTLP export on (spans and metrics), to a local sink that discards them"
    )
    p.add_argument("--loadgen", help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--headers", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.loadgen:
        loadgen_main(args)
        return

    global CLIENT_CPUS, SERVER_CPUS
    if args.pin and (os.cpu_count() or 1) >= 2:
        CLIENT_CPUS, SERVER_CPUS = {0}, {1}
    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        mock_port, proxy_port = free_port(), free_port()
        mock = start(
            [sys.executable, "-m", "bifrost_pipeline.proxy.mock", "--port", str(mock_port)],
            work / "mock.log",
            cwd=ROOT,
            cpus=CLIENT_CPUS,
        )
        procs.append(mock)
        mock_url = f"http://127.0.0.1:{mock_port}"
        wait_http(mock_url + "/health", 30, mock, work / "mock.log")

        landing = work / "landing"
        cfg = work / "proxy.json"
        otel = {}
        if args.otel:
            sink, sink_url = start_otlp_sink()
            otel = {"otel": {"enabled": True, "endpoint": sink_url, "metrics": {"enabled": True, "interval_s": 5}}}
            print(f"OTLP export on, to a discarding sink at {sink_url}")
        cfg.write_text(
            json.dumps(
                {
                    **otel,
                    "providers": {
                        "openai": {
                            "base_url": mock_url + "/v1",
                            "api_key": "sk-bench",
                            "models": ["gpt-4o-mini"],
                        }
                    },
                    "client": {"logging_headers": ["x-tenant-id"]},
                    "proxy": {"require_virtual_key": False},
                    "landing": {"path": str(landing)},
                }
            )
        )
        proxy = start(
            [
                sys.executable,
                "-m",
                "bifrost_pipeline.proxy",
                "--config",
                str(cfg),
                "--port",
                str(proxy_port),
                "--log-level",
                "warning",
                "--workers",
                str(args.workers),
            ],
            work / "proxy.log",
            cwd=ROOT,
            cpus=SERVER_CPUS,
        )
        procs.append(proxy)
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        wait_http(proxy_url + "/health", 30, proxy, work / "proxy.log")

        targets = {"direct (mock)": (mock_url, {}), "bifrost proxy": (proxy_url, {"x-tenant-id": "bench"})}
        litellm_version = None
        if not args.no_litellm:
            exe = ensure_litellm()
            if exe is not None:
                ll_port = free_port()
                (work / "litellm.yaml").write_text(
                    "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n"
                    f"      model: openai/gpt-4o-mini\n      api_base: {mock_url}/v1\n      api_key: sk-bench\n"
                    "litellm_settings:\n  telemetry: false\n"
                )
                ll = start(
                    [
                        str(exe),
                        "--config",
                        str(work / "litellm.yaml"),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(ll_port),
                        "--num_workers",
                        "1",
                    ],
                    work / "litellm.log",
                    env={"LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOG": "ERROR"},
                    cwd=work,
                    cpus=SERVER_CPUS,
                )
                procs.append(ll)
                ll_url = f"http://127.0.0.1:{ll_port}"
                wait_http(ll_url + "/health/liveliness", 120, ll, work / "litellm.log")
                targets["litellm proxy"] = (ll_url, {"authorization": f"Bearer {MASTER_KEY}"})
                v = subprocess.run(
                    [
                        str(LITELLM_VENV / "bin" / "python"),
                        "-c",
                        "import importlib.metadata as m; print(m.version('litellm'))",
                    ],
                    capture_output=True,
                    text=True,
                )
                litellm_version = v.stdout.strip()

        sent_to_proxy = 0
        results: list[tuple[float, str, dict]] = []
        # LiteLLM goes last: past its saturation it keeps working off requests the client already gave up
        # on, which would load the CPU under the next target's run. After each run, wait for quiet.
        plan = [(rate, name) for name in targets if name != "litellm proxy" for rate in args.rates]
        plan += [(rate, "litellm proxy") for rate in args.rates if "litellm proxy" in targets]
        for rate, name in plan:
            url, headers = targets[name]
            warm = run_load(url, min(rate, 100), args.warmup, headers)
            steal0, total0 = _cpu_times()
            res = run_load(url, rate, args.duration, headers)
            steal1, total1 = _cpu_times()
            res["steal_pct"] = 100 * (steal1 - steal0) / max(1, total1 - total0)
            if name == "bifrost proxy":
                sent_to_proxy += warm["sent"] + res["sent"]
            results.append((rate, name, res))
            print(f"  {name:14s} @ {rate:.0f}/s: {res['ok']}/{res['sent']} ok", flush=True)
            wait_quiet([p.pid for p in procs])

        code = stop(proxy)  # graceful: drains the landing queue and publishes every segment
        landed = 0
        slow_inside = 0  # requests whose own record (arrival to last byte sent) says they took over SLOW_S
        for seg in landing.glob("date=*/hour=*/*.ndjson"):
            for line in seg.read_bytes().splitlines():
                if line.strip():
                    landed += 1
                    slow_inside += json.loads(line)["latency_ms"] > SLOW_S * 1000
        parts = list(landing.rglob("*.part"))

        print()
        print(
            f"Proxy benchmark on loopback ({os.cpu_count()} cores), non-streamed chat completion, mock upstream "
            f"with no delay, {args.duration:.0f} s per target and rate, open loop at a fixed rate, "
            f"{args.workers} proxy worker(s)."
        )
        if litellm_version:
            print(f"LiteLLM {litellm_version}, one worker, no database.")
        print()
        header = (
            f"{'rate/s':>6}  {'target':14s} {'ok/sent':>11}  {'p50 ms':>7} {'p99 ms':>7}  "
            f"{'added p50':>9} {'added p99':>9}  {'client lag p99':>14}  {'steal':>5}"
        )
        print(header)
        print("-" * len(header))
        for rate in args.rates:
            rows = [(n, r) for (rt, n, r) in results if rt == rate]
            direct = dict(rows)["direct (mock)"]
            d50, d99 = _pct(direct["latencies"], 50) * 1000, _pct(direct["latencies"], 99) * 1000
            for name, r in rows:
                p50, p99 = _pct(r["latencies"], 50) * 1000, _pct(r["latencies"], 99) * 1000
                added = "" if name.startswith("direct") else f"{p50 - d50:+9.2f} {p99 - d99:+9.2f}"
                print(
                    f"{rate:6.0f}  {name:14s} {r['ok']:>5}/{r['sent']:<5}  {p50:7.2f} {p99:7.2f}  "
                    f"{added:>19}  {r['lag_p99_ms']:11.2f} ms  {r['steal_pct']:4.1f}%"
                )
                other = {k: v for k, v in r["statuses"].items() if k != "200"}
                if other:
                    print(f"{'':8}{'':14} not ok: {other}")
                if r["slow"]:
                    print(f"{'':8}{'':14} {_stalls(r['slow'])}")
        busy = [
            (n, rt)
            for (rt, n, r) in results
            if r["steal_pct"] > 1.0
            or (n == "direct (mock)" and (r["lag_p99_ms"] > 5 or _pct(r["latencies"], 99) * 1000 > 5))
        ]
        print()
        print(f"load average (1 min) at the start {load_start:.2f}, at the end {os.getloadavg()[0]:.2f}")
        print(
            "steal: CPU time the hypervisor gave to other machines during the run; stalls: requests over "
            f"{SLOW_S * 1000:.0f} ms, grouped when sent within 100 ms of each other."
        )
        client_slow = sum(len(r["slow"]) for (_, n, r) in results if n == "bifrost proxy")
        print(
            f"bifrost proxy requests over {SLOW_S * 1000:.0f} ms: {client_slow} seen by the client, {slow_inside} "
            "by the proxy's own records (arrival to last byte sent; the rest of the delay was outside its code)"
        )
        if busy:
            print(
                "WARNING: the machine was busy during this run (steal over 1%, or the direct target's p99 or "
                "the client's lag over 5 ms, in: "
                + ", ".join(f"{n} @ {rt:.0f}/s" for n, rt in busy)
                + "): the p99 figures measure the machine more than the proxy; run it again when nothing "
                "else runs."
            )
        print()
        print(
            f"records landed by the bifrost proxy: {landed} of {sent_to_proxy} requests sent "
            f"({'all landed' if landed == sent_to_proxy else 'MISSING ' + str(sent_to_proxy - landed)}); "
            f"exit status after SIGTERM {code}; .part files left: {len(parts)}"
        )
    finally:
        for proc in reversed(procs):
            stop(proc)
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
