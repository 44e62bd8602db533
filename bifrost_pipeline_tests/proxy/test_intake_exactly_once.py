"""End to end: a sender that retries after a timeout never creates duplicates in the exports.

The gateway POSTs a batch to /v1/logs, the answer is lost, it sends the same batch again: both copies
land, raw_logs keeps each request once and counts the copies it dropped, and the export into the embedded
DuckDB warehouse holds every request exactly once (its completeness check agrees)."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import httpx
import yaml

from bifrost_pipeline.config import load_config
from bifrost_pipeline.definitions import build_definitions
from bifrost_pipeline.defs.raw import RAW, RAW_JOB

from .conftest import canonical_record, landed, start_proxy, wait_for, write_config

DAY = "2026-03-04"


def test_a_batch_resent_after_a_lost_answer_is_exported_once(tmp_path, mock_upstream, log_dir):
    landing = tmp_path / "landing"
    proxy = start_proxy("proxy-resend", write_config(tmp_path / "proxy.json", landing, mock_upstream.url), log_dir)
    try:
        batch = [canonical_record(timestamp=f"{DAY}T{h:02d}:15:00Z") for h in (1, 5, 5, 13, 23)]
        body = "\n".join(json.dumps(r) for r in batch).encode()
        for _ in range(2):  # the first answer is "lost": the sender cannot know the batch landed, and resends it
            r = httpx.post(proxy.url + "/v1/logs", content=body, headers={"content-type": "application/x-ndjson"})
            assert r.status_code == 200 and r.json()["accepted"] == len(batch)
        ids = {r["request_id"] for r in batch}
        wait_for(lambda: sum(r["request_id"] in ids for r in landed(landing)) == 2 * len(batch), 10, "both copies")
    finally:
        proxy.stop()

    config = tmp_path / "bifrost_pipeline.yaml"
    export = {
        "name": "daily_wh",
        "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
        "destination": {"type": "duckdb", "config": {"table": "requests"}},
        "data": {"include": ["request_logs"]},
    }
    config.write_text(
        yaml.safe_dump(
            {
                "log_exports": {"exports": [export]},
                "landing": {"path": str(landing)},
                "pipeline": {"data_dir": "data", "start_date": "2026-03-01", "export_retries": 0},
            }
        )
    )
    app = load_config(config)
    defs = build_definitions(app, str(config))
    instance = dg.DagsterInstance.ephemeral()

    raw = defs.resolve_job_def(RAW_JOB).execute_in_process(partition_key=DAY, instance=instance)
    [mat] = [m for m in raw.asset_materializations_for_node("validate_landed_day") if m.asset_key == RAW]
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert (meta["lines_read"], meta["valid_rows"], meta["duplicates_dropped"]) == (10, 5, 5)
    assert meta["duplicates_differing"] == 0  # the same batch: identical copies
    assert all(c.passed for c in raw.get_asset_check_evaluations() if c.check_name != "quarantine_share_below_threshold")

    exported = defs.resolve_job_def("export_daily_wh_job").execute_in_process(partition_key=DAY, instance=instance)
    [check] = exported.get_asset_check_evaluations()
    assert check.passed and check.metadata["datasets"].value["request_logs"]["at_destination"] == 5
    with duckdb.connect(str(app.warehouse_path), read_only=True) as con:
        counts = dict(con.execute("SELECT request_id, count(*) FROM requests GROUP BY request_id").fetchall())
    assert counts == dict.fromkeys(ids, 1)
