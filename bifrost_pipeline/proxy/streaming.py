"""Streamed answers: the assembler that reads SSE events into what the record needs, and the pump that
passes a provider's stream on to the client while watching for the client to leave.

The assembler keeps usage, the text pieces, the finish reason and token timings; the events themselves are
passed on untouched, except the usage chunk the proxy asked for on the client's behalf (``hide_usage``).
Audio (speech) is passed on as raw bytes and only counted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from .asgi import Receive, Send
from .record import LogRecord, set_error
from .upstream import response_headers


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
        "pending",
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
        self.pending = b""  # the start of an event whose end has not come yet

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
        return b"".join(out) if out else b""

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
        if choices and isinstance(choices[0], dict):
            c = choices[0]
            delta = c.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else c.get("text")
            if piece:
                self.text.append(piece)
                self._token(now)
            if c.get("finish_reason"):
                self.finish_reason = c["finish_reason"]
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
            if not choices and self.hide_usage:
                return False
        return True

    def _typed_event(self, obj: dict, etype: str, now: float) -> None:
        """An event named by its ``type``: responses, speech (SSE) and transcription streams."""
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


async def relay_stream(
    send: Send,
    receive: Receive,
    resp: aiohttp.ClientResponse,
    rec: LogRecord,
    assembler: StreamAssembler,
    *,
    raw: bool = False,
) -> None:
    """Pass a stream on as it comes: SSE events (read into ``assembler``), or raw bytes (``raw``: audio).

    Ends when the provider's stream ends or the client leaves, whichever comes first; the record says which.
    """
    headers = response_headers(list(resp.headers.items()), rec["request_id"])
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    pump_task = asyncio.ensure_future(_pump(send, resp, rec, assembler, raw))
    watch_task = asyncio.ensure_future(_watch(receive))
    cancelled = False
    try:
        await asyncio.wait((pump_task, watch_task), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        cancelled = True  # the proxy is shutting down past its grace period
        raise
    finally:
        if not pump_task.done():
            pump_task.cancel()
            if cancelled:
                message = f"the proxy shut down (proxy.shutdown_grace_s) after {assembler.progress()}"
                set_error(rec, 503, "cancelled", message)
            else:
                message = f"the client closed the connection after {assembler.progress()}"
                set_error(rec, 499, "client_disconnected", message)
        watch_task.cancel()
        await asyncio.gather(pump_task, watch_task, return_exceptions=True)
    if pump_task.done() and not pump_task.cancelled() and pump_task.exception() is not None:
        raise pump_task.exception()


async def _pump(
    send: Send, resp: aiohttp.ClientResponse, rec: LogRecord, assembler: StreamAssembler, raw: bool
) -> None:
    """Provider -> client, chunk by chunk; a provider that stops or fails mid-stream is noted in the record."""
    try:
        async for chunk in resp.content.iter_any():
            now = time.perf_counter()
            if raw:
                assembler.audio(chunk, now)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                continue
            out = assembler.take(chunk, now)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
    except (TimeoutError, aiohttp.ServerTimeoutError):
        set_error(rec, 504, "timeout", f"provider {rec['provider']} stopped sending mid-stream")
    except aiohttp.ClientError as err:
        message = f"provider {rec['provider']}: {type(err).__name__}: {err}"[:2000]
        set_error(rec, 502, "upstream_error", message)
    await send({"type": "http.response.body", "body": assembler.pending, "more_body": False})


async def _watch(receive: Receive) -> None:
    """Returns when the client disconnects."""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return
