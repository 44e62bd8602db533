"""The analyst queries of the README run as written on the embedded warehouse and give the right numbers."""

import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from bifrost_pipeline import validation
from bifrost_pipeline.exports import run_export
from bifrost_pipeline_tests.helpers import DAY, land, make_app, record

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_queries() -> dict[str, str]:
    text = README.read_text()
    return dict(re.findall(r"<!-- query: duckdb (\w+) -->\s*```sql\n(.*?)```", text, re.S))


ROWS = [
    # customer, model, provider, latency, status, cost
    ("acme", "gpt-4o", "openai", 100, "success", 0.5),
    ("acme", "gpt-4o", "openai", 200, "error", 0.0),
    ("acme", "claude-3-haiku", "anthropic", 300, "success", 0.25),
    ("globex", "gpt-4o", "openai", 400, "success", 1.0),
    ("globex", "claude-3-haiku", "anthropic", 500, "error", 0.0),
]


# team, virtual key, retries, fallback index (None: a refusal), attempts, per row of ROWS
ROUTING = [
    ("search", "vk-1", 0, 0, [{"provider": "openai", "status_code": 200}]),
    ("search", "vk-1", 1, 0, [{"provider": "openai", "status_code": 500}, {"provider": "openai", "status_code": 500}]),
    (None, None, 2, 1, [{"provider": "openai", "status_code": 503}] * 3 + [{"provider": "anthropic", "status_code": 200}]),
    ("ads", "vk-2", 0, 0, [{"provider": "openai", "status_code": 200}]),
    ("ads", "vk-2", None, None, []),
]


@pytest.fixture
def warehouse(tmp_path):
    entry = {
        "name": "warehouse",
        "schedule": {"frequency": "daily"},
        "destination": {"type": "duckdb", "config": {"table": "request_logs"}},
        "data": {"include": ["request_logs"]},
    }
    app = make_app(tmp_path, [entry])
    land(app, [
        record(request_id=f"r{i}", customer_id=c, model=m, provider=p, latency_ms=lat, status=st,
               status_code=200 if st == "success" else 500, cost_usd=cost, team_id=team, virtual_key_id=vk,
               retries=retries, fallback_index=fallback, attempts=attempts)
        for i, ((c, m, p, lat, st, cost), (team, vk, retries, fallback, attempts)) in enumerate(zip(ROWS, ROUTING, strict=True))
    ])
    validation.validate_day(app, DAY)
    run_export(app, app.exports[0], DAY.isoformat())
    run_export(app, app.exports[0], DAY.isoformat())  # a retry does not change any number
    con = duckdb.connect(str(app.warehouse_path), read_only=True)
    yield con
    con.close()


def test_the_readme_has_the_three_queries():
    # tool_usage_by_model runs on version 2 records in test_schema_v2.py; the others here
    assert set(readme_queries()) == {
        "cost_by_customer_day", "p95_latency_by_model", "error_rate_by_provider", "cost_by_team_and_virtual_key",
        "retry_fallback_rate_by_provider", "tool_usage_by_model",
    }


def test_cost_by_customer_per_day(warehouse):
    rows = warehouse.sql(readme_queries()["cost_by_customer_day"]).fetchall()
    assert [(c, str(d), n, cost) for c, d, n, cost in rows] == [
        ("globex", "2024-01-15", 2, 1.0),
        ("acme", "2024-01-15", 3, 0.75),
    ]


def test_p95_latency_by_model(warehouse):
    rows = warehouse.sql(readme_queries()["p95_latency_by_model"]).fetchall()
    # claude: 300, 500 -> 300 + 0.95 * 200 = 490; gpt-4o: 100, 200, 400 -> 200 + 0.9 * 200 = 380
    assert rows == [("claude-3-haiku", 2, pytest.approx(490.0)), ("gpt-4o", 3, pytest.approx(380.0))]


def test_error_rate_by_provider(warehouse):
    rows = warehouse.sql(readme_queries()["error_rate_by_provider"]).fetchall()
    assert rows == [("anthropic", 2, pytest.approx(0.5)), ("openai", 3, pytest.approx(1 / 3))]


def test_cost_by_team_and_virtual_key(warehouse):
    rows = warehouse.sql(readme_queries()["cost_by_team_and_virtual_key"]).fetchall()
    assert rows == [("ads", "vk-2", 2, 1.0), ("search", "vk-1", 2, 0.5), ("(none)", "(none)", 1, 0.25)]


def test_retry_fallback_rate_by_provider(warehouse):
    rows = warehouse.sql(readme_queries()["retry_fallback_rate_by_provider"]).fetchall()
    # anthropic: the fallback after 3 openai attempts; openai: r0 (1 attempt), r1 (2), r3 (1); r4 refused
    assert rows == [
        ("anthropic", 1, pytest.approx(1.0), pytest.approx(1.0), pytest.approx(4.0)),
        ("openai", 3, pytest.approx(1 / 3), pytest.approx(0.0), pytest.approx(4 / 3)),
    ]


def readme_analyst_commands() -> list[str]:
    (block,) = re.findall(r"<!-- analyst commands -->\s*```sh\n(.*?)```", README.read_text(), re.S)
    return [line for line in block.splitlines() if line.strip()]


def test_the_commands_that_read_without_blocking_the_loads_run_as_written(tmp_path):
    """In a directory laid out as after `make demo`: the warehouse, and the daily export's Parquet files."""
    exports = [
        {"name": "warehouse", "schedule": {"frequency": "daily"},
         "destination": {"type": "duckdb", "config": {"table": "request_logs"}},
         "data": {"include": ["request_logs"]}},
        {"name": "daily_local_export", "schedule": {"frequency": "daily"},
         "destination": {"type": "local", "config": {"path": "exports", "prefix": "daily-exports/{year}/{month}/{day}/"}},
         "data": {"include": ["request_logs"], "compression": "gzip"}},
    ]
    app = make_app(tmp_path, exports, pipeline={"data_dir": ".bifrost", "start_date": "2024-01-01"})
    assert app.warehouse_path == tmp_path / ".bifrost" / "warehouse.duckdb"
    land(app, [record(request_id=f"r{i}", model=m) for i, m in enumerate(["gpt-4o", "gpt-4o", "claude-3-haiku"])])
    validation.validate_day(app, DAY)
    for export in app.exports:
        run_export(app, export, DAY.isoformat())
    (tmp_path / ".venv").symlink_to(sys.prefix)
    outputs = []
    for command in readme_analyst_commands():
        result = subprocess.run(["bash", "-e", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"`{command}` failed:\n{result.stdout}{result.stderr}"
        outputs.append(result.stdout)
    copy_count, by_model = outputs[1], outputs[2]
    assert re.search(r"│\s+3\s+│", copy_count), copy_count
    assert re.search(r"claude-3-haiku\s+│\s+1\s+│", by_model) and re.search(r"gpt-4o\s+│\s+2\s+│", by_model), by_model
