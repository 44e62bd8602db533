"""`bifrost-pipeline demo`: land sample traffic, materialize every asset for it, show where it went."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bifrost_pipeline.backfill import UI

# The fallback key of bifrost_pipeline.yaml's `key: "${BIFROST_ANONYMIZE_KEY:-demo-only-anonymize-key}"`.
DEMO_KEY = "demo-only-anonymize-key"
# The global asset graph of `make dev`'s UI with the three asset groups (ingest, pipeline, exports) expanded.
LINEAGE_URL = f"{UI}/asset-groups?expanded=global@global:ingest,global@global:pipeline,global@global:exports"


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def demo_key_note(app) -> str | None:
    """A warning when an export hashes ids with the demo key (public, so its hashes can be reversed)."""
    from bifrost_pipeline.config import Anonymize

    names = [
        e.name
        for e in app.exports
        for t in e.data.transformations
        if isinstance(t, Anonymize) and t.key is not None and t.key.get_secret_value() == DEMO_KEY
    ]
    if not names:
        return None
    return (
        f"BIFROST_ANONYMIZE_KEY is not set: the ids of {', '.join(dict.fromkeys(names))} are hashed with the "
        "demo key; export your own secret in BIFROST_ANONYMIZE_KEY before exporting real data"
    )


def run_demo(
    config: str | None = None,
    days: int = 3,
    records_per_day: int = 4000,
    seed: int = 7,
    proxy_requests: int = 40,
) -> int:
    from bifrost_pipeline import landing, sample
    from bifrost_pipeline.config import ConfigError, config_path, load_config

    path = config_path(config).resolve()
    try:
        app = load_config(path)
    except ConfigError as err:
        _say(str(err))
        return 1
    note = demo_key_note(app)
    if note:
        _say(f"note: {note}")

    today = datetime.now(UTC).date()
    demo_days = [today - timedelta(days=i) for i in range(days, 0, -1)]
    _say(f"== Landing {days} day(s) of sample traffic ({records_per_day} records/day) in {app.landing_dir}")
    for day in demo_days:
        # Re-running the demo replaces its days instead of landing the same records twice.
        shutil.rmtree(app.landing_dir / f"date={day.isoformat()}", ignore_errors=True)
        n = sample.land_day(app.landing_dir, day, records_per_day, seed, bad_lines=3, segments_per_hour=1)
        _say(f"   {day}: {n} lines in {len(landing.list_segments(app.landing_dir, day))} segments")

    if proxy_requests:
        _say(f"== Sending {proxy_requests} requests through the proxy (built-in mock upstream)")
        try:
            from bifrost_pipeline.proxy.demo import send_demo_traffic
        except ImportError:
            _say("   (the proxy is not installed in this checkout; skipped)")
        else:
            landed = send_demo_traffic(app, proxy_requests)
            _say(f"   {landed} record(s) landed by the proxy for {today} (today's partition)")

    return _materialize(app, path, demo_days, today)


def _materialize(app, path: Path, demo_days: list[date], today: date) -> int:
    from bifrost_pipeline.backfill import backfill

    if not backfill(app, path, demo_days + [today]):
        return 1
    _say("== Outputs")
    _say(f"   raw_logs:   {app.raw_dir}")
    _say(f"   quarantine: {app.quarantine_dir}")
    for e in app.exports:
        _say(f"   {e.name}: {e.destination.type} -> {_describe(app, e)}")
    _analyst_query(app)
    _say("")
    _say(f"Open the Dagster UI on this state with `make dev`, then {UI}; the lineage of every asset: {LINEAGE_URL}")
    return 0


def _describe(app, export) -> str:
    from bifrost_pipeline.exports import make_destination

    return make_destination(app, export).describe()


def _analyst_query(app) -> None:
    import duckdb

    from bifrost_pipeline.destinations.warehouse import table_for

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
    _say(f"== Analyst query on the DuckDB warehouse ({app.warehouse_path}):")
    _say("   " + " ".join(query.split()))
    con = duckdb.connect(str(app.warehouse_path), read_only=True)
    try:
        rel = con.sql(query)
        _say(str(rel))
    finally:
        con.close()
