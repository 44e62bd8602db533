"""The live stream: /ws and /api/logs/stream get a record landed after subscribing within 2 s; a subscriber
that falls behind is dropped with a message."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
from starlette.testclient import TestClient
from websockets.sync.client import connect

from bifrost_pipeline.landing.writer import RotatingWriter
from bifrost_pipeline.logserver.app import create_app
from bifrost_pipeline.logserver.filters import parse_filter
from bifrost_pipeline.logserver.live import Hub
from bifrost_pipeline_tests.helpers import record
from bifrost_pipeline_tests.logserver.conftest import AUTH, KEY, NO_CONTENT_KEY, logs_app, serve


def _now_record(request_id: str, **fields) -> dict:
    return record(request_id=request_id, timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"), **fields)


def _land_open(app, rec: dict) -> RotatingWriter:
    """Land as the proxy does: appended to an open segment (a .part), not published."""
    writer = RotatingWriter(app.landing_dir, "proxy", max_bytes=1 << 20, max_age_s=60)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    writer.write(hour, [json.dumps(rec).encode()])
    return writer


def test_websocket_gets_a_record_landed_after_subscribing_within_2s(tmp_path):
    app = logs_app(tmp_path)
    with serve(create_app(app)) as base:
        url = base.replace("http", "ws") + "/ws?providers=anthropic"
        with connect(url, additional_headers={"x-api-key": NO_CONTENT_KEY}) as ws:
            assert json.loads(ws.recv(5)) == {"type": "subscribed"}
            _land_open(app, _now_record("r_other", provider="openai"))
            landed_at = time.monotonic()
            writer = _land_open(app, _now_record("r_live", provider="anthropic"))
            msg = json.loads(ws.recv(2))
            assert time.monotonic() - landed_at < 2.0
        writer.close()
    assert msg["type"] == "log" and msg["payload"]["request_id"] == "r_live"
    assert "input_content" not in msg["payload"]  # this key sees no content


def test_websocket_login_by_first_message_and_refusal(tmp_path):
    app = logs_app(tmp_path)
    with serve(create_app(app)) as base:
        with connect(base.replace("http", "ws") + "/ws") as ws:
            ws.send(json.dumps({"api_key": KEY}))
            assert json.loads(ws.recv(5)) == {"type": "subscribed"}
        with connect(base.replace("http", "ws") + "/ws") as ws:
            ws.send(json.dumps({"api_key": "wrong-key-wrong"}))
            assert json.loads(ws.recv(5))["status"] == 401
        with connect(base.replace("http", "ws") + "/ws?min_cost=cheap", additional_headers=AUTH) as ws:
            err = json.loads(ws.recv(5))
            assert err["status"] == 400 and err["param"] == "min_cost"


def test_sse_gets_a_record_landed_after_subscribing_within_2s(tmp_path):
    app = logs_app(tmp_path)
    got: list[tuple[float, dict]] = []
    with serve(create_app(app)) as base:
        with httpx.Client(timeout=10) as http:
            assert http.get(base + "/api/logs/stream").status_code == 401
            with http.stream("GET", base + "/api/logs/stream", params={"status": "error"}, headers=AUTH) as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                lines = resp.iter_lines()
                assert next(lines) == ": subscribed"
                landed_at: list[float] = []

                def land_later():
                    time.sleep(0.3)
                    _land_open(app, _now_record("r_ok")).close()
                    landed_at.append(time.monotonic())
                    _land_open(app, _now_record("r_err", status="error", status_code=500)).close()

                threading.Thread(target=land_later).start()
                for line in lines:
                    if line.startswith("data: "):
                        got.append((time.monotonic(), json.loads(line[6:])))
                        break
    assert got[0][1]["request_id"] == "r_err" and got[0][1]["input_content"]
    assert got[0][0] - landed_at[0] < 2.0


def test_a_slow_subscriber_is_dropped_with_a_message(tmp_path):
    app = logs_app(tmp_path, subscriber_queue=3)
    asgi = create_app(app)
    hub = asgi.state.server.hub
    with TestClient(asgi) as c:
        with c.websocket_connect("/ws", headers=AUTH) as ws:
            assert ws.receive_json() == {"type": "subscribed"}
            # ten records at once, before the sender can take one: the queue holds 3, then the subscriber goes
            c.portal.call(hub.publish, [_now_record(f"r{i}") for i in range(10)])
            messages = [ws.receive_json() for _ in range(4)]
    assert [m["payload"]["request_id"] for m in messages[:3]] == ["r0", "r1", "r2"]
    assert messages[3]["type"] == "dropped" and "fell 3 records behind" in messages[3]["message"]
    assert not hub.subscribers


def test_hub_bounds_every_queue_and_filters():
    hub = Hub(limit=2)
    slow, picky = hub.subscribe(parse_filter({})), hub.subscribe(parse_filter({"providers": "azure"}))
    hub.publish([record(request_id=f"r{i}") for i in range(50)])
    assert slow.dropped and slow.queue.qsize() == 3  # two records and the drop notice, not fifty
    assert not picky.dropped and picky.queue.qsize() == 0
    assert hub.subscribers == {picky}


@pytest.mark.parametrize(
    ("params", "rec", "match"),
    [
        ({"min_cost": "0.01"}, {"cost_usd": None}, False),
        ({"metadata.x-tenant-id": "acme"}, {}, True),
        ({"metadata.x-tenant-id": "acme"}, {"metadata": None}, False),
        ({"content_search": "HELLO"}, {}, True),
        ({"objects": "chat.completion", "status": "success"}, {}, True),
        ({"end_time": "2024-01-15T10:29:59Z"}, {}, False),
    ],
)
def test_the_stream_filter_agrees_with_the_api_filter(params, rec, match):
    assert parse_filter(params).matches(record(**rec)) is match
