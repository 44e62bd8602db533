"""The proxy through the official openai SDK, in front of the mock upstream: records field by field."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import httpx
import jsonschema
import openai
import pytest

from bifrost_pipeline import records
from bifrost_pipeline.proxy.pricing import Pricing

from .conftest import CLIENT_KEY, PROVIDER_KEY, landed, mock_requests, record_of


@pytest.fixture(scope="module")
def client(proxy_env) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy_env["url"] + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def _schema_valid(rec: dict) -> None:
    cls = jsonschema.validators.validator_for(records.json_schema())
    cls(records.json_schema(), format_checker=cls.FORMAT_CHECKER).validate(rec)


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s)


def test_chat_record_field_by_field(client, proxy_env):
    before = datetime.now(UTC)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "count these five words"}],
        user="user-42",
        extra_headers={
            "x-tenant-id": "acme",  # configured as X-Tenant-ID: matched case-insensitively
            "X-Correlation-ID": "corr-1",
            "x-bf-lh-env": "production",
            "x-bf-lh-region": "us-east-1",
            "X-Customer": "cust-7",
            "x-unlogged": "nope",
        },
    )
    resp = raw.parse()
    rid = raw.headers["x-request-id"]
    rec = record_of(proxy_env["landing"], rid)
    _schema_valid(rec)
    assert rec["schema_version"] == "2"
    assert before - timedelta(seconds=1) <= _ts(rec["timestamp"]) <= datetime.now(UTC)
    assert _ts(rec["ended_at"]) >= _ts(rec["timestamp"])
    assert rec["timestamp"].endswith("Z")
    assert rec["request_id"] == rid
    assert rec["customer_id"] == "cust-7"
    assert rec["user_id"] == "user-42"
    assert (rec["provider"], rec["model"]) == ("openai", "gpt-4o-mini")
    assert (rec["endpoint"], rec["method"], rec["request_type"]) == ("/v1/chat/completions", "POST", "chat")
    assert rec["stream"] is False
    assert (rec["status"], rec["status_code"], rec["error_type"], rec["error_message"]) == (
        "success",
        200,
        None,
        None,
    )
    assert rec["finish_reason"] == "stop"
    assert 0 <= rec["latency_ms"] < 5000
    assert rec["time_to_first_token_ms"] is None
    assert rec["input_tokens"] == resp.usage.prompt_tokens == 4
    assert rec["output_tokens"] == resp.usage.completion_tokens
    assert rec["total_tokens"] == resp.usage.total_tokens
    assert rec["cached_tokens"] == 0 and rec["reasoning_tokens"] == 0
    price_in, price_out = Pricing().price("openai", "gpt-4o-mini")
    expected = (rec["input_tokens"] * price_in + rec["output_tokens"] * price_out) / 1e6
    assert rec["cost_usd"] == pytest.approx(expected)
    assert rec["metadata"] == {
        "x-tenant-id": "acme",
        "x-correlation-id": "corr-1",
        "env": "production",
        "region": "us-east-1",
    }
    assert json.loads(rec["input_content"]) == [{"role": "user", "content": "count these five words"}]
    out = json.loads(rec["output_content"])
    assert out[0]["message"]["content"] == resp.choices[0].message.content
    assert (rec["retries"], rec["fallback_index"], rec["parent_request_id"]) == (0, 0, None)


def test_client_key_never_forwarded_nor_landed(client, proxy_env):
    raw = client.chat.completions.with_raw_response.create(
        model="anthropic/claude-3-haiku",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-api-key": "another-client-secret", "x-bf-lh-authorization": "Bearer leaked"},
    )
    rid = raw.headers["x-request-id"]
    rec = record_of(proxy_env["landing"], rid)
    assert rec["provider"] == "anthropic" and rec["model"] == "claude-3-haiku"
    seen = [r for r in mock_requests(proxy_env["mock"]) if r["path"] == "/v1/chat/completions"][-1]
    assert seen["headers"]["authorization"] == "Bearer sk-anthropic-test"
    assert "x-api-key" not in seen["headers"]
    assert not any(k.startswith("x-bf-") for k in seen["headers"])
    assert seen["body"]["model"] == "claude-3-haiku"  # the provider prefix is removed upstream
    assert rec["metadata"] is None  # x-bf-lh-authorization is a credential: not captured
    landed_text = json.dumps(landed(proxy_env["landing"]))
    log_text = proxy_env["server"].log.read_text()
    for secret in (CLIENT_KEY, "another-client-secret", PROVIDER_KEY, "sk-anthropic-test", "leaked"):
        assert secret not in landed_text
        assert secret not in log_text


def test_provider_key_from_environment(client, proxy_env):
    client.embeddings.create(model="text-embedding-3-small", input="hello")
    seen = [r for r in mock_requests(proxy_env["mock"]) if r["path"] == "/v1/embeddings"][-1]
    assert seen["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"


def test_streaming_chat_usage_from_final_chunk(client, proxy_env):
    stream = client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "stream it"}],
        stream=True,
        extra_headers={"x-mock-chunks": "6", "x-mock-chunk-delay-ms": "5"},
    )
    rid = stream.headers["x-request-id"]
    chunks = list(stream.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # The client did not ask for usage: the usage chunk the proxy asked for is not passed on.
    assert all(c.usage is None for c in chunks)
    seen = [r for r in mock_requests(proxy_env["mock"]) if r["path"] == "/v1/chat/completions"][-1]
    assert seen["body"]["stream_options"] == {"include_usage": True}
    rec = record_of(proxy_env["landing"], rid)
    assert rec["stream"] is True and rec["status"] == "success"
    assert rec["input_tokens"] == 2 and rec["output_tokens"] == 6 and rec["total_tokens"] == 8
    assert (
        rec["time_to_first_token_ms"] is not None and 0 <= rec["time_to_first_token_ms"] <= rec["latency_ms"]
    )
    assert rec["latency_ms"] >= 25  # six chunks 5 ms apart
    assert rec["finish_reason"] == "stop"
    assert json.loads(rec["output_content"]) == {"role": "assistant", "content": text}
    assert rec["cost_usd"] > 0


def test_streaming_chat_client_asked_for_usage(client, proxy_env):
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "a b c"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-mock-chunks": "3"},
        )
    )
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].prompt_tokens == 3 and usage[0].completion_tokens == 3


@pytest.mark.parametrize(
    "kind",
    [
        "completions",
        "completions_stream",
        "responses",
        "responses_stream",
        "embeddings",
        "speech",
        "transcription",
        "transcription_stream",
    ],
)
def test_request_types(client, proxy_env, kind):
    if kind == "completions":
        raw = client.completions.with_raw_response.create(model="gpt-4o-mini", prompt="say hi", max_tokens=4)
        expect = ("text_completion", "/v1/completions", False, 2, 4)
    elif kind == "completions_stream":
        raw = client.completions.with_raw_response.create(
            model="gpt-4o-mini", prompt="say hi", max_tokens=4, stream=True
        )
        list(raw.parse())
        expect = ("text_completion", "/v1/completions", True, 2, 4)
    elif kind == "responses":
        raw = client.responses.with_raw_response.create(
            model="gpt-4o-mini", input="one two three", extra_headers={"x-mock-chunks": "5"}
        )
        assert raw.parse().output_text.split()[0] == "This"
        expect = ("responses", "/v1/responses", False, 3, 5)
    elif kind == "responses_stream":
        raw = client.responses.with_raw_response.create(
            model="gpt-4o-mini", input="one two three", stream=True, extra_headers={"x-mock-chunks": "5"}
        )
        events = list(raw.parse())
        assert events[-1].type == "response.completed"
        expect = ("responses", "/v1/responses", True, 3, 5)
    elif kind == "embeddings":
        raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["a b", "c"])
        assert len(raw.parse().data) == 2
        expect = ("embeddings", "/v1/embeddings", False, 3, None)
    elif kind == "speech":
        raw = client.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input="hello")
        assert raw.content[:3] == b"ID3"
        expect = ("speech", "/v1/audio/speech", False, None, None)
    elif kind == "transcription_stream":
        raw = client.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=("a.wav", b"\x00" * 1000, "audio/wav"), stream=True
        )
        events = list(raw.parse())
        assert (
            events[-1].type == "transcript.text.done"
            and events[-1].text == "mock transcription of 1000 bytes"
        )
        expect = ("transcription", "/v1/audio/transcriptions", True, 10, 5)
    else:
        raw = client.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=("a.wav", b"\x00" * 1000, "audio/wav")
        )
        assert raw.parse().text == "mock transcription of 1000 bytes"
        expect = ("transcription", "/v1/audio/transcriptions", False, 10, 5)
    rec = record_of(proxy_env["landing"], raw.headers["x-request-id"])
    _schema_valid(rec)
    assert (
        rec["request_type"],
        rec["endpoint"],
        rec["stream"],
        rec["input_tokens"],
        rec["output_tokens"],
    ) == expect
    assert rec["status"] == "success" and rec["status_code"] == 200
    if kind == "embeddings":
        assert json.loads(rec["output_content"]) == {"embeddings": 2, "dimensions": 8}
    if kind == "speech":
        assert json.loads(rec["input_content"]) == "hello"
        assert json.loads(rec["output_content"]) == {
            "audio_bytes": len(raw.content),
            "content_type": "audio/mpeg",
        }
    if kind.startswith("transcription"):
        assert json.loads(rec["input_content"])["file"] == {
            "name": "a.wav",
            "bytes": 1000,
            "content_type": "audio/wav",
        }
    if kind.endswith("_stream"):
        assert rec["time_to_first_token_ms"] is not None


def test_transcription_with_provider_prefix_rewrites_multipart(client, proxy_env):
    raw = client.audio.transcriptions.with_raw_response.create(
        model="openai/whisper-1", file=("b.mp3", b"\x01" * 300, "audio/mpeg")
    )
    assert raw.parse().text == "mock transcription of 300 bytes"
    seen = [r for r in mock_requests(proxy_env["mock"]) if r["path"] == "/v1/audio/transcriptions"][-1]
    assert seen["body"]["model"] == "whisper-1" and seen["body"]["file_bytes"] == 300
    rec = record_of(proxy_env["landing"], raw.headers["x-request-id"])
    assert (rec["provider"], rec["model"]) == ("openai", "whisper-1")


def test_unknown_model_is_rejected_with_a_clear_message(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert "no provider serves model 'no-such-model'" in str(exc.value)


@pytest.mark.parametrize(
    "status,exc_type,etype",
    [
        (500, openai.InternalServerError, "api_error"),
        (429, openai.RateLimitError, "rate_limit_error"),
        (401, openai.AuthenticationError, "authentication_error"),
    ],
)
def test_upstream_error_gives_error_record_and_the_upstream_status(
    client, proxy_env, status, exc_type, etype
):
    with pytest.raises(exc_type) as exc:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-status": str(status)},
        )
    assert exc.value.status_code == status
    rec = record_of(proxy_env["landing"], exc.value.response.headers["x-request-id"])
    assert (rec["status"], rec["status_code"], rec["error_type"]) == ("error", status, etype)
    assert rec["error_message"] == f"mock error {status}"
    assert rec["input_tokens"] is None and rec["cost_usd"] is None and rec["output_content"] is None


def test_upstream_error_on_a_stream_request(client, proxy_env):
    with pytest.raises(openai.InternalServerError) as exc:
        list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "x"}],
                stream=True,
                extra_headers={"x-mock-status": "503"},
            )
        )
    assert exc.value.status_code == 503
    rec = record_of(proxy_env["landing"], exc.value.response.headers["x-request-id"])
    assert rec["stream"] is True and (rec["status"], rec["status_code"]) == ("error", 503)


def test_upstream_timeout(client, proxy_env):
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(
            model="slow/gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-delay-ms": "3000"},
        )
    assert exc.value.status_code == 504
    rec = record_of(proxy_env["landing"], exc.value.response.headers["x-request-id"])
    assert (rec["status"], rec["status_code"], rec["error_type"]) == ("error", 504, "timeout")
    assert rec["provider"] == "slow" and 400 <= rec["latency_ms"] < 2500


def test_upstream_unreachable(client, proxy_env):
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="down/gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 502
    rec = record_of(proxy_env["landing"], exc.value.response.headers["x-request-id"])
    assert (rec["status"], rec["status_code"], rec["error_type"]) == ("error", 502, "upstream_unreachable")


def test_mid_stream_client_disconnect_still_lands_a_record(proxy_env):
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "long"}]}
    headers = {"x-mock-chunks": "200", "x-mock-chunk-delay-ms": "20", "authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.Client(timeout=10) as http:
        with http.stream(
            "POST", proxy_env["url"] + "/v1/chat/completions", json=body, headers=headers
        ) as resp:
            rid = resp.headers["x-request-id"]
            got = b""
            for chunk in resp.iter_raw():
                got += chunk
                if got.count(b"data:") >= 3:
                    break
        # leaving the block closes the connection mid-stream
    rec = record_of(proxy_env["landing"], rid)
    assert rec["stream"] is True
    assert (rec["status"], rec["status_code"], rec["error_type"]) == ("error", 499, "client_disconnected")
    assert rec["latency_ms"] < 3000  # recorded when the client left, not when the 4 s stream would have ended
    assert rec["time_to_first_token_ms"] is not None
    partial = json.loads(rec["output_content"])["content"]
    assert partial.startswith("This is") and len(partial.split()) < 200


def test_speech_audio_is_passed_on_as_it_comes(client, proxy_env):
    # 5 chunks, 300 ms apart: the first must reach the client long before the last is made.
    headers = {"x-mock-chunks": "5", "x-mock-chunk-delay-ms": "300"}
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="read this aloud", extra_headers=headers
    ) as resp:
        arrivals, audio = [], b""
        for chunk in resp.iter_bytes():
            arrivals.append(datetime.now(UTC))
            audio += chunk
        rid = resp.headers["x-request-id"]
    assert audio[:3] == b"ID3" and len(audio) == 3 + 5 * 256
    assert (arrivals[-1] - arrivals[0]).total_seconds() > 0.9  # streamed, not buffered by the proxy
    rec = record_of(proxy_env["landing"], rid)
    _schema_valid(rec)
    assert (rec["request_type"], rec["stream"], rec["status"]) == ("speech", False, "success")
    assert json.loads(rec["output_content"]) == {"audio_bytes": len(audio), "content_type": "audio/mpeg"}
    assert rec["time_to_first_token_ms"] is not None and rec["time_to_first_token_ms"] < 600
    assert rec["latency_ms"] >= 1200


def test_speech_sse_usage_and_audio_size(client, proxy_env):
    with client.audio.speech.with_streaming_response.create(
        model="openai/gpt-4o-mini-tts",
        voice="alloy",
        input="one two three four",
        stream_format="sse",
        extra_headers={"x-mock-chunks": "4"},
    ) as resp:
        events = [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:")]
        rid = resp.headers["x-request-id"]
    decoded = sum(len(base64.b64decode(e["audio"])) for e in events if e["type"] == "speech.audio.delta")
    assert events[-1]["type"] == "speech.audio.done" and decoded == 3 + 4 * 256
    rec = record_of(proxy_env["landing"], rid)
    _schema_valid(rec)
    assert (rec["request_type"], rec["stream"], rec["status"]) == ("speech", True, "success")
    assert (rec["input_tokens"], rec["output_tokens"], rec["total_tokens"]) == (4, 4, 8)
    assert json.loads(rec["input_content"]) == "one two three four"
    # The record keeps the audio's size, never the base64 audio itself.
    assert json.loads(rec["output_content"]) == {"audio_bytes": decoded, "content_type": "text/event-stream"}
    assert rec["time_to_first_token_ms"] is not None


def test_speech_client_disconnect_mid_audio_still_lands_a_record(proxy_env):
    body = {"model": "tts-1", "voice": "alloy", "input": "a long text"}
    headers = {"x-mock-chunks": "100", "x-mock-chunk-delay-ms": "20", "authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.Client(timeout=10) as http:
        with http.stream("POST", proxy_env["url"] + "/v1/audio/speech", json=body, headers=headers) as resp:
            rid = resp.headers["x-request-id"]
            got = 0
            for chunk in resp.iter_raw():
                got += len(chunk)
                if got >= 3 * 256:
                    break
    rec = record_of(proxy_env["landing"], rid)
    assert (rec["status"], rec["status_code"], rec["error_type"]) == ("error", 499, "client_disconnected")
    assert "byte(s) of audio" in rec["error_message"]
    assert 0 < json.loads(rec["output_content"])["audio_bytes"] < 3 + 100 * 256
    assert rec["latency_ms"] < 1500  # recorded when the client left, not when the 2 s of audio would end


def test_request_id_header_on_every_proxied_answer(proxy_env):
    r = httpx.post(
        proxy_env["url"] + "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}
    )
    assert r.status_code == 200 and len(r.headers["x-request-id"]) == 36
    bad = httpx.post(proxy_env["url"] + "/v1/embeddings", content=b"{not json")
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]["message"]


def test_health(proxy_env):
    doc = httpx.get(proxy_env["url"] + "/health").json()
    assert doc["status"] == "ok" and doc["landing_writer"] == "running"
    assert doc["writer_error"] is None and doc["write_errors"] == 0
    live = httpx.get(proxy_env["url"] + "/health/live")
    assert live.status_code == 200 and live.json() == {"status": "alive"}


def test_models_lists_the_configured_models(client):
    models = {m.id: m.owned_by for m in client.models.list()}
    assert models["gpt-4o-mini"] == "openai" and models["claude-3-haiku"] == "anthropic"
