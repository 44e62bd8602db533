"""landing_zone (external) -> raw_logs + quarantine, one UTC day per partition, with their checks."""


import json
from datetime import date

import dagster as dg
import polars as pl

from bifrost_pipeline import records
from bifrost_pipeline.config import AppConfig
from bifrost_pipeline.defs.partitions import raw_partitions
from bifrost_pipeline.defs.resources import PipelineConfig
from bifrost_pipeline.validation import DayResult, validate_day

LANDING = dg.AssetKey("landing_zone")
RAW = dg.AssetKey("raw_logs")
QUARANTINE = dg.AssetKey("quarantine")

CHECK_UNIQUE = "unique_request_id"
CHECK_IN_PARTITION = "timestamps_in_partition"
CHECK_SCHEMA = "conforms_to_schema"
CHECK_QUARANTINE = "quarantine_share_below_threshold"


def landing_spec(app: AppConfig) -> dg.AssetSpec:
    return dg.AssetSpec(
        LANDING,
        description=(
            "NDJSON segments landed by the ingestion proxy or intake endpoints, under "
            "date=YYYY-MM-DD/hour=HH/ (UTC). Written elsewhere; the pipeline only reads it."
        ),
        group_name="ingest",
        partitions_def=raw_partitions(app),
        metadata={"path": dg.MetadataValue.path(str(app.landing_root))},
        kinds={"file"},
    )


def day_metadata(result: DayResult) -> dict:
    return {
        "segments": result.segments,
        "bytes_read": result.bytes_read,
        "lines": result.lines,
        "valid_rows": result.valid_rows,
        "quarantined_rows": result.quarantined_rows,
        "blank_lines": result.blank_lines,
        "quarantine_share": float(round(result.quarantine_share, 6)),
        "newest_segment_mtime": float(result.newest_segment_mtime or 0.0),
    }


def _checks(app: AppConfig, day: date, result: DayResult) -> list[dg.AssetCheckResult]:
    lf = pl.scan_parquet(result.raw_path)
    stats = lf.select(
        pl.len().alias("rows"),
        pl.col("request_id").n_unique().alias("unique_ids"),
        (pl.col("timestamp").dt.date() != pl.lit(day)).sum().alias("outside"),
    ).collect()
    rows, unique_ids, outside = stats.row(0)
    duplicates = rows - unique_ids
    schema_errors = _schema_errors(result)
    share = result.quarantine_share
    limit = app.pipeline.quarantine_max_share
    return [
        dg.AssetCheckResult(
            asset_key=RAW,
            check_name=CHECK_UNIQUE,
            passed=duplicates == 0,
            metadata={"duplicate_rows": int(duplicates)},
        ),
        dg.AssetCheckResult(
            asset_key=RAW,
            check_name=CHECK_IN_PARTITION,
            passed=outside == 0,
            metadata={"rows_outside_day": int(outside)},
        ),
        dg.AssetCheckResult(
            asset_key=RAW,
            check_name=CHECK_SCHEMA,
            passed=not schema_errors,
            metadata={"failures": dg.MetadataValue.json(schema_errors[:20])},
        ),
        dg.AssetCheckResult(
            asset_key=RAW,
            check_name=CHECK_QUARANTINE,
            passed=share <= limit,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"quarantine_share": float(round(share, 6)), "threshold": float(limit)},
        ),
    ]


def _schema_errors(result: DayResult) -> list[dict]:
    """Validate the written Parquet against the pandera schema derived from schemas/, row group by row group."""
    import pandera.errors
    import pyarrow.parquet as pq

    schema = records.pandera_schema()
    failures: list[dict] = []
    for part in sorted(result.raw_path.glob("*.parquet")):
        pf = pq.ParquetFile(part)
        for i in range(pf.num_row_groups):
            frame = pl.from_arrow(pf.read_row_group(i))
            try:
                schema.validate(frame, lazy=True)
            except pandera.errors.SchemaErrors as err:
                cases = err.failure_cases.head(20).to_dicts()
                failures.extend({k: str(v) for k, v in c.items()} for c in cases)
            if len(failures) >= 20:
                return failures
    return failures


def build_raw_assets(app: AppConfig) -> dg.AssetsDefinition:
    partitions = raw_partitions(app)

    @dg.multi_asset(
        name="validate_landed_day",
        specs=[
            dg.AssetSpec(
                RAW,
                deps=[LANDING],
                description=(
                    "Every landed record of one UTC day that passed validation against schemas/, "
                    "typed (a directory of Parquet parts per day)."
                ),
                group_name="pipeline",
                kinds={"parquet", "polars"},
            ),
            dg.AssetSpec(
                QUARANTINE,
                deps=[LANDING],
                description="Landed lines that failed validation: segment, line, reason and the raw text.",
                group_name="pipeline",
                kinds={"parquet"},
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(CHECK_UNIQUE, asset=RAW, description="No request_id twice within the day."),
            dg.AssetCheckSpec(CHECK_IN_PARTITION, asset=RAW, description="Every timestamp is inside the day."),
            dg.AssetCheckSpec(CHECK_SCHEMA, asset=RAW, description="Rows conform to the pandera schema of schemas/."),
            dg.AssetCheckSpec(
                CHECK_QUARANTINE,
                asset=RAW,
                description="Quarantined share of the day's records is under pipeline.quarantine_max_share.",
            ),
        ],
        partitions_def=partitions,
        op_tags={"bifrost/stage": "validate"},
    )
    def validate_landed_day(context: dg.AssetExecutionContext, pipeline: PipelineConfig):
        app_cfg = pipeline.app()
        day = date.fromisoformat(context.partition_key)
        result = validate_day(app_cfg, day)
        context.log.info(
            f"{day}: {result.valid_rows} valid, {result.quarantined_rows} quarantined "
            f"from {result.segments} segment(s)"
        )
        meta = day_metadata(result)
        yield dg.MaterializeResult(
            asset_key=RAW,
            metadata={
                **meta,
                "dagster/row_count": result.valid_rows,
                "path": dg.MetadataValue.path(str(result.raw_path)),
            },
        )
        yield dg.MaterializeResult(
            asset_key=QUARANTINE,
            metadata={
                "dagster/row_count": result.quarantined_rows,
                "reasons": dg.MetadataValue.json(dict(result.reasons.most_common(50))),
                "path": dg.MetadataValue.path(str(result.quarantine_path)),
            },
        )
        yield from _checks(app_cfg, day, result)

    return validate_landed_day


def recorded_landing_state(instance: dg.DagsterInstance, day: str) -> tuple[int, float] | None:
    """(segments, newest segment mtime) that the latest raw_logs materialization of `day` had read."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW, asset_partitions=[day]), limit=1
    )
    if not result.records:
        return None
    meta = result.records[0].asset_materialization.metadata
    segments = meta.get("segments")
    newest = meta.get("newest_segment_mtime")
    if segments is None or newest is None:
        return None
    return int(segments.value), float(newest.value)


def landing_state(app: AppConfig, day: date) -> tuple[int, float]:
    from bifrost_pipeline import landing

    segs = landing.list_segments(app.landing_root, day, app.landing.storage_options)
    return len(segs), max((s.mtime for s in segs), default=0.0)


def describe_state(state: tuple[int, float] | None) -> str:
    return json.dumps({"segments": state[0], "newest_mtime": state[1]}) if state else "never"
