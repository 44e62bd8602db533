"""Virtual keys, retries, key rotation, fallbacks, refusal records and bounded metadata, through the openai
SDK against the mock upstream (which fails on demand), checked field by field on the landed record."""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest

from .conftest import free_port, landed, mock_requests, record_of, start_proxy, write_config

VK_ACME = "vk-acme-secret-0123456789abcdef"
VK_NARROW = "vk-narrow-secret-0123456789abcd"
VK_SLOW = "vk-limited-secret-0123456789abc"
KEY_HEAVY, KEY_LIGHT = "sk-rotate-heavy-000111", "sk-rotate-light-000222"
KEY_BAD, KEY_GOOD = "sk-refused-key-000333", "sk-accepted-key-000444"
FAST_RETRY = {"retry_backoff_s": 0.01, "retry_backoff_max_s": 1.0, "key_cooldown_s": 60}


@pytest.fixture(scope="module")
def env(tmp_path_factory, mock_upstream, log_dir):
    base = tmp_path_factory.mktemp("proxy-routing")
    mock = mock_upstream.url + "/v1"
    # A key drawn with weight 1e9 against 1 is the first choice for sure, which makes rotation observable.
    providers = {
        "openai": {
            "base_url": mock,
            "keys": [{"name": "k1", "value": "sk-openai-k1-0001"}, {"name": "k2", "value": "sk-openai-k2-0002"}],
            "models": ["gpt-4o-mini"],
            "max_retries": 2,
            "fallbacks": ["anthropic/claude-3-haiku"],
            **FAST_RETRY,
        },
        "anthropic": {"base_url": mock, "api_key": "sk-anthropic-test", "models": ["claude-3-haiku"]},
        "rotate": {
            "base_url": mock,
            "keys": [{"name": "heavy", "value": KEY_HEAVY, "weight": 1e9}, {"name": "light", "value": KEY_LIGHT}],
            "max_retries": 1,
            **FAST_RETRY,
        },
        "refusing": {
            "base_url": mock,
            "keys": [{"name": "bad", "value": KEY_BAD, "weight": 1e9}, {"name": "good", "value": KEY_GOOD}],
            "max_retries": 1,
            **FAST_RETRY,
        },
        "down": {
            "base_url": f"http://127.0.0.1:{free_port()}/v1",
            "max_retries": 1,
            "fallbacks": ["openai/gpt-4o-mini"],
            **FAST_RETRY,
        },
    }
    vks = [
        {"id": "vk-acme", "name": "acme-search", "secret": "${VK_ACME}", "customer_id": "acme", "team_id": "search"},
        {"id": "vk-narrow", "secret": VK_NARROW, "customer_id": "globex", "models": ["gpt-4o-mini"]},
        {"id": "vk-slow", "secret": VK_SLOW, "customer_id": "initech", "requests_per_minute": 2},
    ]
    cfg = write_config(
        base / "config.json",
        base / "landing",
        mock_upstream.url,
        client={"required_headers": ["x-app"], "max_logging_headers": 5, "max_logging_header_bytes": 100},
        providers=providers,
        proxy={"require_virtual_key": True, "virtual_keys": vks, "max_body_bytes": 4096},
    )
    server = start_proxy("proxy-routing", cfg, log_dir, env={"VK_ACME": VK_ACME})
    yield {"url": server.url, "landing": base / "landing", "server": server, "mock": mock_upstream}
    server.stop()


def _client(env, key: str = VK_ACME, **headers) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=env["url"] + "/v1", api_key=key, max_retries=0, timeout=20, default_headers={"x-app": "t", **headers}
    )


def _chat(env, model: str = "gpt-4o-mini", key: str = VK_ACME, stream: bool = False, **headers):
    raw = _client(env, key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello there"}], stream=stream, extra_headers=headers
    )
    body = raw.parse()
    if stream:
        body = list(body)
    return record_of(env["landing"], raw.headers["x-request-id"]), body


def _fail_once(status: str, n: int = 1) -> dict:
    return {"x-mock-fail": f"{status}*{n}", "x-mock-fail-id": str(uuid.uuid4())}


def _trail(rec: dict) -> list[tuple]:
    return [(a["provider"], a["model"], a["key_name"], a["status_code"], a["error_type"]) for a in rec["attempts"]]


def test_virtual_key_bills_its_customer_and_team_and_is_never_forwarded(env):
    rec, _ = _chat(env, **{"x-customer": "someone-else"})
    assert (rec["customer_id"], rec["team_id"], rec["virtual_key_id"]) == ("acme", "search", "vk-acme")
    assert (rec["status"], rec["retries"], rec["fallback_index"]) == ("success", 0, 0)
    assert len(rec["attempts"]) == 1
    only = rec["attempts"][0]
    assert (only["provider"], only["model"], only["status_code"], only["error_type"]) == (
        "openai", "gpt-4o-mini", 200, None,
    )
    assert only["key_name"] in ("k1", "k2") and 0 <= only["latency_ms"] <= rec["latency_ms"]
    seen = [r for r in mock_requests(env["mock"]) if r["path"] == "/v1/chat/completions"][-1]
    assert seen["headers"]["authorization"] in ("Bearer sk-openai-k1-0001", "Bearer sk-openai-k2-0002")
    assert "x-bf-vk" not in seen["headers"]


def test_virtual_key_in_x_bf_vk(env):
    raw = _client(env, key="not-a-virtual-key").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-bf-vk": VK_NARROW}
    )
    rec = record_of(env["landing"], raw.headers["x-request-id"])
    assert (rec["customer_id"], rec["team_id"], rec["virtual_key_id"]) == ("globex", None, "vk-narrow")


@pytest.mark.parametrize(
    ("key", "reason"), [("", "missing_virtual_key"), ("sk-wrong-virtual-key-999", "invalid_virtual_key")]
)
def test_missing_or_unknown_key_is_refused_401_and_recorded(env, key, reason):
    headers = {"x-app": "t", "x-customer": "cust-9"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    resp = httpx.post(env["url"] + "/v1/chat/completions", json={"model": "gpt-4o-mini"}, headers=headers)
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    rec = record_of(env["landing"], resp.headers["x-request-id"])
    assert (rec["status"], rec["status_code"], rec["error_type"]) == ("error", 401, reason)
    assert (rec["provider"], rec["model"], rec["customer_id"], rec["virtual_key_id"]) == (
        "unknown", "unknown", "cust-9", None,
    )
    assert (rec["attempts"], rec["retries"], rec["fallback_index"]) == ([], None, None)
    assert rec["request_type"] == "chat" and rec["endpoint"] == "/v1/chat/completions"
    with pytest.raises(openai.AuthenticationError):
        _client(env, key="sk-wrong-virtual-key-999").chat.completions.create(model="gpt-4o-mini", messages=[])


def test_model_not_allowed_is_refused_403_and_recorded(env):
    with pytest.raises(openai.PermissionDeniedError) as err:
        _client(env, VK_NARROW).chat.completions.create(
            model="claude-3-haiku", messages=[{"role": "user", "content": "x"}]
        )
    rec = record_of(env["landing"], err.value.response.headers["x-request-id"])
    assert (rec["status_code"], rec["error_type"], rec["virtual_key_id"], rec["customer_id"]) == (
        403, "model_not_allowed", "vk-narrow", "globex",
    )
    assert (rec["provider"], rec["model"]) == ("anthropic", "claude-3-haiku")


def test_over_the_limit_is_refused_429_with_retry_after(env):
    client = _client(env, VK_SLOW)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 30
    rec = record_of(env["landing"], err.value.response.headers["x-request-id"])
    assert (rec["status_code"], rec["error_type"], rec["virtual_key_id"]) == (429, "rate_limited", "vk-slow")


def test_retries_on_5xx_until_success(env):
    rec, resp = _chat(env, **_fail_once("500", 2))
    assert resp.choices[0].message.content
    assert (rec["status"], rec["status_code"], rec["retries"], rec["fallback_index"]) == ("success", 200, 2, 0)
    assert [(p, m, s, e) for p, m, _, s, e in _trail(rec)] == [
        ("openai", "gpt-4o-mini", 500, "api_error"),
        ("openai", "gpt-4o-mini", 500, "api_error"),
        ("openai", "gpt-4o-mini", 200, None),
    ]
    assert rec["attempts"][0]["error_message"] == "mock error 500"


def test_retry_after_of_the_provider_is_honoured(env):
    rec, _ = _chat(env, **_fail_once("503"), **{"x-mock-retry-after": "0.4"})
    assert rec["retries"] == 1 and rec["latency_ms"] >= 400


def test_a_cut_connection_is_retried(env):
    rec, _ = _chat(env, **_fail_once("reset"))
    assert [(s, e) for *_, s, e in _trail(rec)] == [(502, "upstream_error"), (200, None)]
    assert rec["status"] == "success"


def test_a_stream_is_retried_before_its_first_byte(env):
    rec, chunks = _chat(env, stream=True, **_fail_once("429"))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (rec["stream"], rec["status"], rec["retries"]) == (True, "success", 1)
    assert [s for *_, s, _e in _trail(rec)] == [429, 200]


def test_fallback_after_the_retries_of_the_primary(env):
    rec, resp = _chat(env, **{"x-mock-fail-model": "gpt-4o-mini=503"})
    assert resp.model == "claude-3-haiku"
    assert (rec["provider"], rec["model"], rec["status"]) == ("anthropic", "claude-3-haiku", "success")
    assert (rec["retries"], rec["fallback_index"]) == (2, 1)
    assert [(p, m, s) for p, m, _k, s, _e in _trail(rec)] == [
        ("openai", "gpt-4o-mini", 503),
        ("openai", "gpt-4o-mini", 503),
        ("openai", "gpt-4o-mini", 503),
        ("anthropic", "claude-3-haiku", 200),
    ]
    assert rec["attempts"][-1]["key_name"] == "default"


def test_fallback_from_an_unreachable_provider(env):
    rec, _ = _chat(env, model="down/some-model")
    assert [(p, s, e) for p, _m, _k, s, e in _trail(rec)] == [
        ("down", 502, "upstream_unreachable"),
        ("down", 502, "upstream_unreachable"),
        ("openai", 200, None),
    ]
    assert (rec["provider"], rec["model"], rec["retries"], rec["fallback_index"]) == ("openai", "gpt-4o-mini", 1, 1)


def test_every_attempt_failing_answers_the_last_error(env):
    with pytest.raises(openai.InternalServerError) as err:
        _client(env).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], extra_headers={"x-mock-fail": "500"}
        )
    rec = record_of(env["landing"], err.value.response.headers["x-request-id"])
    assert (rec["status"], rec["status_code"], rec["error_type"]) == ("error", 500, "api_error")
    assert (rec["provider"], rec["retries"], rec["fallback_index"], len(rec["attempts"])) == ("anthropic", 2, 1, 4)
    assert rec["attempts"][-1]["status_code"] == 500


def test_a_key_answering_429_rests_and_the_other_key_serves(env):
    fail = {"x-mock-fail-key": f"{KEY_HEAVY}=429"}
    first, _ = _chat(env, model="rotate/m", **fail)
    assert [(k, s) for _p, _m, k, s, _e in _trail(first)] == [("heavy", 429), ("light", 200)]
    assert first["retries"] == 1
    for _ in range(3):  # heavy rests (key_cooldown_s): light is chosen first, without a failed attempt
        rec, _ = _chat(env, model="rotate/m", **fail)
        assert [(k, s) for _p, _m, k, s, _e in _trail(rec)] == [("light", 200)]


def test_a_key_answering_401_is_replaced_by_another(env):
    rec, _ = _chat(env, model="refusing/m", **{"x-mock-fail-key": f"{KEY_BAD}=401"})
    assert [(k, s, e) for _p, _m, k, s, e in _trail(rec)] == [
        ("bad", 401, "authentication_error"),
        ("good", 200, None),
    ]


def test_refusals_before_the_provider_are_recorded(env):
    url = env["url"] + "/v1/chat/completions"
    auth = {"authorization": f"Bearer {VK_ACME}", "x-app": "t"}
    cases = [
        (httpx.post(url, content=b"{not json", headers=auth), 400, "invalid_json"),
        (httpx.post(url, json={"model": "gpt-4o-mini", "pad": "x" * 5000}, headers=auth), 413, "body_too_large"),
        (httpx.post(url, json={"model": "gpt-4o-mini"}, headers={"authorization": auth["authorization"]}), 400,
         "missing_header"),
    ]
    for resp, status, reason in cases:
        assert resp.status_code == status, resp.text
        rec = record_of(env["landing"], resp.headers["x-request-id"])
        assert (rec["status"], rec["status_code"], rec["error_type"]) == ("error", status, reason)
        assert rec["virtual_key_id"] == ("vk-acme" if reason != "missing_header" else None)
        assert rec["error_message"] and rec["attempts"] == []
    metrics = httpx.get(env["url"] + "/metrics").text
    for reason in ("invalid_json", "body_too_large", "missing_header"):
        assert f'bifrost_proxy_requests_refused_total{{reason="{reason}"}}' in metrics


def test_logging_metadata_is_capped_and_counted(env):
    many = {f"x-bf-lh-h{i:03d}": "v" for i in range(200)}
    rec, _ = _chat(env, **{"x-tenant-id": "t" * 60_000, **many})
    meta = rec["metadata"]
    assert meta["x-tenant-id"] == "t" * 100 + "…[59900 more characters cut]"
    assert len(meta) == 6 and meta["_dropped"].startswith("196 more logging header(s) dropped")
    metrics = httpx.get(env["url"] + "/metrics").text
    assert 'bifrost_proxy_logging_metadata_cut_total{what="value"} 1.0' in metrics
    assert 'bifrost_proxy_logging_metadata_cut_total{what="key"} 196.0' in metrics


def test_secrets_never_land_nor_reach_the_log(env):
    text = json.dumps(landed(env["landing"])) + env["server"].log.read_text()
    for secret in (VK_ACME, VK_NARROW, VK_SLOW, KEY_HEAVY, KEY_LIGHT, KEY_BAD, KEY_GOOD, "sk-openai-k1-0001"):
        assert secret not in text


def test_routing_labels_of_the_metrics(env):
    _chat(env, **_fail_once("500"))
    lines = [ln for ln in httpx.get(env["url"] + "/metrics").text.splitlines()
             if ln.startswith("bifrost_success_requests_total{") and 'number_of_retries="1"' in ln]
    assert lines, "no success counted with one retry"
    line = lines[0]
    for label in ('virtual_key_id="vk-acme"', 'virtual_key_name="acme-search"', 'fallback_index="0"',
                  'routing_engines_used="governance,loadbalancing"', 'provider="openai"'):
        assert label in line
    assert 'selected_key_name="k1"' in line or 'selected_key_name="k2"' in line
    fell_back = [ln for ln in httpx.get(env["url"] + "/metrics").text.splitlines()
                 if ln.startswith("bifrost_success_requests_total{") and 'fallback_index="1"' in ln]
    assert any('provider="anthropic"' in ln and 'selected_key_name="default"' in ln for ln in fell_back)
