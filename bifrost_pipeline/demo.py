"""`bifrost-pipeline demo`: land sample traffic, materialize every asset for it, show where it went."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

DEMO_KEY = "demo-only-anonymize-key"


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def export_partitions_for_days(app, export, days: list[date], now: datetime) -> list[str]:
    """Complete partitions of `export` whose window overlaps the given UTC days."""
    from bifrost_pipeline.defs.partitions import export_partitions, overlapping_partitions
    from bifrost_pipeline.exports import partition_window

    first = datetime(days[0].year, days[0].month, days[0].day, tzinfo=UTC)
    last = datetime(days[-1].year, days[-1].month, days[-1].day, tzinfo=UTC) + timedelta(days=1)
    keys = overlapping_partitions(export_partitions(app, export), export.schedule, first, last)
    return [k for k in keys if partition_window(export.schedule, k)[1] <= now]


def run_demo(
    config: str | None = None,
    days: int = 3,
    records_per_day: int = 4000,
    seed: int = 7,
    proxy_requests: int = 40,
) -> int:
    if not os.environ.get("BIFROST_ANONYMIZE_KEY"):
        os.environ["BIFROST_ANONYMIZE_KEY"] = DEMO_KEY
        _say("BIFROST_ANONYMIZE_KEY is not set: using a demo key (set your own secret in production).")

    from bifrost_pipeline import landing, sample
    from bifrost_pipeline.config import ConfigError, config_path, load_config

    path = config_path(config).resolve()
    try:
        app = load_config(path)
    except ConfigError as err:
        _say(str(err))
        return 1
    os.environ.setdefault("DAGSTER_HOME", str(path.parent))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)

    today = datetime.now(UTC).date()
    demo_days = [today - timedelta(days=i) for i in range(days, 0, -1)]
    _say(f"== 1. Landing {days} day(s) of sample traffic ({records_per_day} records/day) in {app.landing_dir}")
    for day in demo_days:
        # Re-running the demo replaces its days instead of landing the same records twice.
        shutil.rmtree(app.landing_dir / f"date={day.isoformat()}", ignore_errors=True)
        n = sample.land_day(app.landing_dir, day, records_per_day, seed, bad_lines=3, segments_per_hour=1)
        _say(f"   {day}: {n} lines in {len(landing.list_segments(app.landing_dir, day))} segments")

    if proxy_requests:
        _say(f"== 2. Sending {proxy_requests} requests through the proxy (built-in mock upstream)")
        try:
            from bifrost_pipeline.proxy.demo import send_demo_traffic
        except ImportError:
            _say("   (the proxy is not installed in this checkout; skipped)")
        else:
            landed = send_demo_traffic(app, proxy_requests)
            _say(f"   {landed} record(s) landed by the proxy for {today} (today's partition)")

    return _materialize(app, path, demo_days, today)


def _materialize(app, path: Path, demo_days: list[date], today: date) -> int:
    import dagster as dg

    from bifrost_pipeline.definitions import build_definitions
    from bifrost_pipeline.defs.raw import QUARANTINE, RAW
    from bifrost_pipeline.exports import partition_window, utc_days

    defs = build_definitions(app, str(path))
    instance = dg.DagsterInstance.get()
    now = datetime.now(UTC)
    plan: dict[str, list[str]] = {
        e.name: export_partitions_for_days(app, e, demo_days, now) for e in app.exports
    }
    raw_days = set(demo_days)
    for e in app.exports:
        for key in plan[e.name]:
            raw_days.update(utc_days(*partition_window(e.schedule, key)))
    raw_days.add(today)

    _say(f"== 3. Materializing raw_logs + quarantine for {len(raw_days)} UTC day(s) (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    job = defs.resolve_job_def("raw_logs_job")
    for day in sorted(raw_days):
        started = time.monotonic()
        result = job.execute_in_process(partition_key=day.isoformat(), instance=instance)
        if not result.success:
            _say(f"   {day}: FAILED")
            return 1
        mats = {
            m.asset_key.to_user_string(): m.metadata
            for m in result.asset_materializations_for_node("validate_landed_day")
        }
        raw_meta, q_meta = mats[RAW.to_user_string()], mats[QUARANTINE.to_user_string()]
        _say(
            f"   {day}: {raw_meta['valid_rows'].value} valid, {q_meta['dagster/row_count'].value} quarantined "
            f"({time.monotonic() - started:.1f}s)"
        )

    _say("== 4. Materializing the exports")
    for e in app.exports:
        job = defs.resolve_job_def(f"{e.asset_name}_job")
        for key in plan[e.name]:
            result = job.execute_in_process(partition_key=key, instance=instance)
            if not result.success:
                _say(f"   {e.name} {key}: FAILED")
                return 1
            meta = result.asset_materializations_for_node(e.asset_name)[0].metadata
            _say(f"   {e.name} {key}: {meta['rows'].value} -> {meta['location'].value}")
        if not plan[e.name]:
            _say(f"   {e.name}: no complete {e.schedule.frequency} window in the demo days yet")

    _say("== 5. Outputs")
    _say(f"   raw_logs:   {app.raw_dir}")
    _say(f"   quarantine: {app.quarantine_dir}")
    for e in app.exports:
        _say(f"   {e.name}: {e.destination.type} -> {_describe(app, e)}")
    _analyst_query(app)
    _say("")
    _say("Open the Dagster UI on this state with:  make dev   (then http://127.0.0.1:3000)")
    return 0


def _describe(app, export) -> str:
    from bifrost_pipeline.exports import make_destination

    return make_destination(app, export).describe()


def _analyst_query(app) -> None:
    import duckdb

    from bifrost_pipeline.destinations.base import table_for

    warehouse = [e for e in app.exports if e.destination.type == "duckdb"]
    if not warehouse or not app.warehouse_path.exists():
        return
    e = warehouse[0]
    table = table_for(e.destination.config.table or e.name, "request_logs")
    query = f"""
        SELECT customer_id,
               count(*)                                   AS requests,
               round(sum(cost_usd), 4)                    AS cost_usd,
               round(quantile_cont(latency_ms, 0.95))     AS p95_latency_ms,
               round(avg((status = 'error')::INT), 4)     AS error_rate
        FROM {table}
        GROUP BY customer_id
        ORDER BY cost_usd DESC
        LIMIT 5"""
    _say(f"== 6. Analyst query on the DuckDB warehouse ({app.warehouse_path}):")
    _say("   " + " ".join(line.strip() for line in query.strip().splitlines()))
    con = duckdb.connect(str(app.warehouse_path), read_only=True)
    try:
        rel = con.sql(query)
        _say(str(rel))
    finally:
        con.close()
