"""parse -> route -> rewrite: what the proxy sends upstream, as pure functions (no server)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from pydantic import SecretStr

from bifrost_pipeline.config.proxy import ProviderConfig
from bifrost_pipeline.proxy.forward import (
    Rejected,
    parse_json,
    read_form,
    read_request,
    rebuild_form,
    rewrite,
    route,
)
from bifrost_pipeline.proxy.upstream import Router

CHAT = "/v1/chat/completions"
DROP = frozenset({"x-customer"})


def provider(base_url: str, key: str | None = None, models: tuple[str, ...] = ()) -> ProviderConfig:
    return ProviderConfig(
        base_url=base_url, api_key=SecretStr(key) if key else None, models=list(models), timeout_s=30.0
    )


ROUTER = Router(
    {
        "openai": provider("https://api.openai.com/v1", "sk-provider", ("gpt-4o-mini", "whisper-1")),
        "anthropic": provider("https://anthropic.example/v1/", "sk-ant", ("claude-3-haiku",)),
    }
)
HEADERS = {
    "content-type": "application/json",
    "authorization": "Bearer sk-client",
    "x-customer": "cust_1",
    "x-bf-lh-team": "search",
    "x-tenant-id": "t1",
    "host": "proxy:8080",
    "content-length": "99",
}


def plan_of(body: dict, path: str = CHAT, headers: dict | None = None):
    raw = orjson.dumps(body)
    request = parse_json(path, headers or HEADERS, raw)
    return rewrite(request, route(request, ROUTER), DROP)


def test_a_request_that_needs_no_change_is_forwarded_as_the_same_bytes():
    raw = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    request = parse_json(CHAT, HEADERS, raw)
    plan = rewrite(request, route(request, ROUTER), DROP)
    assert plan.body is raw
    assert (plan.route.provider, plan.route.model) == ("openai", "gpt-4o-mini")
    assert plan.url == "https://api.openai.com/v1/chat/completions"
    assert not request.stream and not request.streamed and not plan.hide_usage


def test_the_provider_prefix_is_taken_off_the_model_sent_upstream():
    plan = plan_of({"model": "anthropic/claude-3-5-sonnet", "messages": [], "temperature": 0.2})
    assert (plan.route.provider, plan.route.model) == ("anthropic", "claude-3-5-sonnet")
    assert orjson.loads(plan.body) == {"model": "claude-3-5-sonnet", "messages": [], "temperature": 0.2}
    assert plan.request.model == "anthropic/claude-3-5-sonnet"
    assert plan.url == "https://anthropic.example/v1/chat/completions"


def test_upstream_headers_carry_the_providers_key_and_none_of_the_clients_secrets():
    sent = plan_of({"model": "gpt-4o-mini", "messages": []}).upstream_headers
    assert sent["authorization"] == "Bearer sk-provider"
    assert sent["accept-encoding"] == "identity"
    assert sent["x-tenant-id"] == "t1"
    for gone in ("x-customer", "x-bf-lh-team", "host", "content-length"):
        assert gone not in sent


def test_a_stream_always_asks_for_usage_and_hides_the_chunk_the_client_did_not_ask_for():
    plan = plan_of({"model": "gpt-4o-mini", "messages": [], "stream": True})
    assert plan.hide_usage and plan.request.streamed
    assert orjson.loads(plan.body)["stream_options"] == {"include_usage": True}

    asked = plan_of({"model": "gpt-4o-mini", "messages": [], "stream": True, "stream_options": {"include_usage": True}})
    assert not asked.hide_usage and asked.body is asked.request.body

    kept = plan_of({"model": "gpt-4o-mini", "messages": [], "stream": True, "stream_options": {"x": 1}})
    assert orjson.loads(kept.body)["stream_options"] == {"x": 1, "include_usage": True}
    assert kept.request.json["stream_options"] == {"x": 1}  # the client's body is not changed in place


def test_only_chat_and_text_completions_get_stream_options():
    plan = plan_of({"model": "gpt-4o-mini", "input": "hi", "stream": True}, "/v1/responses")
    assert not plan.hide_usage and plan.body is plan.request.body


def test_speech_is_passed_on_as_it_comes_and_streams_only_with_sse():
    plain = plan_of({"model": "gpt-4o-mini", "input": "hi"}, "/v1/audio/speech")
    assert plain.request.streamed and not plain.request.stream
    sse = plan_of({"model": "gpt-4o-mini", "input": "hi", "stream_format": "sse"}, "/v1/audio/speech")
    assert sse.request.stream


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not JSON: "),
        (b"[1, 2]", "the body must be a JSON object"),
        (b'{"messages": []}', "the request names no model"),
        (b'{"model": ""}', "the request names no model"),
    ],
)
def test_a_body_that_cannot_be_forwarded_is_rejected_with_the_reason(body, message):
    with pytest.raises(Rejected) as err:
        parse_json(CHAT, HEADERS, body)
    assert err.value.status == 400 and err.value.message.startswith(message)
    assert err.value.etype == "invalid_request_error"


def test_a_model_no_provider_serves_is_rejected_naming_the_providers():
    request = parse_json(CHAT, HEADERS, b'{"model": "mystery-1"}')
    with pytest.raises(Rejected) as err:
        route(request, ROUTER)
    assert err.value.status == 400
    assert "no provider serves model 'mystery-1'" in err.value.message
    assert "(anthropic, openai/…)" in err.value.message


def _multipart(model: str) -> tuple[dict, bytes]:
    items = [("model", model), ("file", ("a.wav", "audio/wav", b"RIFF0000")), ("stream", "true")]
    body, ctype = rebuild_form(items, model)
    return {**HEADERS, "content-type": ctype}, body


def _scope(headers: dict) -> dict:
    return {"type": "http", "method": "POST", "path": "/v1/audio/transcriptions",
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}


def test_a_multipart_request_is_read_and_its_model_renamed_in_a_rebuilt_body():
    headers, body = _multipart("openai/whisper-1")
    request = asyncio.run(read_request(_scope(headers), "/v1/audio/transcriptions", headers, body))
    assert request.model == "openai/whisper-1" and request.stream and request.json == {}
    assert request.form["file"] == {"name": "a.wav", "bytes": 8, "content_type": "audio/wav"}
    plan = rewrite(request, route(request, ROUTER), DROP)
    assert plan.route.model == "whisper-1"
    assert plan.headers["content-type"] != headers["content-type"]  # a new boundary
    fields, items = asyncio.run(read_form(_scope(plan.headers), plan.body))
    assert fields["model"] == "whisper-1"
    assert ("file", ("a.wav", "audio/wav", b"RIFF0000")) in items


def test_a_multipart_request_for_a_listed_model_is_forwarded_untouched():
    headers, body = _multipart("whisper-1")
    request = asyncio.run(read_request(_scope(headers), "/v1/audio/transcriptions", headers, body))
    plan = rewrite(request, route(request, ROUTER), DROP)
    assert plan.body is body and plan.headers is headers


def test_an_unreadable_multipart_body_is_rejected():
    headers = {**HEADERS, "content-type": "multipart/form-data; boundary=xyz"}
    with pytest.raises(Rejected) as err:
        asyncio.run(read_request(_scope(headers), "/v1/audio/transcriptions", headers, b"--abc\r\nbroken"))
    assert err.value.status == 400
    assert err.value.message.startswith("the multipart body cannot be read")
