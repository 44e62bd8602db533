"""The chunk assembler of a streamed answer: reads SSE events (or raw audio) into what the record needs.

It keeps usage, the text pieces, the finish reason, token timings, tool calls (assembled from their deltas:
chat ``delta.tool_calls`` by choice and index, responses ``function_call`` items and their
``function_call_arguments.delta`` events) and the size of audio; the events themselves are passed on
untouched by the relay (``streaming.py``), except the usage chunk the proxy asked for on the client's
behalf (``hide_usage``). Audio (speech) is only counted. Pure (no I/O), so recorded chunk sequences can be
fed to it in unit tests.
"""

from __future__ import annotations

from typing import Any

import orjson

ARGUMENTS_DELTA = "response.function_call_arguments.delta"  # not text: a function call's arguments


def _event_object(event: bytes) -> dict | None:
    """The JSON object an SSE event carries in its data lines; None for [DONE], comments and non-objects."""
    data = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not data:
        return None
    payload = b"\n".join(data)
    if payload == b"[DONE]":
        return None
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


class StreamAssembler:
    """What the proxy learns from the stream it passes on (SSE events, or audio bytes)."""

    __slots__ = (
        "request_type",
        "hide_usage",
        "usage",
        "text",
        "finish_reason",
        "first_token",
        "last_token",
        "gaps",
        "events",
        "output",
        "error",
        "response_status",
        "audio_bytes",
        "sent_bytes",
        "calls",
        "pending",
        "response_id",
        "response_model",
    )

    def __init__(self, request_type: str, hide_usage: bool):
        self.request_type = request_type
        self.hide_usage = hide_usage
        self.usage: Any = None
        self.text: list[str] = []
        self.finish_reason: str | None = None
        self.first_token: float | None = None
        self.last_token: float | None = None
        self.gaps: list[float] = []
        self.events = 0
        self.output: Any = None
        self.error: Any = None
        self.response_status: str | None = None
        self.audio_bytes = 0
        self.sent_bytes = 0  # bytes passed on to the client
        # Tool calls as they are assembled: key -> [id, name, argument pieces]. Chat keys them by
        # (choice index, tool call index), the responses API by item id. None until the first one.
        self.calls: dict[Any, list] | None = None
        self.pending = b""  # the start of an event whose end has not come yet
        self.response_id: Any = None  # the answer's id and model, as its first chunk says (OTLP spans)
        self.response_model: Any = None

    def _token(self, now: float) -> None:
        if self.first_token is None:
            self.first_token = now
        elif self.last_token is not None:
            self.gaps.append(now - self.last_token)
        self.last_token = now

    def progress(self) -> str:
        if self.audio_bytes:
            return f"{self.audio_bytes} byte(s) of audio"
        return f"{self.events} event(s)"

    def audio(self, chunk: bytes, now: float) -> None:
        """A chunk of raw audio (speech): its size and when the first one came, not its bytes."""
        if chunk:
            self.audio_bytes += len(chunk)
            self.sent_bytes += len(chunk)
            if self.first_token is None:
                self.first_token = now

    def take(self, chunk: bytes, now: float) -> bytes:
        """Read a chunk as it came off the wire; returns the whole events to pass on (b"" if none yet)."""
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        buf = self.pending + chunk
        out = []
        while True:
            i = buf.find(b"\n\n")
            if i < 0:
                break
            event, buf = buf[: i + 2], buf[i + 2 :]
            if self.feed(event, now):
                out.append(event)
        self.pending = buf
        if not out:
            return b""
        sent = b"".join(out)
        self.sent_bytes += len(sent)
        return sent

    def feed(self, event: bytes, now: float) -> bool:
        """Read one SSE event; False when it must not be passed on (the usage chunk the client did not ask for)."""
        obj = _event_object(event)
        if obj is None:
            return True
        self.events += 1
        choices = obj.get("choices")
        if isinstance(choices, list):
            return self._completion_chunk(obj, choices, now)
        etype = obj.get("type")
        if isinstance(etype, str):
            self._typed_event(obj, etype, now)
        elif isinstance(obj.get("error"), dict):
            self.error = obj["error"]
        return True

    def _completion_chunk(self, obj: dict, choices: list, now: float) -> bool:
        """A chat or text completion chunk (``choices``), or its final usage chunk (no choices)."""
        if self.response_id is None:
            self.response_id, self.response_model = obj.get("id"), obj.get("model")
        if choices and isinstance(choices[0], dict):
            c = choices[0]
            delta = c.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else c.get("text")
            if piece:
                self.text.append(piece)
                self._token(now)
            if isinstance(delta, dict) and (delta.get("tool_calls") or delta.get("audio")):
                self._chat_delta_extras(c.get("index", 0), delta, now)
            if c.get("finish_reason"):
                self.finish_reason = c["finish_reason"]
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
            if not choices and self.hide_usage:
                return False
        return True

    def _chat_delta_extras(self, choice: Any, delta: dict, now: float) -> None:
        """Tool call pieces (the first names the call, the next ones add to its arguments) and audio."""
        for tc in delta.get("tool_calls") or ():
            if not isinstance(tc, dict):
                continue
            call = self._call((choice, tc.get("index", 0)))
            call[0] = tc.get("id") or call[0]
            fn = tc.get("function")
            if isinstance(fn, dict):
                call[1] = fn.get("name") or call[1]
                if fn.get("arguments"):
                    call[2].append(fn["arguments"])
                    self._token(now)
        audio = delta.get("audio")
        if isinstance(audio, dict) and isinstance(audio.get("data"), str):
            b64 = audio["data"]
            self.audio_bytes += len(b64) * 3 // 4 - b64[-2:].count("=")

    def _call(self, key: Any) -> list:
        if self.calls is None:
            self.calls = {}
        call = self.calls.get(key)
        if call is None:
            call = self.calls[key] = [None, None, []]
        return call

    def tool_calls(self) -> list[dict[str, str | None]]:
        """The tool calls assembled so far, in the order they began: {id, name, arguments}."""
        return [
            {"id": cid, "name": name, "arguments": "".join(pieces) if pieces else None}
            for cid, name, pieces in (self.calls or {}).values()
        ]

    def _response_item(self, obj: dict, etype: str, now: float) -> None:
        """A responses API function call: announced by output_item.added, its arguments as deltas, whole in
        output_item.done."""
        if etype == ARGUMENTS_DELTA:
            if isinstance(obj.get("delta"), str):
                self._call(obj.get("item_id"))[2].append(obj["delta"])
                self._token(now)
            return
        item = obj.get("item")
        if not isinstance(item, dict) or item.get("type") not in ("function_call", "custom_tool_call"):
            return
        call = self._call(item.get("id"))
        call[0] = item.get("call_id") or call[0]
        call[1] = item.get("name") or call[1]
        args = item.get("arguments", item.get("input"))
        if etype == "response.output_item.done" and isinstance(args, str):
            call[2] = [args]

    def _typed_event(self, obj: dict, etype: str, now: float) -> None:
        """An event named by its ``type``: responses, speech (SSE) and transcription streams."""
        if etype.startswith("response.output_item.") or etype == ARGUMENTS_DELTA:
            self._response_item(obj, etype, now)
            return
        if etype.endswith(".delta") and isinstance(obj.get("delta"), str):
            if obj["delta"]:
                self.text.append(obj["delta"])
                self._token(now)
        elif etype == "speech.audio.delta" and isinstance(obj.get("audio"), str):
            b64 = obj["audio"]  # the audio is counted, never kept: it is not text a person reads
            self.audio_bytes += len(b64) * 3 // 4 - b64[-2:].count("=")
            if self.first_token is None:
                self.first_token = now
        resp = obj.get("response")
        if isinstance(resp, dict):
            if self.response_id is None:
                self.response_id, self.response_model = resp.get("id"), resp.get("model")
            if isinstance(resp.get("usage"), dict):
                self.usage = resp["usage"]
            if resp.get("status"):
                self.response_status = resp["status"]
            if etype in ("response.completed", "response.incomplete", "response.failed"):
                self.output = resp.get("output")
                if isinstance(resp.get("error"), dict):
                    self.error = resp["error"]
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
        if etype == "error" or etype.endswith(".failed"):
            self.error = obj.get("error") or obj
