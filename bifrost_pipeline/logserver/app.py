"""The log server's ASGI app: the API, the live stream and the explorer page.

| Route | What |
|---|---|
| ``GET /`` | the log explorer page (``static/``; asks for a key and keeps it in sessionStorage) |
| ``GET /api/logs`` | a page of records + ``pagination`` + ``stats`` (``include_stats=false`` to skip them) |
| ``GET /api/logs/series`` | requests, tokens, cost, errors, p95 latency per time bucket and ``group_by`` |
| ``GET /api/logs/stream`` | Server-Sent Events: each new matching record as ``event: log`` |
| ``GET /api/logs/{request_id}`` | one record whole |
| ``WS /ws`` | each new matching record as ``{"type": "log", "payload": {...}}`` |
| ``GET /api/session`` | who the key is and whether it sees content (the page's login check) |
| ``GET /health`` | liveness, no key needed |

Every route but ``/``, ``/static`` and ``/health`` needs a key of ``logs.api_keys``: ``Authorization: Bearer
<key>`` or ``x-api-key: <key>``; a WebSocket may instead send ``{"api_key": "<key>"}`` as its first message
(browsers cannot set headers on one), and an SSE client that cannot set headers may pass ``api_key=``.
"""

from __future__ import annotations

import asyncio
import hmac
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from bifrost_pipeline.config import AppConfig, LogsApiKey
from bifrost_pipeline.logserver.filters import LogFilter, QueryError, parse_filter, parse_page
from bifrost_pipeline.logserver.live import Hub, Tailer, follow
from bifrost_pipeline.logserver.store import GROUPS, LogStore, hide_content

STATIC = Path(__file__).parent / "static"
SSE_KEEPALIVE_S = 15.0
WS_LOGIN_TIMEOUT_S = 10.0


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(status: int, message: str, param: str | None = None, **headers: str) -> JSON:
    body: dict[str, Any] = {"message": message}
    if param is not None:
        body["param"] = param
    return JSON({"error": body}, status_code=status, headers=headers or None)


class LogServer:
    """What the routes share: the config, the store, the live hub."""

    def __init__(self, app: AppConfig, store: LogStore | None = None):
        self.app = app
        self.settings = app.logs
        self.store = store or LogStore(app, memory_limit=app.logs.duckdb_memory_limit, threads=app.logs.duckdb_threads)
        self.hub = Hub(app.logs.subscriber_queue)
        self.tailer = Tailer(app.landing_dir)

    def key_of(self, conn: HTTPConnection, *, query: bool = False) -> LogsApiKey | None:
        auth = conn.headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else conn.headers.get("x-api-key")
        if given is None and query:
            given = conn.query_params.get("api_key")
        return self.match_key(given)

    def match_key(self, given: str | None) -> LogsApiKey | None:
        if not given:
            return None
        found = None
        for k in self.settings.api_keys:  # every key compared, in constant time: no timing hint
            if hmac.compare_digest(k.key.get_secret_value().encode(), given.encode()):
                found = k
        return found

    def sees_content(self, key: LogsApiKey) -> bool:
        return key.content and not self.app.client.disable_content_logging

    def shown(self, rec: dict[str, Any], key: LogsApiKey) -> dict[str, Any]:
        return rec if self.sees_content(key) else hide_content(rec)

    def filter_for(self, params: dict[str, str], key: LogsApiKey) -> LogFilter:
        flt = parse_filter(params)
        if flt.content_search and not self.sees_content(key):
            raise QueryError("content_search", "this key may not see content (or content logging is off)", 403)
        return flt


def _unauthorized() -> JSON:
    return _error(401, "an API key of logs.api_keys is required (Authorization: Bearer <key> or x-api-key)",
                  **{"www-authenticate": "Bearer"})  # fmt: skip


def _guarded(handler):
    """Resolve the key (401 without one) and turn a QueryError into a 400 naming its parameter."""

    async def endpoint(request: Request) -> Response:
        server: LogServer = request.app.state.server
        key = server.key_of(request, query=handler is stream_sse)
        if key is None:
            return _unauthorized()
        try:
            return await handler(request, server, key)
        except QueryError as err:
            return _error(err.status, str(err), err.param)

    return endpoint


async def list_logs(request: Request, server: LogServer, key: LogsApiKey) -> Response:
    params = dict(request.query_params)
    flt = server.filter_for(params, key)
    page = parse_page(params, server.settings.max_limit)
    with_stats = params.get("include_stats", "true").lower() not in ("false", "0", "no")
    logs_task = run_in_threadpool(server.store.page, flt, page)
    if with_stats:
        logs, stats = await asyncio.gather(logs_task, run_in_threadpool(server.store.stats, flt))
    else:
        logs, stats = await logs_task, None
    body: dict[str, Any] = {"logs": logs, "pagination": page.as_dict()}
    if stats is not None:
        body["pagination"]["total"] = stats["total_requests"]
        body["stats"] = stats
    return JSON(body)


async def series(request: Request, server: LogServer, key: LogsApiKey) -> Response:
    params = dict(request.query_params)
    flt = server.filter_for(params, key)
    group_by = params.get("group_by", "provider")
    if group_by not in GROUPS:
        raise QueryError("group_by", f"{group_by!r} is not one of {', '.join(GROUPS)}")
    try:
        buckets = int(params.get("buckets", "60"))
    except ValueError:
        raise QueryError("buckets", f"expected an integer, got {params['buckets']!r}") from None
    if not 1 <= buckets <= 1000:
        raise QueryError("buckets", f"expected 1 to 1000, got {buckets}")
    return JSON(await run_in_threadpool(server.store.series, flt, group_by, buckets))


async def get_log(request: Request, server: LogServer, key: LogsApiKey) -> Response:
    request_id = request.path_params["request_id"]
    rec = await run_in_threadpool(server.store.get, request_id)
    if rec is None:
        return _error(404, f"no record with request_id {request_id!r}", "request_id")
    return JSON(server.shown(rec, key))


async def session(request: Request, server: LogServer, key: LogsApiKey) -> Response:
    return JSON({"name": key.name, "content": server.sees_content(key),
                 "content_logging": not server.app.client.disable_content_logging})  # fmt: skip


async def stream_sse(request: Request, server: LogServer, key: LogsApiKey) -> Response:
    params = {k: v for k, v in request.query_params.items() if k != "api_key"}
    sub = server.hub.subscribe(server.filter_for(params, key))

    async def events():
        try:
            yield b": subscribed\n\n"
            while True:
                try:
                    rec = await asyncio.wait_for(sub.next(), SSE_KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if rec is None:
                    yield b"event: dropped\ndata: " + orjson.dumps({"message": sub.drop_message()}) + b"\n\n"
                    return
                yield b"event: log\ndata: " + orjson.dumps(server.shown(rec, key)) + b"\n\n"
        finally:
            server.hub.unsubscribe(sub)

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def stream_ws(websocket: WebSocket) -> None:
    server: LogServer = websocket.app.state.server
    await websocket.accept()
    key = server.key_of(websocket)
    try:
        if key is None:
            key = await _ws_login(websocket, server)
            if key is None:
                await websocket.send_json({"type": "error", "status": 401, "message": "an API key is required"})
                await websocket.close(code=1008)
                return
        params = {k: v for k, v in websocket.query_params.items() if k != "api_key"}
        try:
            sub = server.hub.subscribe(server.filter_for(params, key))
        except QueryError as err:
            await websocket.send_json({"type": "error", "status": 400, "param": err.param, "message": str(err)})
            await websocket.close(code=1008)
            return
        await _ws_send(websocket, server, key, sub)
    except WebSocketDisconnect:
        pass


async def _ws_login(websocket: WebSocket, server: LogServer) -> LogsApiKey | None:
    try:
        text = await asyncio.wait_for(websocket.receive_text(), WS_LOGIN_TIMEOUT_S)
        given = orjson.loads(text).get("api_key")
    except (TimeoutError, orjson.JSONDecodeError, AttributeError):
        return None
    return server.match_key(given if isinstance(given, str) else None)


async def _ws_send(websocket: WebSocket, server: LogServer, key: LogsApiKey, sub) -> None:
    """Send records until the client leaves or falls behind; a client's messages are read only to see it leave."""
    closed = asyncio.ensure_future(_until_disconnect(websocket))
    try:
        await websocket.send_json({"type": "subscribed"})
        while True:
            nxt = asyncio.ensure_future(sub.next())
            await asyncio.wait({nxt, closed}, return_when=asyncio.FIRST_COMPLETED)
            if closed.done():
                nxt.cancel()
                return
            rec = nxt.result()
            if rec is None:
                await websocket.send_json({"type": "dropped", "message": sub.drop_message()})
                await websocket.close(code=1013)  # try again later
                return
            await websocket.send_text(orjson.dumps({"type": "log", "payload": server.shown(rec, key)}).decode())
    finally:
        closed.cancel()
        server.hub.unsubscribe(sub)


async def _until_disconnect(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


async def health(request: Request) -> Response:
    return JSON({"status": "ok"})


def create_app(app: AppConfig, store: LogStore | None = None) -> Starlette:
    server = LogServer(app, store)

    @asynccontextmanager
    async def lifespan(_):
        await asyncio.to_thread(server.tailer.poll)  # note where every segment ends: stream only what is new
        task = asyncio.create_task(follow(server.tailer, server.hub, app.logs.poll_interval_s))
        try:
            yield
        finally:
            task.cancel()

    routes = [
        Route("/", index),
        Route("/health", health),
        Route("/api/session", _guarded(session)),
        Route("/api/logs", _guarded(list_logs)),
        Route("/api/logs/series", _guarded(series)),
        Route("/api/logs/stream", _guarded(stream_sse)),
        Route("/api/logs/{request_id:str}", _guarded(get_log)),
        WebSocketRoute("/ws", stream_ws),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    asgi = Starlette(routes=routes, lifespan=lifespan)
    asgi.state.server = server
    return asgi
