"""Streamed answers: the relay that passes a provider's stream on to the client, feeding each chunk to the
``StreamAssembler`` (``assembler.py``), while watching for the client to leave.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from .asgi import Receive, Send
from .assembler import StreamAssembler
from .record import LogRecord, set_error
from .upstream import response_headers


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
