"""What is sent upstream for a proxied request, as pure functions: parse -> route -> rewrite.

``parse_json`` / ``parse_form`` read what the client sent into a ``ClientRequest``; ``route`` picks the
provider; ``rewrite`` builds the ``ForwardPlan``: the body and headers the provider gets. The body is
forwarded untouched unless the model name or the stream options must change. Each step raises ``Rejected``
with the answer the client gets when its request cannot be forwarded.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass

import orjson

from .asgi import Scope
from .protocol import ENDPOINTS, RAW_STREAM_ENDPOINTS, video_call
from .upstream import Router, Target, upstream_headers

STREAM_USAGE_TYPES = ("chat", "text_completion")  # those that take stream_options.include_usage


class Rejected(Exception):
    """A request the proxy answers itself, with ``status`` and an OpenAI-style error."""

    def __init__(
        self,
        status: int,
        message: str,
        etype: str = "invalid_request_error",
        *,
        reason: str = "invalid_request",
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.etype = etype
        self.reason = reason  # the refusal record's error_type and the refusals metric's label: a few words
        self.headers = headers  # extra response headers (retry-after)


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A proxied request as the client sent it, parsed once."""

    path: str
    request_type: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: dict  # the JSON body; {} for a multipart one
    form: dict | None  # a multipart body's fields (a file as its name, size and type), else None
    form_items: list | None  # a multipart body's parts, to rebuild it
    model: str
    stream: bool
    endpoint: str = ""  # what the record names: the path, or its template for a video's calls ("" = path)
    method: str = "POST"

    @property
    def streamed(self) -> bool:
        """Whether the answer is passed on as it comes. Speech audio is (playback starts on the first chunk),
        and so is a video's content."""
        return self.stream or self.raw_stream

    @property
    def raw_stream(self) -> bool:
        """Whether the answer is passed on byte for byte (audio, video) rather than as SSE events."""
        return (self.endpoint or self.path) in RAW_STREAM_ENDPOINTS


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    model: str  # the model name sent upstream (without the provider prefix)
    target: Target


@dataclass(frozen=True, slots=True)
class ForwardPlan:
    """Everything needed to call the provider for one request."""

    request: ClientRequest
    route: Route
    url: str
    body: bytes
    headers: dict[str, str]  # the client's headers, with the content type of a rebuilt multipart body
    upstream_headers: dict[str, str]  # what the provider gets: no credentials of the client, its own key
    hide_usage: bool  # the proxy asked for the usage chunk: it is not passed on to the client


def is_multipart(headers: dict[str, str]) -> bool:
    return headers.get("content-type", "").startswith("multipart/form-data")


def parse_json(path: str, headers: dict[str, str], body: bytes) -> ClientRequest:
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise Rejected(400, f"the body is not JSON: {err}", reason="invalid_json") from None
    if not isinstance(req, dict):
        raise Rejected(400, "the body must be a JSON object", reason="invalid_json")
    request_type = ENDPOINTS[path]
    stream = req.get("stream") is True or (request_type == "speech" and req.get("stream_format") == "sse")
    model = _named_model(req.get("model"))
    return ClientRequest(path, request_type, headers, body, req, None, None, model, stream)


def parse_form(path: str, headers: dict[str, str], body: bytes, fields: dict, items: list) -> ClientRequest:
    """A multipart request, from the fields and parts ``read_form`` read."""
    stream = str(fields.get("stream", "")).lower() == "true"
    model = _named_model(fields.get("model"))
    return ClientRequest(path, ENDPOINTS[path], headers, body, {}, fields, items, model, stream)


def _named_model(model: object) -> str:
    if not isinstance(model, str) or not model:
        raise Rejected(400, "the request names no model", reason="no_model")
    return model


def route(request: ClientRequest, router: Router) -> Route:
    resolved = router.resolve(request.model)
    if resolved is None:
        raise Rejected(
            400,
            f"no provider serves model {request.model!r}: prefix it with a configured provider "
            f"({', '.join(sorted(router.targets)) or 'none configured'}/…) or list it under "
            "providers.<name>.models",
            reason="no_provider",
        )
    return Route(*resolved)


def rewrite(request: ClientRequest, to: Route, drop_headers: frozenset[str]) -> ForwardPlan:
    """The body and headers sent to ``to``; ``drop_headers`` are the proxy's own headers, never forwarded."""
    body, headers, hide_usage = request.body, request.headers, False
    if request.method == "GET":
        pass  # a video's status or content: no body to rewrite
    elif request.form is not None:
        if to.model != request.model:
            body, ctype = rebuild_form(request.form_items or [], to.model)
            headers = {**headers, "content-type": ctype}
    else:
        req, hide_usage = _with_usage_chunk(request)
        if to.model != request.model or req is not request.json:
            body = orjson.dumps({**req, "model": to.model})
    return ForwardPlan(
        request=request,
        route=to,
        url=to.target.url(request.path),
        body=body,
        headers=headers,
        upstream_headers=upstream_headers(headers, to.target, drop_headers),
        hide_usage=hide_usage,
    )


def _with_usage_chunk(request: ClientRequest) -> tuple[dict, bool]:
    """A stream reports usage only when asked (``stream_options.include_usage``): the proxy always asks, and
    hides that last chunk from a client that did not. Returns (the JSON body, whether the chunk is hidden)."""
    req = request.json
    if not (request.stream and request.request_type in STREAM_USAGE_TYPES):
        return req, False
    opts = req.get("stream_options")
    opts = dict(opts) if isinstance(opts, dict) else {}
    if opts.get("include_usage") is True:
        return req, False
    opts["include_usage"] = True
    return {**req, "stream_options": opts}, True


async def read_form(scope: Scope, body: bytes) -> tuple[dict, list]:
    """(fields, parts) of a multipart body; a file is recorded by name, size and type in the fields."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    fields: dict = {}
    items: list = []
    async with Request(scope, replay).form() as form:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                items.append((key, (value.filename or "file", value.content_type, data)))
                fields.setdefault(
                    "file",
                    {"name": value.filename, "bytes": len(data), "content_type": value.content_type},
                )
            else:
                items.append((key, value))
                fields[key] = value
    return fields, items


def check_method(path: str, method: str) -> None:
    """A video's status and content are read (GET); every other endpoint takes POST."""
    wanted = "GET" if video_call(path) else "POST"
    if method != wanted:
        raise Rejected(405, f"{path} takes {wanted}")


class VideoBook:
    """Which model (as the client named it) created each video, so that its status and content calls,
    which name no model, go to the provider that made it. Bounded: the oldest ids are forgotten first."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self.models: OrderedDict[str, str] = OrderedDict()

    def note(self, request: ClientRequest, video_id: str | None) -> None:
        """Remember the video a create call answered with."""
        if video_id and request.path == "/v1/videos":
            self.models[video_id] = request.model
            if len(self.models) > self.size:
                self.models.popitem(last=False)

    def request(self, path: str, headers: dict[str, str], body: bytes) -> ClientRequest:
        """A status or content call on a video, routed by the model that created it."""
        endpoint, video_id = video_call(path) or ("", "")
        model = self.models.get(video_id)
        if model is None:
            raise Rejected(
                404,
                f"video {video_id!r} was not created through this proxy since it started, so the provider "
                "that made it is not known",
                "not_found_error",
            )
        return ClientRequest(path, "video", headers, body, {}, None, None, model, False, endpoint, "GET")


async def read_request(
    scope: Scope, path: str, headers: dict[str, str], body: bytes, videos: VideoBook | None = None
) -> ClientRequest:
    """parse_json or parse_form, after reading a multipart body (the one step that awaits); a video's
    status and content calls from ``videos``."""
    if videos is not None and scope["method"] == "GET":
        return videos.request(path, headers, body)
    if not is_multipart(headers):
        return parse_json(path, headers, body)
    try:
        fields, items = await read_form(scope, body)
    except Exception as err:
        raise Rejected(400, f"the multipart body cannot be read: {err}", reason="invalid_multipart") from None
    return parse_form(path, headers, body, fields, items)


def rebuild_form(items: list, model: str) -> tuple[bytes, str]:
    """A multipart body from ``items`` with ``model`` as its model field; (body, content type)."""
    boundary = uuid.uuid4().hex
    out = []
    for key, value in items:
        out.append(f"--{boundary}\r\n".encode())
        if isinstance(value, tuple):
            filename, ctype, data = value
            out.append(f'Content-Disposition: form-data; name="{key}"; filename="{filename}"\r\n'.encode())
            out.append(f"Content-Type: {ctype or 'application/octet-stream'}\r\n\r\n".encode())
            out.append(data)
        else:
            out.append(f'Content-Disposition: form-data; name="{key}"\r\n\r\n'.encode())
            out.append((model if key == "model" else str(value)).encode())
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"
