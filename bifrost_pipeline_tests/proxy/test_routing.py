"""Pure decisions of the proxy's routing and admission: key choice, backoff, retry-or-fallback, rate limits,
virtual key lookup and the bounds of logging-header metadata; and the config that drives them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from bifrost_pipeline.config import parse_config
from bifrost_pipeline.config.loading import ConfigError
from bifrost_pipeline.proxy.auth import Bucket, Gate, allows, take_token
from bifrost_pipeline.proxy.forward import Rejected
from bifrost_pipeline.proxy.record import logging_metadata
from bifrost_pipeline.proxy.routing import Key, KeyPool, backoff_s, choose_key, next_step, parse_retry_after

KEYS = (Key("a", "sk-a", 1.0), Key("b", "sk-b", 3.0))


def test_choose_key_by_weight():
    assert choose_key(KEYS, {}, now=0.0, draw=0.0).name == "a"
    assert choose_key(KEYS, {}, now=0.0, draw=0.24).name == "a"  # a holds [0, 0.25)
    assert choose_key(KEYS, {}, now=0.0, draw=0.25).name == "b"
    assert choose_key(KEYS, {}, now=0.0, draw=0.999).name == "b"


def test_a_resting_key_is_skipped_until_its_rest_ends():
    resting = {"b": 10.0}
    assert {choose_key(KEYS, resting, now=5.0, draw=d).name for d in (0.0, 0.5, 0.99)} == {"a"}
    assert choose_key(KEYS, resting, now=10.0, draw=0.99).name == "b"
    # Every key resting: the one that wakes first, rather than no attempt at all.
    assert choose_key(KEYS, {"a": 30.0, "b": 20.0}, now=5.0, draw=0.0).name == "b"


def test_key_pool_rests_a_key_for_the_cooldown_or_the_retry_after():
    pool = KeyPool(KEYS, cooldown_s=60.0)
    pool.rest(KEYS[1], 120.0)
    assert {pool.choose().name for _ in range(20)} == {"a"}
    assert pool.has_awake_other_than(KEYS[1]) and not pool.has_awake_other_than(KEYS[0])


def test_backoff_doubles_with_jitter_and_is_capped():
    assert backoff_s(0, 0.5, 10.0, None, jitter=0.0) == 0.25
    assert backoff_s(0, 0.5, 10.0, None, jitter=0.999) == pytest.approx(0.5, abs=1e-3)
    assert backoff_s(2, 0.5, 10.0, None, jitter=1.0) == 2.0
    assert backoff_s(10, 0.5, 10.0, None, jitter=1.0) == 10.0


def test_backoff_honours_retry_after_up_to_the_cap():
    assert backoff_s(0, 0.5, 10.0, 3.0, jitter=0.0) == 3.0
    assert backoff_s(0, 0.5, 10.0, 60.0, jitter=0.0) == 10.0


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(date, now_epoch=now.timestamp()) == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("status", "retries_left", "fallbacks_left", "extra", "step"),
    [
        (500, 1, 1, {}, "retry"),
        (429, 1, 0, {}, "retry"),
        (None, 1, 0, {}, "retry"),  # connection failed
        (500, 0, 1, {}, "fallback"),
        (500, 0, 0, {}, "answer"),
        (400, 3, 3, {}, "answer"),  # the request's own fault: the same everywhere
        (401, 3, 0, {}, "answer"),  # the only key is refused: retrying it is pointless
        (401, 3, 0, {"other_key": True}, "retry"),
        (401, 0, 1, {}, "fallback"),
        (404, 2, 1, {}, "fallback"),
        (504, 2, 1, {"timed_out": True}, "fallback"),  # a timeout is not retried on the same provider
        (504, 2, 0, {"timed_out": True}, "answer"),
    ],
)
def test_next_step(status, retries_left, fallbacks_left, extra, step):
    assert next_step(status, retries_left=retries_left, fallbacks_left=fallbacks_left, **extra) == step


def test_token_bucket_refills_at_the_rate_per_minute():
    bucket = Bucket(tokens=2.0, at=0.0)
    assert take_token(bucket, 2, now=0.0) == 0.0
    assert take_token(bucket, 2, now=0.0) == 0.0
    assert take_token(bucket, 2, now=0.0) == pytest.approx(30.0)  # 2 a minute: one back in 30 s
    assert take_token(bucket, 2, now=15.0) == pytest.approx(15.0)
    assert take_token(bucket, 2, now=30.0) == 0.0


def _gate(require: bool = True, **vk) -> Gate:
    key = {"id": "vk-1", "secret": "s3cret-virtual-key-0001", "customer_id": "acme", "team_id": "search", **vk}
    app = parse_config(
        {"proxy": {"virtual_keys": [key], "require_virtual_key": require}, "providers": {
            "openai": {"base_url": "http://x/v1"}, "anthropic": {"base_url": "http://y/v1"}}},
        env={},
    )
    gate = Gate.from_config(app.proxy)
    assert gate is not None
    return gate


def test_gate_finds_the_key_by_bearer_or_header_and_refuses_others():
    gate = _gate()
    assert gate.identify({"authorization": "Bearer s3cret-virtual-key-0001"}).id == "vk-1"
    assert gate.identify({"x-bf-vk": "s3cret-virtual-key-0001", "authorization": "Bearer x"}).team_id == "search"
    for headers, reason in (({}, "missing_virtual_key"), ({"authorization": "Bearer nope"}, "invalid_virtual_key")):
        with pytest.raises(Rejected) as no:
            gate.identify(headers)
        assert (no.value.status, no.value.reason) == (401, reason)
        assert "nope" not in no.value.message


def test_gate_not_required_ignores_foreign_bearer_but_not_a_wrong_vk_header():
    gate = _gate(require=False)
    assert gate.identify({}) is None
    assert gate.identify({"authorization": "Bearer sk-the-clients-own"}) is None
    with pytest.raises(Rejected):
        gate.identify({"x-bf-vk": "wrong"})


def test_no_gate_without_keys_when_not_required():
    app = parse_config({"proxy": {"require_virtual_key": False}}, env={})
    assert Gate.from_config(app.proxy) is None


def test_gate_limits_requests_per_minute_with_retry_after():
    gate = _gate(requests_per_minute=1)
    vk = gate.identify({"x-bf-vk": "s3cret-virtual-key-0001"})
    gate.admit(vk, now=100.0)
    with pytest.raises(Rejected) as no:
        gate.admit(vk, now=101.0)
    assert (no.value.status, no.value.reason) == (429, "rate_limited")
    assert no.value.headers == ((b"retry-after", b"59"),)
    gate.admit(vk, now=160.0)


def test_allowed_providers_and_models():
    vk = _gate(providers=["openai"], models=["gpt-4o-mini"]).identify({"x-bf-vk": "s3cret-virtual-key-0001"})
    assert allows(vk, "openai", "gpt-4o-mini", "gpt-4o-mini")
    assert allows(vk, "openai", "gpt-4o-mini", "openai/gpt-4o-mini")
    assert not allows(vk, "openai", "gpt-4o", "gpt-4o")
    assert not allows(vk, "anthropic", "gpt-4o-mini", "anthropic/gpt-4o-mini")


def test_logging_metadata_is_bounded_visibly():
    headers = {"x-tenant-id": "t" * 100, **{f"x-bf-lh-k{i}": str(i) for i in range(10)}}
    meta, cut, dropped = logging_metadata(headers, ("x-tenant-id",), max_keys=4, max_value=16)
    assert meta["x-tenant-id"] == "t" * 16 + "…[84 more characters cut]"
    assert [k for k in meta if k != "_dropped"] == ["x-tenant-id", "k0", "k1", "k2"]
    assert meta["_dropped"] == "7 more logging header(s) dropped (client.max_logging_headers=4)"
    assert (cut, dropped) == (1, 7)
    assert logging_metadata({"x-bf-lh-a": "1"}, ()) == ({"a": "1"}, 0, 0)


def test_config_checks_keys_fallbacks_and_virtual_keys():
    base = {"base_url": "http://x/v1"}
    bad = [
        ({"providers": {"p": {**base, "api_key": "k", "keys": [{"name": "a", "value": "v"}]}}}, "not both"),
        ({"providers": {"p": {**base, "fallbacks": ["nowhere/m"]}}}, "names no configured provider"),
        ({"providers": {"p": {**base, "fallbacks": ["just-a-model"]}}}, "is not provider/model"),
        ({"proxy": {"virtual_keys": [{"id": "v", "secret": "short", "customer_id": "c"}]}}, "16 characters"),
        (
            {"proxy": {"virtual_keys": [
                {"id": "v", "secret": "same-secret-0123456789", "customer_id": "c"},
                {"id": "w", "secret": "same-secret-0123456789", "customer_id": "c"},
            ]}},
            "share a secret",
        ),
    ]
    for doc, words in bad:
        with pytest.raises(ConfigError) as err:
            parse_config(doc, env={})
        assert words in str(err.value)
        assert "same-secret" not in str(err.value)
