"""The few ASGI moves every endpoint of the proxy makes: read a bounded body, send a whole answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


def error_body(status: int, message: str, etype: str) -> bytes:
    """An OpenAI-style error document."""
    return orjson.dumps({"error": {"message": message, "type": etype, "param": None, "code": status}})


async def send_whole(send: Send, status: int, body: bytes, headers: list | None = None) -> int:
    """Answer with ``body`` (JSON unless ``headers`` say otherwise); returns ``status`` for the metrics."""
    hdrs = list(headers or JSON_HEADERS)
    hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})
    return status


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` or the client went away."""
    chunks = []
    size = 0
    more = True
    while more:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = msg.get("more_body", False)
    return b"".join(chunks)


def header(scope: Scope, name: bytes) -> str:
    """One request header (``name`` lower-cased), or "" when absent."""
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return ""


class Metered:
    """An ASGI ``send`` that counts the body bytes it sends, with a ``receive`` that counts those received:
    the sizes of the request and of the answer (metrics, and the record's request and response bytes)."""

    __slots__ = ("_send", "_receive", "sent", "received")

    def __init__(self, send: Send, receive: Receive):
        self._send = send
        self._receive = receive
        self.sent = 0
        self.received = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            self.sent += len(message.get("body", b""))
        await self._send(message)

    async def receive(self) -> dict[str, Any]:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
        return message
