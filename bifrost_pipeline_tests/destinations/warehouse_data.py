"""A small fixed data set (two days of request logs), an aggregate-shaped dataset, and a million-row file,
as hand-built `PartitionOutput`s, plus the expected answers of the analyst queries of docs/warehouses.md."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bifrost_pipeline import records
from bifrost_pipeline.destinations.base import DatasetFile, PartitionOutput

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "warehouses.md"
DAYS = ("2024-01-15", "2024-01-16")
JSON_COLUMNS = ("metadata", "input_content", "output_content", "attributes")


def day_records(day: str) -> list[dict]:
    """Ten requests on `day`: two customers, two providers, two errors; latency and cost grow with i."""
    d0 = datetime.fromisoformat(day).replace(hour=10, tzinfo=UTC)
    shift = (date.fromisoformat(day) - date.fromisoformat(DAYS[0])).days
    out = []
    for i in range(10):
        provider = "openai" if i < 6 else "anthropic"
        error = i in (3, 7)
        out.append(
            {
                "schema_version": "1",
                "timestamp": d0 + timedelta(minutes=i),
                "ended_at": d0 + timedelta(minutes=i, seconds=1),
                "request_id": f"req_{day}_{i}",
                "customer_id": "cust_a" if i % 2 == 0 else "cust_b",
                "provider": provider,
                "model": "gpt-4" if provider == "openai" else "claude-3-sonnet",
                "endpoint": "/v1/chat/completions",
                "method": "POST",
                "request_type": "chat",
                "stream": i % 3 == 0,
                "status": "error" if error else "success",
                "status_code": 500 if error else 200,
                "error_type": "upstream_error" if error else None,
                "latency_ms": 100 * (i + 1) + 10 * shift,
                "input_tokens": 10 * (i + 1),
                "output_tokens": None if error else 20 * (i + 1),
                "total_tokens": 10 * (i + 1) + (0 if error else 20 * (i + 1)),
                "cost_usd": round(0.001 * (i + 1), 6),
                "metadata": f'{{"team": "t{i % 2}", "env": "prod"}}' if i % 4 else None,
                "input_content": f'{{"messages": [{{"role": "user", "content": "hi {i}"}}]}}',
                "output_content": None,
            }
        )
    return out


def records_table(rows: list[dict], extra: dict[str, pa.Array] | None = None) -> pa.Table:
    schema = records.arrow_schema()
    full = [{f.name: r.get(f.name) for f in schema} for r in rows]
    table = pa.Table.from_pylist(full, schema=schema)
    for name, values in (extra or {}).items():
        table = table.append_column(name, values)
    return table


def dataset_file(table: pa.Table, dataset: str, work: Path) -> DatasetFile:
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{dataset}.parquet"
    pq.write_table(table, path, row_group_size=100_000)
    return DatasetFile(
        dataset=dataset,
        path=path,
        file_name=path.name,
        rows=table.num_rows,
        bytes=path.stat().st_size,
        sha256="",
        parquet_path=path,
        columns=tuple((f.name, str(f.type)) for f in table.schema),
        json_columns=tuple(c for c in JSON_COLUMNS if c in table.schema.names),
    )


def partition(export: str, day: str, files: list[DatasetFile], run_id: str = "run-1") -> PartitionOutput:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return PartitionOutput(
        export=export,
        partition_key=day,
        window_start=start,
        window_end=start + timedelta(days=1),
        format="parquet",
        compression="zstd",
        files=tuple(files),
        exported_at=datetime.now(UTC),
        run_id=run_id,
    )


def day_partition(export: str, day: str, work: Path, *, with_region: bool = False) -> PartitionOutput:
    rows = day_records(day)
    extra = {"region": pa.array(["eu-west-1"] * len(rows))} if with_region else None
    return partition(export, day, [dataset_file(records_table(rows, extra), "request_logs", work / day)])


def aggregate_table() -> pa.Table:
    """What an `aggregate` transformation outputs: group columns, a date, counts, floats, a decimal sum."""
    return pa.table(
        {
            "provider": ["anthropic", "openai"],
            "model": ["claude-3-sonnet", "gpt-4"],
            "date": pa.array([date(2024, 1, 15)] * 2, pa.date32()),
            "count": pa.array([4, 6], pa.int64()),
            "p95_latency": [985.0, 575.0],
            "total_cost": [0.034, 0.021],
            "error_rate": [0.25, 1 / 6],
            "total_tokens": pa.array([Decimal(1020), Decimal(630)], pa.decimal128(38, 0)),
        }
    )


def aggregate_partition(export: str, work: Path) -> PartitionOutput:
    return partition(export, DAYS[0], [dataset_file(aggregate_table(), "metrics", work / "agg")])


def million_partition(export: str, work: Path, n: int = 1_000_000) -> PartitionOutput:
    """n request records for one day, built column-wise (fast), following the canonical schema."""
    import pyarrow.compute as pc

    schema = records.arrow_schema()
    idx = pa.array(range(n), pa.int64())
    base = datetime(2024, 2, 1, tzinfo=UTC)
    micros = pc.multiply(idx, 86_400_000_000 // n)
    ts = pc.add(pa.scalar(base, pa.timestamp("us", tz="UTC")), micros.cast(pa.duration("us")))

    def pick(values: list, typ=None):
        return pc.take(pa.array(values, typ or pa.string()), pc.remainder(idx, len(values)))

    cols = {
        "schema_version": pick(["1"]),
        "timestamp": ts,
        "request_id": pc.binary_join_element_wise("req_", idx.cast(pa.string()), ""),
        "customer_id": pick([f"cust_{i}" for i in range(50)]),
        "provider": pick(["openai", "anthropic", "azure"]),
        "model": pick(["gpt-4", "claude-3-sonnet", "gpt-4o", "gpt-4o-mini"]),
        "endpoint": pick(["/v1/chat/completions"]),
        "method": pick(["POST"]),
        "request_type": pick(["chat"]),
        "stream": pick([True, False], typ=pa.bool_()),
        "status": pick(["success"] * 19 + ["error"]),
        "status_code": pick([200] * 19 + [500], typ=pa.int32()),
        "latency_ms": pc.remainder(idx, 5000).cast(pa.int32()),
        "input_tokens": pc.remainder(idx, 700).cast(pa.int32()),
        "output_tokens": pc.remainder(idx, 300).cast(pa.int32()),
        "cost_usd": pc.divide(pc.remainder(idx, 100).cast(pa.float64()), 10000.0),
        "metadata": pick(['{"team": "a"}', None]),
    }
    arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in schema]
    table = pa.Table.from_arrays(arrays, schema=schema)
    start = "2024-02-01"
    return partition(export, start, [dataset_file(table, "request_logs", work / "million")])


# --- the analyst queries of docs/warehouses.md and their expected answers --------------------------------


def doc_queries(warehouse: str) -> dict[str, str]:
    """`<!-- query: WAREHOUSE NAME -->` followed by a ```sql block in the docs -> {NAME: sql}."""
    text = DOCS.read_text()
    pattern = re.compile(r"<!-- query: (\w+) (\w+) -->\s*```sql\n(.*?)```", re.S)
    return {name: sql.strip().rstrip(";") for wh, name, sql in pattern.findall(text) if wh == warehouse}


def all_rows() -> list[dict]:
    return [r for d in DAYS for r in day_records(d)]


def expected_cost_by_customer_day() -> dict[tuple[str, str], tuple[int, float]]:
    out: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0])
    for r in all_rows():
        key = (r["customer_id"], r["timestamp"].date().isoformat())
        out[key][0] += 1
        out[key][1] += r["cost_usd"]
    return {k: (v[0], round(v[1], 6)) for k, v in out.items()}


def percentile_cont(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def expected_p95_by_model() -> dict[str, float]:
    by: dict[str, list] = defaultdict(list)
    for r in all_rows():
        by[r["model"]].append(r["latency_ms"])
    return {m: percentile_cont(v, 0.95) for m, v in by.items()}


def expected_error_rate_by_provider() -> dict[str, tuple[int, float]]:
    by: dict[str, list] = defaultdict(lambda: [0, 0])
    for r in all_rows():
        by[r["provider"]][0] += 1
        by[r["provider"]][1] += r["status"] == "error"
    return {p: (v[0], v[1] / v[0]) for p, v in by.items()}


def check_analyst_answers(results: dict[str, list[tuple]]) -> None:
    """Compare the rows of the three analyst queries with the expected numbers (order-insensitive)."""
    cost = {
        (str(r[0]), str(r[1])[:10]): (int(r[2]), round(float(r[3]), 6))
        for r in results["cost_by_customer_day"]
    }
    assert cost == expected_cost_by_customer_day()
    p95 = {str(r[0]): float(r[1]) for r in results["p95_latency_by_model"]}
    expected = expected_p95_by_model()
    assert p95.keys() == expected.keys()
    for model, value in expected.items():
        assert abs(p95[model] - value) < 1e-6, (model, p95[model], value)
    rates = {str(r[0]): (int(r[1]), float(r[2])) for r in results["error_rate_by_provider"]}
    expected_rates = expected_error_rate_by_provider()
    assert rates.keys() == expected_rates.keys()
    for provider, (n, rate) in expected_rates.items():
        assert rates[provider][0] == n and abs(rates[provider][1] - rate) < 1e-9, (provider, rates[provider])


# --- end to end through Dagster ----------------------------------------------------------------------------


def e2e_records() -> list[dict]:
    """Twelve landed records on 2024-01-15 (helpers.record shape): 3 customers, 2 providers, 3 errors."""
    from bifrost_pipeline_tests.helpers import record

    out = []
    for i in range(12):
        error = i % 4 == 0
        out.append(
            record(
                request_id=f"e2e_{i}",
                timestamp=f"2024-01-15T{8 + i:02d}:15:00Z",
                customer_id=f"cust_{i % 3}",
                provider="openai" if i % 2 else "anthropic",
                model="gpt-4o" if i % 2 else "claude-3-sonnet",
                status="error" if error else "success",
                status_code=500 if error else 200,
                latency_ms=100 + 25 * i,
                cost_usd=0.001 * (i + 1),
                **({"error_type": "upstream_error"} if error else {}),
            )
        )
    return out


def materialize_daily(tmp_path: Path, entry: dict, monkeypatch, times: int = 2):
    """Land e2e_records(), materialize raw_logs 2024-01-15, then the export's partition `times` times."""
    import dagster as dg
    import yaml

    from bifrost_pipeline.config import load_config
    from bifrost_pipeline.definitions import build_definitions
    from bifrost_pipeline.defs.raw import RAW_JOB
    from bifrost_pipeline_tests.helpers import HASH_KEY, land

    path = tmp_path / "bifrost_pipeline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "log_exports": {"enabled": True, "exports": [entry]},
                "landing": {"path": "landing"},
                "pipeline": {"data_dir": "data", "start_date": "2024-01-01", "export_retries": 0},
            }
        )
    )
    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", HASH_KEY)
    app = load_config(path)
    land(app, e2e_records())
    defs = build_definitions(app, str(path))
    instance = dg.DagsterInstance.ephemeral()
    assert (
        defs.resolve_job_def(RAW_JOB)
        .execute_in_process(partition_key="2024-01-15", instance=instance)
        .success
    )
    job = defs.resolve_job_def(f"export_{entry['name']}_job")
    results = [job.execute_in_process(partition_key="2024-01-15", instance=instance) for _ in range(times)]
    assert all(r.success for r in results)
    return results[-1]


def check_count_rows(dest, work: Path, delete_one: Callable[[str, str], None]) -> None:
    """`count_rows` reads each dataset's rows of one partition back from the store: all of them, one fewer
    after `delete_one(table, request_id)` removed a row behind the destination's back, and 0 for a dataset
    whose table does not exist. Other partitions of the table are not counted."""
    first, second = (day_partition(dest.export_name, d, work / f"count-{d}") for d in DAYS)
    written = dest.write_partition(first)
    dest.write_partition(second)
    assert dest.count_rows(first, written) == {"request_logs": 10}
    delete_one(dest.config.table or dest.export_name, f"req_{DAYS[0]}_3")
    assert dest.count_rows(first, written) == {"request_logs": 9}
    assert dest.count_rows(second, written) == {"request_logs": 10}
    never = partition(dest.export_name, DAYS[0], [dataset_file(aggregate_table(), "metrics", work / "never")])
    assert dest.count_rows(never, written) == {"metrics": 0}
