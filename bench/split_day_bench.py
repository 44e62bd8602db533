"""A day too big for one step: raw_logs of one UTC day validated as one step vs split by hour.

    python bench/split_day_bench.py                      # 1M records (about 1.5 GB of NDJSON)
    python bench/split_day_bench.py --records 200K --groups 2,4
    python bench/split_day_bench.py --step-cores 1       # each step held to one core's threads, as a pod

The same landed day (pipeline_bench's generator, segments spread over the 24 hours) is materialized by
the raw_logs job as Dagster runs it: a reconstructable code location, a persistent instance and the
multiprocess executor, with pipeline.hour_groups = 1 (one step), then 2, 4, ... (one step per group of
hours, as many at once as there are cores, then the combine step). `validate_day` called directly, without
Dagster, is the reference, and so is the split without Dagster (validate_hours in a pool of one
process per core, then combine_day): the gain of the split itself, apart from what Dagster's step
processes cost. Each side runs in its own process tree; we print wall time, records/s, the
speedup over one step, and peak RSS: of the largest process and of all processes together (sampled every
50 ms from /proc), since parallel steps add up on one machine. Every side must produce the same rows.

A step of `validate_day` already keeps about 1.6 cores busy (Polars' threads), so on a 2-core machine the
split has little left to win. ``--step-cores 1`` holds every process of every side to one core's worth of
threads (POLARS_MAX_THREADS, and OMP_NUM_THREADS for pyarrow), as a cluster's pods with ``cpu: 1`` each
are: then one step uses one core and N steps use N, which is what splitting a day across pods buys.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pipeline_bench import DAY, land, parse_count  # noqa: E402  (bench/ is not a package)

BYTES_PER_RECORD = 1_500  # about, for pipeline_bench's records with content: sizes the segments


def write_config(work: Path, groups: int) -> Path:
    import yaml

    path = work / f"bifrost_pipeline-{groups}.yaml"
    pipeline = {"data_dir": "data", "start_date": DAY.isoformat(), "hour_groups": groups}
    path.write_text(yaml.safe_dump({"landing": {"path": "landing"}, "pipeline": pipeline}))
    return path


def child(side: str, config: Path) -> None:
    """One measured side, in its own process: prints a JSON line."""
    import resource

    from bifrost_pipeline.config import load_config

    app = load_config(config)
    t0 = time.perf_counter()
    if side == "direct":
        from bifrost_pipeline import validation

        if app.pipeline.hour_groups == 1:
            validation.validate_day(app, DAY)
        else:
            split_directly(app)
    else:
        run_job(config)
    seconds = time.perf_counter() - t0
    import polars as pl

    from bifrost_pipeline import validation

    rows = pl.scan_parquet(validation.raw_path(app, DAY)).select(pl.len()).collect().item()
    largest = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(json.dumps({"seconds": seconds, "rows": rows, "largest_rss_mb": largest / 1024}))


def split_directly(app) -> None:
    """The split without Dagster: the hour groups in a pool of one process per core, then the combine."""
    from concurrent.futures import ProcessPoolExecutor

    from bifrost_pipeline import validation

    root = validation.split_stage_dir(app, DAY, "bench")
    groups = validation.hour_groups(app.pipeline.hour_groups)
    stages = [root / validation.hours_label(hours) for hours in groups]
    with ProcessPoolExecutor(max_workers=min(len(groups), os.cpu_count() or 1)) as pool:
        list(pool.map(validation.validate_hours, [app] * len(groups), [DAY] * len(groups), groups, stages))
    validation.combine_day(app, DAY, stages)
    shutil.rmtree(root)


def run_job(config: Path) -> None:
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from bifrost_pipeline.defs.raw import RAW_JOB

    os.environ["BIFROST_PIPELINE_CONFIG"] = str(config)  # the step processes load the code location from it
    recon = ReconstructableRepository.for_module("bifrost_pipeline.definitions", "defs").get_reconstructable_job(RAW_JOB)
    home = config.parent / f"dagster_home-{config.stem}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = dg.execute_job(recon, instance=instance, tags={"dagster/partition": DAY.isoformat()})
        if not result.success:
            raise SystemExit(f"the raw_logs run failed: {config}")


class TreeRss:
    """Peak of the summed RSS of a process and its descendants, sampled from /proc."""

    def __init__(self, pid: int, every: float = 0.05):
        self.pid, self.every, self.peak = pid, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 1024  # MB

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, sum(_rss_kb(p) for p in _tree(self.pid)))


def _tree(root: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(p for p, ppid in parents.items() if ppid == pid)
    return out


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(side: str, config: Path, step_cores: int | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    if step_cores:  # inherited by every step process the side starts
        env |= {"POLARS_MAX_THREADS": str(step_cores), "OMP_NUM_THREADS": str(step_cores)}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", side, "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    sampler = TreeRss(proc.pid)
    out, err = proc.communicate()
    tree_mb = sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{side} ({config.name}) failed:\n{err[-4000:]}")
    return {**json.loads(out.strip().splitlines()[-1]), "tree_rss_mb": tree_mb}


def warm(landing: Path) -> None:
    """Read the landed day once so that every side finds it in the page cache (none pays the first read)."""
    for path in sorted(landing.rglob("*.ndjson")):
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", default="1M", help="records in the day, e.g. 200K, 1M")
    parser.add_argument("--groups", default="2,4", help="hour groups to compare with one step, e.g. 2,4,8")
    parser.add_argument("--work", type=Path, default=HERE / "out" / "split_day")
    parser.add_argument("--keep", action="store_true", help="keep the landed day for another run")
    parser.add_argument("--step-cores", type=int, help="threads of each process (POLARS_MAX_THREADS), as a pod's CPU limit")
    parser.add_argument("--child", choices=["direct", "job"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    if args.child:
        child(args.child, args.config)
        return

    n = parse_count(args.records)
    work = args.work.resolve()
    marker = work / f"landed-{n}.json"
    if not marker.exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        t = time.perf_counter()
        # at least two segments per hour: each hour group gets a fair share of the day
        written, size = land(work / "landing", n, segment_bytes=max(1 << 20, n * BYTES_PER_RECORD // 48))
        marker.write_text(json.dumps({"records": written, "bytes": size}))
        print(f"landed {written:,} records, {size / 1e9:.2f} GB NDJSON in {time.perf_counter() - t:.0f}s (not timed)")
    landed = json.loads(marker.read_text())
    warm(work / "landing")

    sides = [("validate_day, no Dagster", "direct", 1), ("1 step (hour_groups: 1)", "job", 1)]
    groups = [int(x) for x in args.groups.split(",")]
    sides += [(f"{g} hour groups, Dagster", "job", g) for g in groups]
    sides += [(f"{g} hour groups, no Dagster", "direct", g) for g in groups]
    results = []
    for label, side, groups in sides:
        shutil.rmtree(work / "data", ignore_errors=True)
        results.append((label, measure(side, write_config(work, groups), args.step_cores)))
    rows = {r["rows"] for _, r in results}
    assert len(rows) == 1, f"the sides wrote different days: {[(label, r['rows']) for label, r in results]}"

    recs = landed["records"]
    one_step = results[1][1]["seconds"]
    held = f", each process held to {args.step_cores} core(s) of threads" if args.step_cores else ""
    print(f"\n{recs:,} records, {landed['bytes'] / 1e9:.2f} GB NDJSON, {os.cpu_count()} cores{held}, {rows.pop():,} rows in raw_logs")
    print(f"{'':30}{'seconds':>9}{'records/s':>12}{'vs 1 step':>11}{'RSS MB, all':>13}{'RSS MB, largest':>17}")
    for label, r in results:
        print(
            f"{label:30}{r['seconds']:>9.1f}{recs / r['seconds']:>12,.0f}{one_step / r['seconds']:>10.2f}x"
            f"{r['tree_rss_mb']:>13,.0f}{r['largest_rss_mb']:>17,.0f}"
        )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
