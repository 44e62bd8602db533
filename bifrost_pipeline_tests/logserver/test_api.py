"""GET /api/logs and /api/logs/{request_id} over generated landed segments and raw_logs partitions."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from starlette.testclient import TestClient

from bifrost_pipeline import sample
from bifrost_pipeline.landing.writer import SegmentFile
from bifrost_pipeline.logserver.app import create_app
from bifrost_pipeline.validation import validate_day
from bifrost_pipeline_tests.helpers import land, make_app, record
from bifrost_pipeline_tests.logserver.conftest import AUTH, KEY, NO_CONTENT_KEY, RAW_DAY, logs_app


@pytest.fixture(scope="module")
def client(landed):
    app, _ = landed
    with TestClient(create_app(app)) as c:
        yield c


def _ids(client, **params) -> list[str]:
    resp = client.get("/api/logs", params={"limit": 1000, **params}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    return [r["request_id"] for r in resp.json()["logs"]]


def _ts(rec: dict) -> datetime:
    return datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00"))


FILTERS = [
    ({"providers": "openai,anthropic"}, lambda r: r["provider"] in ("openai", "anthropic")),
    ({"models": "gpt-4o-mini"}, lambda r: r["model"] == "gpt-4o-mini"),
    ({"status": "error"}, lambda r: r["status"] == "error"),
    ({"objects": "chat.completion,embedding"}, lambda r: r["request_type"] in ("chat", "embeddings")),
    ({"objects": "transcription"}, lambda r: r["request_type"] == "transcription"),
    ({"start_time": "2024-01-14T12:00:00Z", "end_time": "2024-01-15T06:00:00+00:00"},
     lambda r: datetime(2024, 1, 14, 12, tzinfo=UTC) <= _ts(r) <= datetime(2024, 1, 15, 6, tzinfo=UTC)),
    ({"min_latency": "1000", "max_latency": "3000"}, lambda r: 1000 <= r["latency_ms"] <= 3000),
    ({"min_tokens": "500"}, lambda r: r["total_tokens"] >= 500),
    ({"max_tokens": "200"}, lambda r: r["total_tokens"] <= 200),
    ({"min_cost": "0.002", "max_cost": "0.01"}, lambda r: r["cost_usd"] is not None and 0.002 <= r["cost_usd"] <= 0.01),
    ({"content_search": "REFUND"}, lambda r: "refund" in (r["input_content"] or "").lower() + (r["output_content"] or "").lower()),
    ({"customers": "cust_001,cust_002"}, lambda r: r["customer_id"] in ("cust_001", "cust_002")),
    ({"teams": "team_support"}, lambda r: r["team_id"] == "team_support"),
    ({"virtual_keys": "vk_03"}, lambda r: r["virtual_key_id"] == "vk_03"),
    ({"metadata.env": "staging", "metadata.region": "eu-west-1"},
     lambda r: r["metadata"]["env"] == "staging" and r["metadata"]["region"] == "eu-west-1"),
    ({"providers": "openai", "status": "success", "min_latency": "500"},
     lambda r: r["provider"] == "openai" and r["status"] == "success" and r["latency_ms"] >= 500),
]  # fmt: skip


@pytest.mark.parametrize(("params", "wanted"), FILTERS, ids=[",".join(p) for p, _ in FILTERS])
def test_every_filter_selects_exactly_the_matching_records(client, landed, params, wanted):
    _, expected = landed
    want = {r["request_id"] for r in expected if wanted(r)}
    assert want, "the generated traffic must exercise the filter"
    assert len(want) < len(expected), "the filter must leave records out"
    resp = client.get("/api/logs", params={"limit": 1000, **params}, headers=AUTH).json()
    assert {r["request_id"] for r in resp["logs"]} == want
    assert resp["pagination"]["total"] == resp["stats"]["total_requests"] == len(want)


def test_pages_cover_every_match_once_in_order(client, landed):
    _, expected = landed
    errors = [r for r in expected if r["status"] == "error"]
    seen = []
    for offset in range(0, len(errors) + 10, 10):
        body = client.get("/api/logs", params={"status": "error", "limit": 10, "offset": offset,
                                               "sort_by": "latency", "order": "asc"}, headers=AUTH).json()  # fmt: skip
        assert body["pagination"] == {"limit": 10, "offset": offset, "sort_by": "latency", "order": "asc", "total": len(errors)}
        seen.extend(body["logs"])
    assert [r["request_id"] for r in seen] == [r["request_id"] for r in sorted(errors, key=lambda r: (r["latency_ms"], r["request_id"]))]
    newest = client.get("/api/logs", params={"limit": 3}, headers=AUTH).json()["logs"]
    assert [r["timestamp"] for r in newest] == sorted((r["timestamp"] for r in newest), reverse=True)
    assert newest[0]["request_id"] == max(expected, key=lambda r: r["timestamp"])["request_id"]
    by_cost = client.get("/api/logs", params={"limit": 1, "sort_by": "cost"}, headers=AUTH).json()["logs"]
    assert by_cost[0]["cost_usd"] == max(r["cost_usd"] or 0 for r in expected)


def test_stats_over_everything_that_matched(client, landed):
    _, expected = landed
    chosen = [r for r in expected if r["provider"] == "anthropic"]
    stats = client.get("/api/logs", params={"providers": "anthropic", "limit": 1}, headers=AUTH).json()["stats"]
    assert stats["total_requests"] == len(chosen)
    assert stats["success_rate"] == pytest.approx(sum(r["status"] == "success" for r in chosen) / len(chosen), abs=1e-4)
    assert stats["average_latency"] == pytest.approx(sum(r["latency_ms"] for r in chosen) / len(chosen), abs=0.1)
    assert stats["total_tokens"] == sum(r["total_tokens"] for r in chosen)
    assert stats["total_cost"] == pytest.approx(sum(r["cost_usd"] or 0 for r in chosen), abs=1e-5)
    assert stats["errors"] == sum(r["status"] == "error" for r in chosen)
    no_stats = client.get("/api/logs", params={"include_stats": "false"}, headers=AUTH).json()
    assert "stats" not in no_stats and "total" not in no_stats["pagination"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "ten"}, "limit"), ({"limit": "0"}, "limit"), ({"limit": "5000"}, "limit"), ({"offset": "-1"}, "offset"),
        ({"sort_by": "speed"}, "sort_by"), ({"order": "sideways"}, "order"), ({"status": "processing,ok"}, "status"),
        ({"objects": "fax"}, "objects"), ({"start_time": "yesterday"}, "start_time"),
        ({"end_time": "2024-01-15T10:00:00"}, "end_time"), ({"min_latency": "fast"}, "min_latency"),
        ({"max_cost": "nan"}, "max_cost"), ({"min_tokens": "-3"}, "min_tokens"),
        ({"min_latency": "900", "max_latency": "100"}, "min_latency"), ({"provider": "openai"}, "provider"),
        ({"start_time": "2024-01-16T00:00:00Z", "end_time": "2024-01-15T00:00:00Z"}, "start_time"),
    ],
)  # fmt: skip
def test_a_bad_parameter_is_a_400_naming_it(client, params, param):
    resp = client.get("/api/logs", params=params, headers=AUTH)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == param
    assert resp.json()["error"]["message"].startswith(param + ":")


def test_series_bad_group_is_a_400(client):
    resp = client.get("/api/logs/series", params={"group_by": "colour"}, headers=AUTH)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "group_by"


def test_series_adds_up_to_the_stats(client, landed):
    _, expected = landed
    body = client.get("/api/logs/series", params={"group_by": "provider", "start_time": "2024-01-15T00:00:00Z"},
                      headers=AUTH).json()  # fmt: skip
    day = [r for r in expected if r["timestamp"].startswith("2024-01-15")]
    assert sum(p["requests"] for p in body["points"]) == len(day)
    assert sum(p["errors"] for p in body["points"]) == sum(r["status"] == "error" for r in day)
    assert set(body["groups"]) == {r["provider"] for r in day}
    assert body["bucket_seconds"] == 1800  # 24 h of data in at most 60 buckets


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer nope-nope-nope"}, {"x-api-key": "x"}, {"authorization": KEY}])
def test_no_key_or_a_wrong_key_is_a_401(client, headers):
    for path in ("/api/logs", "/api/logs/req_x", "/api/logs/series", "/api/session"):
        resp = client.get(path, headers=headers)
        assert resp.status_code == 401, path
        assert resp.headers["www-authenticate"] == "Bearer"


def test_either_header_carries_the_key(client):
    assert client.get("/api/logs", params={"limit": 1}, headers={"x-api-key": KEY}).status_code == 200
    assert client.get("/api/logs", params={"limit": 1}, headers={"Authorization": f"bearer {NO_CONTENT_KEY}"}).status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/").status_code == 200  # the page itself asks for the key


def test_one_record_whole_and_content_per_key(client, landed):
    _, expected = landed
    want = next(r for r in expected if r["status"] == "success" and r["request_type"] == "chat")
    full = client.get(f"/api/logs/{want['request_id']}", headers=AUTH).json()
    assert full["input_content"] == want["input_content"] and full["output_content"] == want["output_content"]
    assert full["metadata"] == want["metadata"] and full["cost_usd"] == want["cost_usd"]
    assert full["timestamp"] == want["timestamp"]
    hidden = client.get(f"/api/logs/{want['request_id']}", headers={"x-api-key": NO_CONTENT_KEY}).json()
    assert "input_content" not in hidden and "output_content" not in hidden and hidden["model"] == want["model"]
    listed = client.get("/api/logs", params={"limit": 5}, headers=AUTH).json()["logs"]
    assert all("input_content" not in r for r in listed)
    resp = client.get("/api/logs", params={"content_search": "refund"}, headers={"x-api-key": NO_CONTENT_KEY})
    assert resp.status_code == 403 and resp.json()["error"]["param"] == "content_search"
    missing = client.get("/api/logs/req_does_not_exist", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "request_id"


def test_content_logging_off_hides_content_from_every_key(tmp_path):
    app = make_app(tmp_path, logs={"api_keys": [KEY]}, client={"disable_content_logging": True})
    land(app, [record(request_id="r1")])
    with TestClient(create_app(app)) as c:
        rec = c.get("/api/logs/r1", headers=AUTH).json()
        assert rec["request_id"] == "r1" and "input_content" not in rec
        assert c.get("/api/session", headers=AUTH).json() == {"name": "key1", "content": False, "content_logging": False}


def test_a_record_in_both_raw_and_a_later_segment_appears_once(tmp_path):
    app = logs_app(tmp_path)
    sample.land_day(app.landing_dir, RAW_DAY, 40)
    validate_day(app, RAW_DAY)
    expected = list(sample.generate_day(RAW_DAY, 40))
    with TestClient(create_app(app)) as c:
        assert sorted(_ids(c)) == sorted(r["request_id"] for r in expected)  # raw alone: newer than its segments
        old = expected[5]
        time.sleep(0.01)
        land(app, [old, dict(old, request_id="req_late_arrival")])  # newer than the raw partition: read beside it
        ids = _ids(c)
    assert len(ids) == len(set(ids)) == len(expected) + 1
    assert "req_late_arrival" in ids and old["request_id"] in ids


def test_an_open_segment_is_read_and_extra_fields_come_back_whole(tmp_path):
    app = logs_app(tmp_path)
    when = datetime(2024, 1, 15, 10, tzinfo=UTC)
    seg = SegmentFile(app.landing_dir, "proxy", when)  # open: still a hidden .part, never published
    attempts = [{"provider": "openai", "status": 429, "latency_ms": 80}, {"provider": "azure", "status": 200}]
    seg.write_lines([json.dumps(record(request_id="r_open", attempts=attempts, params={"temperature": 0.2})).encode(),
                     b'{"torn": '])  # fmt: skip
    assert seg.temp_path.exists() and not seg.final_path.exists()
    with TestClient(create_app(app)) as c:
        assert [r["request_id"] for r in c.get("/api/logs", headers=AUTH).json()["logs"]] == ["r_open"]
        rec = c.get("/api/logs/r_open", headers=AUTH).json()
    assert rec["attempts"] == attempts and rec["params"] == {"temperature": 0.2}
    seg.discard()


def test_a_landed_record_with_a_lower_case_t_and_z_is_found_by_time(tmp_path):
    """RFC 3339 (and the intake's check) allow "2024-01-15t10:00:00z"; DuckDB's cast takes only upper case."""
    app = logs_app(tmp_path)
    land(app, [record(request_id="r_upper"), record(request_id="r_lower", timestamp="2024-01-15t10:30:00.5z")])  # hour 10
    with TestClient(create_app(app)) as c:
        found = c.get("/api/logs", headers=AUTH, params={"start_time": "2024-01-15T10:30:00.1Z", "end_time": "2024-01-15T11:00:00Z"})
        assert [r["request_id"] for r in found.json()["logs"]] == ["r_lower"]
        assert found.json()["logs"][0]["timestamp"] == "2024-01-15T10:30:00.500Z"  # as every time is given back


def test_the_logs_section_is_checked():
    from bifrost_pipeline.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as err:
        parse_config({"logs": {"api_keys": ["short"], "port": 0, "colour": 1}})
    text = str(err.value)
    assert "logs.api_keys" in text and "logs.port" in text and "logs.colour" in text and "'short'" not in text
