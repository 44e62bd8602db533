"""`/metrics`: the metric names and base labels of seed 002, and custom labels limited to the configured ones."""

from __future__ import annotations

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from bifrost_pipeline.proxy.metrics import BASE_LABELS

from .conftest import CLIENT_KEY

SEED_002 = {
    # name: labels beyond the base labels (custom labels come on top)
    "bifrost_upstream_requests_total": (),
    "bifrost_success_requests_total": (),
    "bifrost_error_requests_total": ("status_code",),
    "bifrost_upstream_latency_seconds": ("is_success",),
    "bifrost_input_tokens_total": (),
    "bifrost_output_tokens_total": (),
    "bifrost_cost_total": (),
}
CUSTOM = {"team", "env"}


def _samples(url: str) -> dict[str, list]:
    text = httpx.get(url + "/metrics").text
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_seed_002_names_and_labels(proxy_env):
    client = openai.OpenAI(base_url=proxy_env["url"] + "/v1", api_key=CLIENT_KEY, max_retries=0)
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "m"}],
        extra_headers={"x-bf-prom-team": "search", "x-bf-prom-env": "prod"},
    )
    list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "m"}],
            stream=True,
            extra_headers={"x-bf-prom-team": "search"},
        )
    )
    try:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "m"}],
            extra_headers={"x-mock-status": "500", "x-bf-prom-team": "search"},
        )
    except openai.InternalServerError:
        pass
    samples = _samples(proxy_env["url"])
    base = set(BASE_LABELS)
    for name, extra in SEED_002.items():
        key = name if name.endswith("_total") else name + "_count"
        assert key in samples, f"{name} missing"
        for s in samples[key]:
            assert set(s.labels) == base | set(extra) | CUSTOM, (name, s.labels)
    for name in ("bifrost_stream_first_token_latency_seconds", "bifrost_stream_inter_token_latency_seconds"):
        assert {frozenset(s.labels) for s in samples[name + "_count"]} == {frozenset(base)}
    for name in ("http_requests_total", "http_request_duration_seconds_count"):
        assert {frozenset(s.labels) for s in samples[name]} == {
            frozenset({"path", "method", "status"} | CUSTOM)
        }

    def value(name, **labels):
        return sum(s.value for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items()))

    assert (
        value(
            "bifrost_upstream_requests_total",
            provider="openai",
            model="gpt-4o-mini",
            method="chat",
            team="search",
        )
        >= 3
    )
    assert value("bifrost_error_requests_total", status_code="500", team="search") >= 1
    assert value("bifrost_success_requests_total", team="search", env="prod") >= 1
    assert value("bifrost_input_tokens_total", team="search", env="prod") >= 1
    assert value("bifrost_cost_total", team="search", env="prod") > 0
    assert value("http_requests_total", path="/v1/chat/completions", method="POST", status="500") >= 1
    assert value("bifrost_upstream_latency_seconds_count", is_success="false") >= 1
    assert value("bifrost_stream_inter_token_latency_seconds_count", model="gpt-4o-mini") >= 10


def test_custom_labels_cannot_explode_cardinality(proxy_env):
    def series(samples):
        return {
            (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")))
            for v in samples.values()
            for s in v
        }

    series_before = series(_samples(proxy_env["url"]))
    client = openai.OpenAI(base_url=proxy_env["url"] + "/v1", api_key=CLIENT_KEY, max_retries=0)
    for i in range(5):
        client.embeddings.create(
            model="text-embedding-3-small",
            input="x",
            extra_headers={
                f"x-bf-prom-random-{i}": "v",
                "x-bf-prom-user_id": f"user-{i}",
                "x-bf-prom-team": "t" * 500,
            },
        )
    after = _samples(proxy_env["url"])
    names = {k for v in after.values() for s in v for k in s.labels}
    assert not any(n.startswith("random") or n == "user_id" for n in names)
    new = series(after) - series_before
    assert new  # the requests did add series (the first with a 64-character team)
    # Five requests with five different unconfigured labels add one series per metric, not five.
    assert len({n for n, _ in new}) == len(new)
    teams = {s.labels["team"] for s in after["bifrost_upstream_requests_total"]}
    assert "t" * 64 in teams and "t" * 500 not in teams


def test_unmatched_paths_share_one_label(proxy_env):
    for i in range(3):
        assert httpx.get(proxy_env["url"] + f"/nope/{i}").status_code == 404
    samples = _samples(proxy_env["url"])
    paths = {s.labels["path"] for s in samples["http_requests_total"]}
    assert "unmatched" in paths and not any(p.startswith("/nope") for p in paths)


def test_label_values_a_client_controls_are_capped(caplog):
    from bifrost_pipeline.proxy.metrics import OTHER, Metrics

    m = Metrics(["team"], max_label_values=3)
    for i in range(6):
        custom = m.custom_values({"x-bf-prom-team": f"t{i}"})
        rec = {
            "provider": "openai",
            "model": f"model-{i}",
            "request_type": "chat",
            "status": "success",
            "status_code": 200,
            "input_tokens": 1,
        }
        m.observe_record(rec, 0.01, custom, [])
    fams = {f.name: f for f in text_string_to_metric_families(m.render()[0].decode())}
    samples = fams["bifrost_upstream_requests"].samples
    assert {s.labels["team"] for s in samples} == {"t0", "t1", "t2", OTHER}
    assert {s.labels["model"] for s in samples} == {"model-0", "model-1", "model-2", OTHER}
    assert sum(s.value for s in samples if s.labels["team"] == OTHER) == 3
    assert "label 'team' has 3 distinct values" in caplog.text
