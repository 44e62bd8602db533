"""Materialize a range of days in order, in this process: raw_logs + quarantine for every UTC day
needed, then every export partition whose window overlaps the days and has ended.

Used by `bifrost-pipeline backfill` and the demo. (In a deployment, Dagster's own backfills from the UI or
`dagster job backfill` do the same through the daemon.)

The terminal gets one line per run and a summary; Dagster's own log of each run (every event, DEBUG
included, and the assets' log lines) goes only to the instance's event log, which the UI shows.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TextIO

from bifrost_pipeline import backfill_plans
from bifrost_pipeline.config import AppConfig, ExportConfig

UI = "http://127.0.0.1:3000"  # `make dev`'s Dagster UI
UI_RUNS = f"{UI}/runs"
# The console logger of each in-process run only passes what is critical; the event log keeps everything.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
DOT_EVERY_S = 10.0  # a run that takes longer shows a dot per interval, so long work visibly progresses


def export_partitions_for_days(app: AppConfig, export: ExportConfig, days: list[date], now: datetime) -> list[str]:
    """Partitions of `export` whose window overlaps the given UTC days and has ended by `now`."""
    from bifrost_pipeline.defs.partitions import export_partitions, overlapping_partitions
    from bifrost_pipeline.windows import partition_window

    first = datetime(days[0].year, days[0].month, days[0].day, tzinfo=UTC)
    last = datetime(days[-1].year, days[-1].month, days[-1].day, tzinfo=UTC) + timedelta(days=1)
    partitions = export_partitions(app, export)
    # Dagster also lists the window that contains start_date though it is no partition: keep real ones.
    first_key = partitions.get_first_partition_key()
    keys = overlapping_partitions(partitions, export.schedule, first, last)
    return [k for k in keys if first_key and k >= first_key and partition_window(export.schedule, k)[1] <= now]


@contextmanager
def _progress_line(label: str, out: TextIO) -> Iterator[Callable[[str], None]]:
    """Print `label`, a dot every DOT_EVERY_S while the body runs, then the line's end given to `finish`."""
    out.write(label + " ")
    out.flush()
    done = threading.Event()

    def dots() -> None:
        while not done.wait(DOT_EVERY_S):
            out.write(".")
            out.flush()

    ticker = threading.Thread(target=dots, daemon=True)
    ticker.start()
    ending: list[str] = []
    try:
        yield ending.append
    finally:
        done.set()
        ticker.join()
        out.write(" " + (ending[0] if ending else "interrupted") + "\n")
        out.flush()


def _failure(result) -> str:
    failure = next((ev for ev in result.all_events if ev.is_step_failure), None)
    message = failure.step_failure_data.error.message.strip() if failure else "the run failed"
    return f"FAILED: {message} (Dagster's log of the run: {UI_RUNS}/{result.run_id})"


def _meta(result, node: str) -> dict:
    """Asset key -> metadata values of what `node` materialized."""
    return {
        m.asset_key: {k: v.value for k, v in m.metadata.items()} for m in result.asset_materializations_for_node(node)
    }


def backfill(app: AppConfig, config_file: Path, days: list[date], *, out: TextIO | None = None) -> bool:
    """Run the raw days then the export partitions; one line per run on `out` (default stdout)."""
    import dagster as dg

    from bifrost_pipeline.definitions import build_definitions
    from bifrost_pipeline.windows import partition_window, utc_days

    out = out or sys.stdout
    os.environ.setdefault("DAGSTER_HOME", str(config_file.parent))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    days = sorted(set(days))
    defs = build_definitions(app, str(config_file))
    instance = dg.DagsterInstance.get()
    now = datetime.now(UTC)
    plan = {e.name: export_partitions_for_days(app, e, days, now) for e in app.exports}
    raw_days = set(days)
    widened_by: dict[str, list[str]] = {}  # export -> its partitions that read days outside --from/--to
    for e in app.exports:
        for key in plan[e.name]:
            needed = set(utc_days(*partition_window(e.schedule, key)))
            if needed - set(days):
                widened_by.setdefault(e.name, []).append(key)
            raw_days |= needed
    # raw_logs partitions run from pipeline.start_date to today (UTC); an export window in another zone can
    # also start on the UTC day before start_date.
    outside = sorted(d for d in days if not app.partitions_start <= d <= now.date())
    raw_days = {d for d in raw_days if app.partitions_start <= d <= now.date()}

    started = time.monotonic()
    if outside:
        print(f"   skipped {len(outside)} day(s) outside raw_logs' partitions ({app.partitions_start} to today): "
              f"{outside[0]}..{outside[-1]}", file=out)
    print(f"== raw_logs + quarantine: {len(raw_days)} UTC day(s) (Dagster instance: {os.environ['DAGSTER_HOME']})",
          file=out, flush=True)
    extra = sorted(raw_days - set(days))
    if extra:
        why = "; ".join(f"{name} {', '.join(keys)}" for name, keys in widened_by.items())
        print(f"   widened to {min(raw_days)}..{max(raw_days)}: {len(extra)} more day(s) that the export "
              f"partitions overlapping your days also read ({why})", file=out, flush=True)
    exports = [(e, key) for e in app.exports for key in plan[e.name]]
    # announced, so that raw_logs_updated_sensor does not start these export partitions meanwhile
    with backfill_plans.announced(instance, [(f"{e.asset_name}_job", key) for e, key in exports]) as announced:
        if not _raw_days(defs, instance, sorted(raw_days), out, announced):
            return False
        print(f"== exports: {len(exports)} partition(s)", file=out, flush=True)
        for e in app.exports:
            if not plan[e.name]:
                print(f"   {e.name}: no {e.schedule.frequency} partition overlaps these days and has ended", file=out)
        if not _exports(defs, instance, exports, out, announced):
            return False
    print(
        f"== done in {time.monotonic() - started:.0f}s: {len(raw_days)} raw_logs run(s), {len(exports)} export "
        f"run(s); each run's Dagster log is in the UI (make dev, then {UI_RUNS})",
        file=out, flush=True,
    )
    return True


def _raw_days(defs, instance, days: list[date], out: TextIO, announced: backfill_plans.Plan) -> bool:
    from bifrost_pipeline.defs.raw import QUARANTINE, RAW, RAW_JOB

    job = defs.resolve_job_def(RAW_JOB)
    for i, day in enumerate(days, 1):
        t0 = time.monotonic()
        with _progress_line(f"   [{i}/{len(days)}] {day}", out) as finish:
            result = job.execute_in_process(
                partition_key=day.isoformat(), instance=instance, raise_on_error=False, run_config=QUIET_RUN_CONFIG,
                tags={backfill_plans.TAG: announced.id},
            )
            if not result.success:
                finish(_failure(result))
                return False
            meta = _meta(result, "validate_landed_day")
            dropped = meta[RAW].get("duplicates_dropped")
            finish(
                f"{meta[RAW].get('valid_rows')} valid, {meta[QUARANTINE].get('dagster/row_count')} quarantined"
                + (f", {dropped} duplicate(s) dropped" if dropped else "")
                + f" ({time.monotonic() - t0:.1f}s)"
            )
    return True


def _exports(
    defs, instance, exports: list[tuple[ExportConfig, str]], out: TextIO, announced: backfill_plans.Plan
) -> bool:
    import dagster as dg

    for i, (e, key) in enumerate(exports, 1):
        t0 = time.monotonic()
        with _progress_line(f"   [{i}/{len(exports)}] {e.name} {key}", out) as finish:
            job = f"{e.asset_name}_job"
            result = defs.resolve_job_def(job).execute_in_process(
                partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET_RUN_CONFIG,
                tags={backfill_plans.TAG: announced.id},
            )
            announced.done(job, key)
            if not result.success:
                finish(_failure(result))
                return False
            meta = _meta(result, e.asset_name)[dg.AssetKey(e.asset_name)]
            failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
            if failed:  # written, but the destination does not hold what was selected: say so, and stop
                finish("CHECK FAILED: " + "; ".join(_check_text(c) for c in failed))
                return False
            finish(f"{_rows(meta)} -> {meta.get('location')} ({time.monotonic() - t0:.1f}s)")
    return True


def _check_text(check) -> str:
    mismatch = check.metadata.get("mismatch") or check.metadata.get("error")
    return f"{check.check_name}" + (f" ({mismatch.value})" if mismatch else "")


def _rows(meta: dict) -> str:
    """The records exported and each dataset's rows (a total over datasets would count a record twice)."""
    if meta.get("empty"):
        return "no records in this window"
    datasets = ", ".join(f"{key.split('/', 1)[1]} {n}" for key, n in meta.items() if key.startswith("rows/"))
    return f"{meta.get('dagster/row_count')} record(s) ({datasets or 'no datasets'})"
