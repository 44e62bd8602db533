import json
import subprocess
import sys
from pathlib import Path

import pytest

from bifrost_pipeline.config import ConfigError, Schedule, load_config, parse_config

DATA = Path(__file__).parent / "data"
SEED_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "super-secret-value-1",
    "GCP_SERVICE_ACCOUNT_KEY": "super-secret-value-2",
}


def problems(raw, env=None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, env=env or {})
    return err.value.problems


def one_export(**entry):
    base = {
        "name": "e",
        "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
        "destination": {"type": "local", "config": {}},
    }
    base.update(entry)
    return {"log_exports": {"exports": [base]}}


@pytest.mark.parametrize("name", ["seed_complete_example.json", "seed_complete_example.yaml"])
def test_the_seed_complete_example_loads_unchanged(name, tmp_path):
    app = load_config(DATA / name, env=SEED_ENV)
    daily, weekly = app.exports
    assert daily.name == "daily_s3_export" and weekly.name == "weekly_bigquery_export"
    assert daily.schedule.frequency == "daily" and daily.schedule.time == "02:00"
    assert weekly.schedule.day == "sunday" and weekly.schedule.weekday == 0
    assert daily.data.include == ["request_logs", "response_logs", "error_logs"]
    assert daily.data.filters.date_range == "last_24_hours"
    assert daily.data.filters.status_codes == [200, 400, 401, 403, 404, 500]
    creds = daily.destination.config.credentials
    assert creds.secret_access_key.get_secret_value() == "super-secret-value-1"
    assert "super-secret-value-1" not in repr(app) and "super-secret-value-1" not in str(daily)
    (agg,) = weekly.data.transformations
    assert agg.group_by == ["provider", "model", "customer_id"]


def test_a_missing_variable_is_named_and_secrets_never_printed():
    raw = json.loads((DATA / "seed_complete_example.json").read_text())
    env = dict(SEED_ENV)
    del env["AWS_SECRET_ACCESS_KEY"]
    found = problems(raw, env)
    assert (
        "log_exports.exports[0].destination.config.credentials.secret_access_key: "
        "environment variable AWS_SECRET_ACCESS_KEY is not set"
    ) in found
    assert not any("super-secret" in p for p in found)


def test_the_issue_example_message():
    found = problems(one_export(schedule={"frequency": "weekly", "day": "sundy", "time": "03:00"}))
    assert found == ["log_exports.exports[0].schedule.day: expected a weekday name, got 'sundy'"]


@pytest.mark.parametrize(
    "entry, expected",
    [
        ({"schedule": {"frequency": "hourly"}}, "log_exports.exports[0].schedule.frequency: Input should be"),
        ({"schedule": {"frequency": "daily", "time": "25:00"}}, "schedule.time: expected a time as HH:MM, got '25:00'"),
        ({"schedule": {"frequency": "daily", "timezone": "Mars/Base"}}, "schedule.timezone: expected an IANA time zone"),
        ({"schedule": {"frequency": "monthly", "day": 31}}, "schedule.day: expected a day of the month from 1 to 28, got 31"),
        ({"schedule": {"frequency": "daily", "day": "monday"}}, "schedule.day: only weekly and monthly schedules take a day"),
        ({"data": {"format": "xml"}}, "log_exports.exports[0].data.format: Input should be"),
        ({"data": {"format": "csv", "compression": "snappy"}}, "data.compression: 'snappy' is not available for format 'csv'"),
        ({"data": {"include": ["requests"]}}, "data.include: unknown dataset 'requests'"),
        ({"data": {"filters": {"status_codes": [200, 999]}}}, "data.filters.status_codes[1]: Input should be less than or equal to 599"),
        ({"data": {"filters": {"date_range": "yesterday"}}}, "data.filters.date_range"),
        ({"data": {"filters": {"min_latency_ms": 10, "max_latency_ms": 5}}}, "data.filters: min_latency_ms must not be above max_latency_ms"),
        ({"data": {"filters": {"date_range": {"start": "2024-01-01T00:00:00"}}}}, "data.filters.date_range.start: expected a time with a zone"),
        ({"data": {"filters": {"latency": 5}}}, "data.filters.latency: unknown key"),
        ({"data": {"transformations": [{"type": "pivot"}]}}, "data.transformations[0].type: expected one of aggregate, anonymize, enrich, got 'pivot'"),
        ({"data": {"transformations": [{"type": "aggregate", "group_by": ["region"], "metrics": ["count"]}]}}, "data.transformations[0].group_by: unknown field 'region'"),
        ({"data": {"transformations": [{"type": "aggregate", "group_by": ["model"], "metrics": ["p90_latency"]}]}}, "data.transformations[0].metrics: unknown metric 'p90_latency'"),
        ({"data": {"transformations": [{"type": "anonymize", "fields": ["email"]}]}}, "data.transformations[0].fields: unknown field 'email'"),
        ({"data": {"transformations": [{"type": "anonymize", "fields": ["customer_id"], "method": "encrypt"}]}}, "data.transformations[0].method: Input should be"),
        ({"data": {"transformations": [{"type": "anonymize", "fields": ["customer_id"]}]}}, "data.transformations[0].key_env: environment variable BIFROST_ANONYMIZE_KEY is not set"),
        ({"data": {"transformations": [{"type": "enrich", "add_fields": {"bad name": 1}}]}}, "data.transformations[0].add_fields: field name 'bad name'"),
        ({"destination": {"type": "ftp", "config": {}}}, "log_exports.exports[0].destination.type: unknown destination 'ftp'"),
        ({"destination": {"type": "local", "config": {"prefix": "{year}/{week}/"}}}, "destination.config.prefix: unknown placeholder {week}"),
        ({"destination": {"type": "local", "config": {"bucket": "x"}}}, "destination.config.bucket: unknown key"),
        ({"name": "has space"}, "log_exports.exports[0].name: String should match pattern"),
        ({"colour": "blue"}, "log_exports.exports[0].colour: unknown key"),
    ],
)
def test_each_mistake_names_its_path(entry, expected):
    found = problems(one_export(**entry))
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once():
    raw = one_export(
        schedule={"frequency": "weekly", "day": "sundy"},
        data={"format": "csv", "compression": "snappy"},
        destination={"type": "local", "config": {"prefix": "{nope}"}},
    )
    assert len(problems(raw)) == 3


def test_duplicate_names_and_sections():
    raw = one_export()
    raw["log_exports"]["exports"].append(raw["log_exports"]["exports"][0])
    raw["client"] = {"logging_headers": ["X-Tenant-ID"], "unknown": 1}
    found = problems(raw)
    assert "log_exports.exports[1].name: 'e' is already the name of exports[0]" in found
    assert "client.unknown: unknown key" in found


def test_disabled_entries_load_nothing_and_need_no_variables():
    raw = one_export(enabled=False, destination={"type": "local", "config": {"path": "${NOT_SET_ANYWHERE}"}})
    assert parse_config(raw, env={}).exports == []
    raw = one_export()
    raw["log_exports"]["enabled"] = False
    assert parse_config(raw, env={}).exports == []


def test_env_substitution_with_defaults_and_export_placeholders():
    raw = one_export(
        destination={"type": "local", "config": {"path": "${OUT_DIR}/x", "prefix": "${PREFIX:-p}/{day}/"}},
        data={"transformations": [{"type": "enrich", "add_fields": {"at": "${EXPORT_TIMESTAMP}", "env": "${STAGE}"}}]},
    )
    app = parse_config(raw, env={"OUT_DIR": "/tmp/out", "STAGE": "prod"})
    (e,) = app.exports
    assert e.destination.config.path == "/tmp/out/x"
    assert e.destination.config.prefix == "p/{day}/"
    assert e.data.transformations[0].add_fields == {"at": "${EXPORT_TIMESTAMP}", "env": "prod"}


def test_schedule_shorthand_and_weekday_numbers():
    raw = one_export(schedule="daily")
    assert parse_config(raw, env={}).exports[0].schedule.frequency == "daily"
    assert Schedule(frequency="weekly", day="Monday").weekday == 1
    assert Schedule(frequency="weekly", day="sunday").weekday == 0


def test_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("log_exports:\n  exports: [\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value) and "line" in err.value.problems[0]
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "missing.yaml")
    assert "no such file" in str(err.value)


def test_relative_paths_resolve_from_the_config_file(tmp_path):
    cfg = tmp_path / "conf" / "c.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"landing": {"path": "land"}, "pipeline": {"data_dir": "d"}}))
    app = load_config(cfg, env={})
    assert app.landing_dir == cfg.parent / "land"
    assert app.raw_dir == cfg.parent / "d" / "raw_logs"


def test_the_proxy_loads_the_file_without_the_exports_variables(tmp_path):
    cfg = tmp_path / "c.json"
    entry = one_export(destination={"type": "local", "config": {"path": "${WAREHOUSE_ONLY_SECRET}"}})
    cfg.write_text(json.dumps({**entry, "landing": {"path": "land"}}))
    with pytest.raises(ConfigError):
        load_config(cfg, env={})
    app = load_config(cfg, env={}, with_exports=False)
    assert app.exports == [] and app.landing_dir == tmp_path / "land"


def test_two_exports_writing_the_same_place_are_rejected():
    def entry(name, prefix, frequency="daily", **extra):
        schedule = {"frequency": frequency, **extra}
        return {"name": name, "schedule": schedule, "destination": {"type": "local", "config": {"prefix": prefix}}}

    clash = {"log_exports": {"exports": [entry("a", "logs/{year}/{month}/{day}/"),
                                         entry("b", "logs/{year}/{month}/{day}/", "weekly", day="sunday")]}}
    found = problems(clash)
    assert found == [
        "log_exports.exports[1].destination: writes where exports[0] ('a') writes; "
        "give each export its own prefix (e.g. with {export}) or table"
    ]
    fine = {"log_exports": {"exports": [entry("a", "{export}/{partition}/"), entry("b", "{export}/{partition}/")]}}
    assert len(parse_config(fine, env={}).exports) == 2


def test_transformations_are_typed_at_load_and_a_hash_key_comes_from_key_else_its_variable():
    steps = [
        {"type": "anonymize", "fields": ["customer_id"], "key_env": "MY_KEY"},
        {"type": "aggregate", "group_by": ["model"], "metrics": ["count"]},
        {"type": "anonymize", "fields": ["user_id"], "key_env": "MY_KEY", "key": "${OTHER_KEY:-fallback}"},
    ]
    env = {"MY_KEY": "from-env"}
    (e,) = parse_config(one_export(data={"transformations": steps}), env=env).exports
    anonymize, aggregate, with_key = e.transformations
    assert (type(anonymize).__name__, type(aggregate).__name__) == ("Anonymize", "Aggregate")
    assert anonymize.key.get_secret_value() == "from-env"
    # `key` (after ${VAR:-default} substitution) beats key_env: the demo config's way to run without setup.
    assert with_key.key.get_secret_value() == "fallback"
    (e,) = parse_config(one_export(data={"transformations": steps}), env={**env, "OTHER_KEY": "mine"}).exports
    assert e.transformations[2].key.get_secret_value() == "mine"
    assert type(e.destination.config).__name__ == "LocalConfig" and e.destination.config.path == "exports"


def test_destinations_are_checked_against_the_registry_given():
    from bifrost_pipeline.destinations.local import LocalDestination

    raw = one_export(destination={"type": "s3", "config": {"bucket": "b"}})
    with pytest.raises(ConfigError) as err:
        parse_config(raw, env={}, destinations={"local": LocalDestination})
    assert err.value.problems == ["log_exports.exports[0].destination.type: unknown destination 's3' (known: local)"]


def test_loading_imports_only_the_destinations_its_exports_use(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(one_export()))
    code = (
        "import sys; from bifrost_pipeline.config import load_config; load_config(sys.argv[1], env={}); "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('bifrost_pipeline.destinations.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["bifrost_pipeline.destinations.base", "bifrost_pipeline.destinations.local"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgress://u:hunter2secret@h/db", "unknown database scheme 'postgress'"),
        ("postgresql+nosuchdriver://u:hunter2secret@h/db", "unknown database scheme 'postgresql+nosuchdriver'"),
        ("mssql+pyodbc://u:hunter2secret@h/db", "the driver of 'mssql+pyodbc' is not installed (pyodbc)"),
    ],
)
def test_a_sql_url_with_an_unknown_scheme_or_missing_driver_fails_at_load(url, expected):
    found = problems(one_export(destination={"type": "sql", "config": {"url": url}}))
    assert len(found) == 1 and found[0].startswith("log_exports.exports[0].destination.config.url: ")
    assert expected in found[0] and "hunter2secret" not in found[0]
    assert len(parse_config(one_export(destination={"type": "sql", "config": {"url": "sqlite:///w.db"}}), env={}).exports) == 1
