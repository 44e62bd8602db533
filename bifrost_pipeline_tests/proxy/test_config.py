"""The proxy's config sections: defaults, and a credential header refused as a logging header."""

from __future__ import annotations

import pytest

from bifrost_pipeline.config import ConfigError, parse_config
from bifrost_pipeline.proxy.upstream import Router


def test_defaults():
    app = parse_config({}, env={})
    assert app.proxy.queue_size == 100_000 and app.proxy.flush_interval_s == 1.0
    assert app.proxy.shutdown_grace_s == 30.0 and app.client.drop_excess_requests is False


def test_credential_headers_cannot_be_logging_headers():
    with pytest.raises(ConfigError) as exc:
        parse_config({"client": {"logging_headers": ["X-Tenant-ID", "Authorization"]}}, env={})
    assert "client.logging_headers: Authorization carries credentials" in str(exc.value)


def test_provider_key_comes_from_the_environment_and_is_secret():
    raw = {"providers": {"openai": {"base_url": "http://x/v1", "api_key": "${KEY}", "models": ["gpt-4o"]}}}
    app = parse_config(raw, env={"KEY": "sk-env"})
    assert "sk-env" not in repr(app.providers["openai"])
    name, model, target = Router(app.providers).resolve("gpt-4o")
    assert (name, model, target.api_key) == ("openai", "gpt-4o", "sk-env")
    with pytest.raises(ConfigError) as exc:
        parse_config(raw, env={})
    assert "providers.openai.api_key: environment variable KEY is not set" in str(exc.value)


def test_routing_rules():
    raw = {
        "providers": {"a": {"base_url": "http://a/v1", "models": ["m1"]}, "b": {"base_url": "http://b/v1"}}
    }
    router = Router(parse_config(raw, env={}).providers)
    assert router.resolve("b/m1")[:2] == ("b", "m1")  # the prefix wins over the model list
    assert router.resolve("m1")[:2] == ("a", "m1")
    assert (
        router.resolve("meta/llama") is None
    )  # an unknown prefix is not a provider; two providers: no default
    single = Router(parse_config({"providers": {"a": {"base_url": "http://a/v1"}}}, env={}).providers)
    assert single.resolve("meta/llama")[:2] == ("a", "meta/llama")
