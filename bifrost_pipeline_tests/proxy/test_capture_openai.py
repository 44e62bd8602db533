"""Record schema version 2 through the official openai SDK, in front of the mock upstream: parameters, tools
and tool calls (whole and streamed, chat and responses API), vision input, images and videos, body sizes and
the trace context, field by field on the landed record."""

from __future__ import annotations

import base64
import json

import httpx
import jsonschema
import openai
import pytest

from bifrost_pipeline import records
from bifrost_pipeline.proxy.mock import MOCK_TOOL_ARGUMENTS

from .conftest import CLIENT_KEY, mock_requests, record_of

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}
SEARCH_TOOL = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def client(proxy_env) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy_env["url"] + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def _landed(proxy_env, raw) -> dict:
    rec = record_of(proxy_env["landing"], raw.headers["x-request-id"])
    cls = jsonschema.validators.validator_for(records.json_schema())
    cls(records.json_schema(), format_checker=cls.FORMAT_CHECKER).validate(rec)
    assert rec["schema_version"] == "2"
    return rec


def test_parameters_typed_and_whole(client, proxy_env):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi there"}],
        temperature=0.25,
        top_p=0.9,
        max_completion_tokens=7,
        stop="END",
        seed=1234567890123,
        n=1,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        response_format={"type": "json_object"},
        reasoning_effort="low",
        user="u-1",
        extra_headers={"traceparent": TRACEPARENT},
    )
    rec = _landed(proxy_env, raw)
    assert (rec["temperature"], rec["top_p"], rec["max_tokens"]) == (0.25, 0.9, 7)
    assert (rec["stop"], rec["seed"], rec["n"]) == (["END"], 1234567890123, 1)
    assert (rec["presence_penalty"], rec["frequency_penalty"]) == (0.5, -0.5)
    assert (rec["response_format_type"], rec["reasoning_effort"], rec["user_id"]) == ("json_object", "low", "u-1")
    assert rec["tool_choice"] is None and rec["parallel_tool_calls"] is None and rec["tool_names"] is None
    params = json.loads(rec["request_params"])
    assert params["temperature"] == 0.25 and params["model"] == "gpt-4o-mini" and params["user"] == "u-1"
    assert "messages" not in params and "tools" not in params
    # sizes: what the client sent and what it got back, byte for byte
    sent = next(r for r in mock_requests(proxy_env["mock"]) if r["body"] and r["body"].get("seed") == 1234567890123)
    assert rec["request_bytes"] == int(raw.http_request.headers["content-length"])
    assert rec["response_bytes"] == len(raw.content)
    # the trace context: read into the record, passed on to the provider unchanged
    assert (rec["trace_id"], rec["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert sent["headers"]["traceparent"] == TRACEPARENT
    assert [(a["provider"], a["status_code"]) for a in rec["attempts"]] == [("openai", 200)]  # one attempt


def test_responses_api_parameters(client, proxy_env):
    raw = client.responses.with_raw_response.create(
        model="gpt-4o-mini",
        input="hello",
        max_output_tokens=16,
        reasoning={"effort": "high"},
        text={"format": {"type": "text"}},
        extra_headers={"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
    )
    rec = _landed(proxy_env, raw)
    assert (rec["max_tokens"], rec["reasoning_effort"], rec["response_format_type"]) == (16, "high", "text")
    assert rec["trace_id"] is None and rec["span_id"] is None  # an all-zero trace id is invalid (W3C)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_tool_call_and_the_tool_result_sent_back(client, proxy_env, stream):
    messages = [{"role": "user", "content": "weather in Paris?"}]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=messages,
        tools=[WEATHER_TOOL, SEARCH_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        stream=stream,
    )
    if stream:
        chunks = list(raw.parse())
        arguments = "".join(
            c.choices[0].delta.tool_calls[0].function.arguments or ""
            for c in chunks
            if c.choices and c.choices[0].delta.tool_calls
        )
        call_id = next(c.choices[0].delta.tool_calls[0].id for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    else:
        call = raw.parse().choices[0].message.tool_calls[0]
        arguments, call_id = call.function.arguments, call.id
    assert arguments == MOCK_TOOL_ARGUMENTS
    rec = _landed(proxy_env, raw)
    assert rec["tool_names"] == ["get_weather", "search"]
    assert json.loads(rec["tool_definitions"]) == [WEATHER_TOOL, SEARCH_TOOL]
    assert (rec["tool_choice"], rec["parallel_tool_calls"]) == ("function:get_weather", False)
    assert rec["tool_calls"] == [{"id": call_id, "name": "get_weather", "arguments": MOCK_TOOL_ARGUMENTS}]
    assert (rec["tool_call_names"], rec["tool_call_count"], rec["finish_reason"]) == (["get_weather"], 1, "tool_calls")
    assert "tools" not in json.loads(rec["request_params"])

    # The client runs the tool and sends its result back: a role "tool" message, kept in input_content.
    followup = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
        ]},
        {"role": "tool", "tool_call_id": call_id, "content": '{"celsius": 21}'},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=followup, tools=[WEATHER_TOOL], stream=stream
    )
    if stream:
        list(raw.parse())
    rec = _landed(proxy_env, raw)
    assert json.loads(rec["input_content"]) == followup
    assert (rec["tool_call_count"], rec["tool_calls"], rec["tool_call_names"]) == (0, None, None)


@pytest.mark.parametrize("stream", [False, True])
def test_responses_api_tool_call(client, proxy_env, stream):
    raw = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input="weather?", tools=[RESPONSES_TOOL, {"type": "web_search"}], stream=stream
    )
    if stream:
        events = list(raw.parse())
        item = next(e.item for e in events if e.type == "response.output_item.done")
    else:
        item = raw.parse().output[0]
    rec = _landed(proxy_env, raw)
    assert rec["tool_names"] == ["get_weather", "web_search"]
    assert rec["tool_calls"] == [{"id": item.call_id, "name": "get_weather", "arguments": MOCK_TOOL_ARGUMENTS}]
    assert rec["tool_call_count"] == 1


def test_vision_input_url_and_data_uri(client, proxy_env):
    png = b"\x89PNG\r\n\x1a\n" + bytes(300)
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is in these?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": data_uri}},
            ],
        }
    ]
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    rec = _landed(proxy_env, raw)
    assert rec["input_images"] == [
        {"url": "https://example.com/cat.jpg", "detail": "low"},
        {"media_type": "image/png", "bytes": len(png)},
    ]
    # the image's bytes are nowhere in the record: input_content keeps its type and size in their place
    assert base64.b64encode(png).decode()[:40] not in json.dumps(rec)
    parts = json.loads(rec["input_content"])[0]["content"]
    assert parts[2]["image_url"]["url"] == f"data:image/png;base64,<{len(png)} bytes not kept>"
    assert parts[1] == messages[0]["content"][1]
    # the provider got the image itself
    sent = next(r for r in reversed(mock_requests(proxy_env["mock"])) if r["path"] == "/v1/chat/completions")
    assert sent["body"]["messages"][0]["content"][2]["image_url"]["url"] == data_uri


def test_audio_input_and_speech_output(client, proxy_env):
    wav = b"RIFF" + bytes(500)
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": [part]}]
    )
    rec = _landed(proxy_env, raw)
    assert (rec["input_audio_format"], rec["input_audio_bytes"]) == ("wav", len(wav))
    raw = client.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input="hello", response_format="opus")
    rec = _landed(proxy_env, raw)
    assert (rec["output_audio_format"], rec["output_audio_bytes"]) == ("opus", len(raw.content))
    assert rec["response_bytes"] == len(raw.content)


def test_transcription_audio_in(client, proxy_env):
    raw = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("talk.mp3", b"ID3" + bytes(997), "audio/mpeg"), temperature=0.1
    )
    rec = _landed(proxy_env, raw)
    assert (rec["input_audio_format"], rec["input_audio_bytes"], rec["temperature"]) == ("mp3", 1000, 0.1)
    assert "file" not in json.loads(rec["request_params"])


def test_image_generation(client, proxy_env):
    raw = client.images.with_raw_response.generate(
        model="openai/gpt-image-1", prompt="a red square", n=2, size="512x512", quality="low"
    )
    assert len(raw.parse().data) == 2
    rec = _landed(proxy_env, raw)
    assert (rec["request_type"], rec["endpoint"], rec["provider"], rec["model"]) == (
        "image", "/v1/images/generations", "openai", "gpt-image-1"
    )
    assert (rec["n"], rec["image_size"], rec["image_quality"], rec["output_image_count"]) == (2, "512x512", "low", 2)
    assert rec["input_tokens"] and rec["output_tokens"] == 200
    # generated images are recorded by size, never their bytes
    out = json.loads(rec["output_content"])
    assert out[0]["b64_json"].endswith("bytes not kept>")


def test_image_edit_multipart(client, proxy_env):
    png = b"\x89PNG\r\n\x1a\n" + bytes(120)
    raw = client.images.with_raw_response.edit(
        model="openai/gpt-image-1", image=("in.png", png, "image/png"), prompt="make it blue", size="256x256"
    )
    rec = _landed(proxy_env, raw)
    assert (rec["endpoint"], rec["request_type"], rec["image_size"]) == ("/v1/images/edits", "image", "256x256")
    assert rec["input_images"] == [{"media_type": "image/png", "bytes": len(png)}]
    assert rec["output_image_count"] == 1


def test_video_create_status_and_content(client, proxy_env):
    raw = client.videos.with_raw_response.create(model="openai/sora-2", prompt="a cat", seconds="8", size="720x1280")
    video = raw.parse()
    rec = _landed(proxy_env, raw)
    assert (rec["endpoint"], rec["method"], rec["request_type"]) == ("/v1/videos", "POST", "video")
    assert (rec["video_id"], rec["video_size"], rec["video_seconds"]) == (video.id, "720x1280", 8.0)

    raw = client.videos.with_raw_response.retrieve(video.id)
    assert raw.parse().status == "completed"
    rec = _landed(proxy_env, raw)
    assert (rec["endpoint"], rec["method"], rec["provider"], rec["model"]) == (
        "/v1/videos/{video_id}", "GET", "openai", "sora-2"
    )
    assert (rec["video_id"], rec["finish_reason"], rec["request_params"]) == (video.id, None, None)

    raw = client.videos.with_raw_response.download_content(video.id)
    content = raw.content
    assert content.startswith(b"\x00\x00\x00\x18ftyp")
    rec = _landed(proxy_env, raw)
    assert (rec["endpoint"], rec["method"], rec["response_bytes"], rec["video_id"]) == (
        "/v1/videos/{video_id}/content", "GET", len(content), video.id
    )
    assert rec["output_audio_bytes"] is None


def test_a_video_the_proxy_did_not_create_is_404(proxy_env):
    resp = httpx.get(proxy_env["url"] + "/v1/videos/video_unknown", timeout=5)
    assert resp.status_code == 404
    assert "not created through this proxy" in resp.json()["error"]["message"]
    assert httpx.post(proxy_env["url"] + "/v1/videos/video_unknown", timeout=5).status_code == 405


def test_size_metrics_and_records_by_source(client, proxy_env):
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "size me"}])
    text = httpx.get(proxy_env["url"] + "/metrics", timeout=5).text
    lines = [ln for ln in text.splitlines() if ln.startswith("http_request_size_bytes_count{")]
    assert any('path="/v1/chat/completions"' in ln and 'status="200"' in ln for ln in lines)
    assert any(ln.startswith("http_response_size_bytes_sum{") for ln in text.splitlines())
    assert 'bifrost_proxy_records_landed_total{source="logs"}' in text
    assert 'bifrost_proxy_records_landed_total{source="traces"}' in text
