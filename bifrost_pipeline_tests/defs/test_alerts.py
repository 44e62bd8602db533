import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
import yaml

from bifrost_pipeline.alerts import Alert, post, send
from bifrost_pipeline.config import ConfigError, Webhook, load_config, parse_config
from bifrost_pipeline.definitions import build_definitions
from bifrost_pipeline.defs.freshness import freshness_deadline
from bifrost_pipeline.defs.raw import RAW_JOB
from bifrost_pipeline_tests.helpers import HASH_KEY, land, record

EXPORT = {
    "name": "daily_files",
    "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
    "destination": {"type": "local", "config": {"path": "out", "prefix": "{export}/{partition}/"}},
    "data": {"include": ["request_logs"]},
}


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST body (and can answer slowly or with an error)."""

    def __init__(self):
        self.posts: list[tuple[str, dict]] = []
        self.delay_s = 0.0
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(receiver.delay_s)
                receiver.posts.append((self.path, json.loads(body)))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def setup(tmp_path, monkeypatch, receiver):
    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", HASH_KEY)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{receiver.url}/slack/T0SECRET")
    path = tmp_path / "bifrost_pipeline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "log_exports": {"exports": [EXPORT]},
                "landing": {"path": "landing"},
                "pipeline": {"data_dir": "data", "start_date": "2024-01-01", "export_retries": 0},
                "alerts": {
                    "webhooks": [
                        {"url": "${SLACK_WEBHOOK_URL}", "format": "slack"},
                        {"url": f"{receiver.url}/generic", "format": "json"},
                    ],
                    "ui_base_url": "http://dagster.example:3000/",
                },
            }
        )
    )
    app = load_config(path)
    return app, build_definitions(app, str(path)), dg.DagsterInstance.ephemeral()


def by_path(receiver: Receiver) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for path, body in receiver.posts:
        out.setdefault(path, []).append(body)
    return out


def run_status_context(defs, instance, sensor_name, result, event_type):
    run = instance.get_run_by_id(result.run_id)
    event = next(e for e in result.all_events if e.event_type == event_type)
    return dg.build_run_status_sensor_context(
        sensor_name=sensor_name, dagster_event=event, dagster_instance=instance, dagster_run=run
    )


def test_a_failing_export_run_posts_once_to_each_webhook(setup, receiver):
    app, defs, instance = setup
    failed = defs.resolve_job_def("export_daily_files_job").execute_in_process(
        partition_key="2024-01-15", instance=instance, raise_on_error=False
    )
    assert not failed.success
    ctx = run_status_context(defs, instance, "alert_on_run_failure", failed, dg.DagsterEventType.RUN_FAILURE)
    defs.resolve_sensor_def("alert_on_run_failure")(ctx.for_run_failure())
    posts = by_path(receiver)
    assert set(posts) == {"/slack/T0SECRET", "/generic"}
    [slack], [generic] = posts["/slack/T0SECRET"], posts["/generic"]
    run_link = f"http://dagster.example:3000/runs/{failed.run_id}"
    assert generic["kind"] == "run_failure"
    assert generic["job"] == "export_daily_files_job"
    assert generic["assets"] == ["export_daily_files"]
    assert generic["partition"] == "2024-01-15"
    assert generic["url"] == run_link and generic["run_id"] == failed.run_id
    assert "raw_logs 2024-01-15 has never been materialized" in generic["error"]
    assert slack["text"].startswith(":rotating_light: Run failed: export_daily_files [2024-01-15]")
    assert run_link in slack["text"] and "never been materialized" in slack["text"]
    assert [b["type"] for b in slack["blocks"]] == ["section", "section", "section"]


def test_a_failing_check_posts_once_and_a_passing_run_posts_nothing(setup, receiver):
    app, defs, instance = setup
    land(app, [record(request_id="a"), record(request_id="b")])
    ok = defs.resolve_job_def(RAW_JOB).execute_in_process(partition_key="2024-01-15", instance=instance)
    sensor = defs.resolve_sensor_def("alert_on_check_failure")
    sensor(run_status_context(defs, instance, sensor.name, ok, dg.DagsterEventType.RUN_SUCCESS))
    assert receiver.posts == []  # every check passed
    # one valid record and two malformed lines: the quarantined share is over the threshold (a warning)
    land(app, [record(request_id="a", timestamp="2024-01-16T10:00:00Z"), b"{not json", b"[1, 2]"])
    bad = defs.resolve_job_def(RAW_JOB).execute_in_process(partition_key="2024-01-16", instance=instance)
    assert bad.success  # a warning does not block the run
    sensor(run_status_context(defs, instance, sensor.name, bad, dg.DagsterEventType.RUN_SUCCESS))
    [generic] = by_path(receiver)["/generic"]
    assert len(by_path(receiver)["/slack/T0SECRET"]) == 1
    assert generic["kind"] == "check_failure"
    assert generic["partition"] == "2024-01-16"
    assert [(c["asset"], c["name"], c["severity"]) for c in generic["checks"]] == [
        ("raw_logs", "quarantine_share_below_threshold", "WARN")
    ]
    assert generic["url"] == f"http://dagster.example:3000/runs/{bad.run_id}"


def test_an_export_turning_stale_posts_once(setup, receiver):
    from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

    app, defs, instance = setup
    sensor = defs.resolve_sensor_def("alert_on_stale_export")
    with dg.build_sensor_context(instance=instance, definitions=defs) as ctx:
        cursor = sensor.evaluate_tick(ctx).cursor
    # what Dagster's freshness daemon records when the policy fails (and when another asset changes)
    for key, state in (("export_daily_files", FreshnessState.FAIL), ("raw_logs", FreshnessState.FAIL)):
        instance.report_runless_asset_event(
            FreshnessStateChange(
                key=dg.AssetKey(key), new_state=state, previous_state=FreshnessState.PASS,
                state_change_timestamp=1705370400.0,
            )
        )
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as ctx:
        cursor = sensor.evaluate_tick(ctx).cursor
    [generic] = by_path(receiver)["/generic"]
    assert generic["kind"] == "stale" and generic["assets"] == ["export_daily_files"]
    assert generic["url"] == "http://dagster.example:3000/assets/export_daily_files"
    assert "cron '0 4 * * *'" in generic["error"] and "2024-01-16T02:00:00+00:00" in generic["error"]
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as ctx:
        sensor.evaluate_tick(ctx)
    assert len(receiver.posts) == 2  # one per webhook, not again on the next tick


def test_the_export_carries_a_freshness_policy_from_its_schedule(setup):
    _, defs, _ = setup
    policy = defs.resolve_asset_graph().get(dg.AssetKey("export_daily_files")).freshness_policy
    assert (policy.deadline_cron, policy.lower_bound_delta.days, policy.timezone) == ("0 4 * * *", 1, "UTC")


@pytest.mark.parametrize(
    ("schedule", "grace", "cron", "days"),
    [
        ({"frequency": "daily", "time": "23:30"}, 120, "30 1 * * *", 1),
        ({"frequency": "weekly", "day": "sunday", "time": "23:00", "timezone": "Europe/Paris"}, 120, "0 1 * * 1", 7),
        ({"frequency": "weekly", "day": "saturday", "time": "03:00"}, 60, "0 4 * * 6", 7),
        ({"frequency": "monthly", "day": 1, "time": "22:00"}, 180, "0 1 2 * *", 28),
        ({"frequency": "monthly", "day": 28, "time": "23:00"}, 120, "59 23 28 * *", 28),
    ],
)
def test_freshness_deadline(schedule, grace, cron, days):
    from bifrost_pipeline.config import Schedule

    assert freshness_deadline(Schedule(**schedule), grace) == (cron, __import__("datetime").timedelta(days=days))


def test_no_webhooks_no_alert_sensors(tmp_path):
    app = parse_config({"log_exports": {"exports": [EXPORT]}}, env={}, base_dir=tmp_path)
    names = {s.name for s in build_definitions(app, str(tmp_path / "x.yaml")).sensors}
    assert not names & {"alert_on_run_failure", "alert_on_check_failure", "alert_on_stale_export"}


def test_webhook_config_errors_never_show_the_url():
    with pytest.raises(ConfigError) as err:
        parse_config(
            {"alerts": {"webhooks": [{"url": "hooks.slack.com/T0SECRET", "format": "teams"}], "ui_base_url": "x"}},
            env={},
        )
    assert err.value.problems == [
        "alerts.webhooks[0].url: expected an http:// or https:// URL with a host for the webhook",
        "alerts.webhooks[0].format: Input should be 'slack' or 'json'",
        "alerts.ui_base_url: expected an http:// or https:// URL with a host for the Dagster UI",
    ]
    app = parse_config({"alerts": {"webhooks": [{"url": "https://hooks.slack.com/T0SECRET"}]}}, env={})
    assert "T0SECRET" not in repr(app) and "T0SECRET" not in app.model_dump_json()


def test_a_failed_post_is_logged_without_the_url_and_does_not_hang(receiver, caplog):
    alert = Alert(kind="run_failure", summary="s", job="j", run_id="r", url="http://ui/runs/r")
    receiver.status = 500
    error = Webhook(url=f"{receiver.url}/T0SECRET", format="json")
    assert post(error, alert) == "HTTP 500 Internal Server Error"
    receiver.status, receiver.delay_s = 200, 3
    slow = Webhook(url=f"{receiver.url}/T0SECRET", timeout_s=0.5)
    refused = Webhook(url="http://127.0.0.1:9/T0SECRET")  # the discard port: nothing listens
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert send([slow, refused], alert, logging.getLogger("test")) == 0
    assert time.monotonic() - started < 2.5
    assert len(caplog.records) == 2 and "alerts.webhooks[0] (slack)" in caplog.text
    assert "T0SECRET" not in caplog.text and "127.0.0.1" not in caplog.text


def test_slack_text_shows_markup_characters_as_written():
    from bifrost_pipeline.alerts import slack_body

    alert = Alert(kind="run_failure", summary="Run failed: x", job="j", run_id="r", url="http://ui/runs/r",
                  error="expected <b> & got <@U123>")
    body = slack_body(alert)
    assert "expected &lt;b&gt; &amp; got &lt;@U123&gt;" in body["text"]
    assert body["text"].endswith("<http://ui/runs/r|Open the run in Dagster>")
