"""What a request and its answer hold beyond the base record (schema version 2): parameters, tools and tool
calls, images and audio, media generation, body sizes and the W3C trace context.

Pure functions over what the proxy already parsed (the client's JSON body, a multipart body's fields, the
provider's JSON answer, the stream assembler): no second parse of a body. Called once per request when its
record is finished, after the answer has been sent. Bytes of images and audio are never kept: a data URI
or base64 audio is recorded as its media type and size, in the columns and in ``input_content`` alike.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from .protocol import video_call

# Keys of a request body that are its content (input_content) or recorded elsewhere (tool_definitions,
# uploaded files): request_params is the body without them.
CONTENT_KEYS = frozenset({"messages", "prompt", "input", "instructions", "prediction"})
TOOL_TYPES = ("chat", "responses")  # the request types that offer tools and get tool calls
PARAMS_EXCLUDED = CONTENT_KEYS | {"tools", "file", "image", "image[]", "mask", "input_reference"}

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def b64_size(data: str) -> int:
    """Decoded size of base64 text, without decoding it."""
    return len(data) * 3 // 4 - data[-2:].count("=") if data else 0


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):  # a multipart field
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _int(v: Any) -> int | None:
    f = _num(v)
    return int(f) if f is not None and f == int(f) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def trace_context(headers: dict[str, str]) -> tuple[str | None, str | None]:
    """(trace id, parent span id) of a valid W3C ``traceparent`` header, else (None, None)."""
    m = _TRACEPARENT.match(headers.get("traceparent", "").strip())
    if m is None or m.group(1) == _ZERO_TRACE or m.group(2) == _ZERO_SPAN:
        return None, None
    return m.group(1), m.group(2)


# --- request ------------------------------------------------------------------------------------------


def _tool_choice(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        kind = v.get("type") or "function"
        inner = v.get(kind) if isinstance(v.get(kind), dict) else v
        name = inner.get("name")
        return f"{kind}:{name}" if isinstance(name, str) else str(kind)
    return None


def _format_type(body: dict) -> str | None:
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        return _str(fmt.get("type"))
    if isinstance(fmt, str):  # speech, transcription, images: the output's encoding
        return fmt
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        return _str(text["format"].get("type"))
    return None


def _reasoning_effort(body: dict) -> str | None:
    effort = body.get("reasoning_effort")
    reasoning = body.get("reasoning")
    if effort is None and isinstance(reasoning, dict):
        effort = reasoning.get("effort")
    return _str(effort)


def _stop(v: Any) -> list[str] | None:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return v
    return None


def parameters(body: dict) -> dict[str, Any]:
    """The typed request parameters of a JSON body (or a multipart body's fields, whose values are text)."""
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens", body.get("max_output_tokens"))
    parallel = body.get("parallel_tool_calls")
    return {
        "temperature": _num(body.get("temperature")),
        "top_p": _num(body.get("top_p")),
        "max_tokens": _int(max_tokens),
        "stop": _stop(body.get("stop")),
        "seed": _int(body.get("seed")),
        "n": _int(body.get("n")),
        "presence_penalty": _num(body.get("presence_penalty")),
        "frequency_penalty": _num(body.get("frequency_penalty")),
        "response_format_type": _format_type(body),
        "tool_choice": _tool_choice(body.get("tool_choice")),
        "parallel_tool_calls": parallel if isinstance(parallel, bool) else None,
        "reasoning_effort": _reasoning_effort(body),
        "request_params": orjson.dumps({k: v for k, v in body.items() if k not in PARAMS_EXCLUDED}).decode()
        if body
        else None,
    }


def tool_name(tool: Any) -> str | None:
    """A tool's name: a function's (chat nests it under ``function``), else a built-in tool's type."""
    if not isinstance(tool, dict):
        return None
    kind = tool.get("type")
    inner = tool.get(kind) if isinstance(kind, str) and isinstance(tool.get(kind), dict) else tool
    name = inner.get("name") if isinstance(inner, dict) else None
    return name if isinstance(name, str) else _str(kind)


def tools_offered(body: dict) -> dict[str, Any]:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return {"tool_names": None, "tool_definitions": None}
    names = [n for n in (tool_name(t) for t in tools) if n is not None]
    return {"tool_names": names, "tool_definitions": orjson.dumps(tools).decode()}


def _data_uri(url: str) -> tuple[str, int] | None:
    """(media type, decoded size) of a base64 data URI."""
    if not url.startswith("data:"):
        return None
    head, _, data = url.partition(",")
    media_type = head[5:].split(";", 1)[0] or "application/octet-stream"
    return media_type, (b64_size(data) if head.endswith(";base64") else len(data))


class _Media:
    """Images and audio found in a request's messages (or responses input), and the content without bytes."""

    def __init__(self, keep_urls: bool):
        self.keep_urls = keep_urls
        self.images: list[dict] = []
        self.audio_format: str | None = None
        self.audio_bytes = 0

    def items(self, items: Any) -> list | None:
        """The items (messages) with every inline image or audio replaced by its size; None if none had any."""
        if not isinstance(items, list):
            return None
        out, changed = [], False
        for item in items:
            content = item.get("content") if isinstance(item, dict) else None
            if isinstance(content, list):
                parts = self._parts(content)
                if parts is not None:
                    item, changed = {**item, "content": parts}, True
            out.append(item)
        return out if changed else None

    def _parts(self, parts: list) -> list | None:
        out, changed = [], False
        for p in parts:
            kind = p.get("type") if isinstance(p, dict) else None
            if kind in ("image_url", "input_image"):
                new = self._image(p)
            elif kind == "input_audio":
                new = self._audio(p)
            else:
                new = None
            changed = changed or new is not None
            out.append(p if new is None else new)
        return out if changed else None

    def _image(self, part: dict) -> dict | None:
        ref, detail = part.get("image_url"), part.get("detail")
        if isinstance(ref, dict):
            ref, detail = ref.get("url"), ref.get("detail", detail)
        entry: dict[str, Any] = {}
        inline = _data_uri(ref) if isinstance(ref, str) else None
        if inline is not None:
            entry["media_type"], entry["bytes"] = inline
        elif isinstance(ref, str):
            entry["url"] = ref if self.keep_urls else None
        elif isinstance(part.get("file_id"), str):
            entry["file_id"] = part["file_id"]
        if detail is not None:
            entry["detail"] = detail
        self.images.append(entry)
        if inline is None:
            return None
        stub = f"data:{inline[0]};base64,<{inline[1]} bytes not kept>"
        if isinstance(part.get("image_url"), dict):
            return {**part, "image_url": {**part["image_url"], "url": stub}}
        return {**part, "image_url": stub}

    def _audio(self, part: dict) -> dict | None:
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            return None
        data = audio.get("data")
        size = b64_size(data) if isinstance(data, str) else 0
        self.audio_bytes += size
        self.audio_format = self.audio_format or _str(audio.get("format"))
        return {**part, "input_audio": {**audio, "data": f"<{size} bytes not kept>"}}


def _upload_fields(request_type: str, form_items: list | None) -> dict[str, Any]:
    """Images and audio uploaded in a multipart body: their type and size."""
    out: dict[str, Any] = {}
    images = []
    for key, value in form_items or ():
        if not isinstance(value, tuple):
            continue
        filename, ctype, data = value
        if request_type == "transcription":
            ext = filename.rsplit(".", 1)[-1].lower() if "." in (filename or "") else None
            out["input_audio_format"] = ext or ctype
            out["input_audio_bytes"] = len(data)
        elif key != "mask":
            images.append({"media_type": ctype or "application/octet-stream", "bytes": len(data)})
    if images:
        out["input_images"] = images
    return out


def request_fields(request: Any, keep_content: bool) -> tuple[dict[str, Any], Any]:
    """The record's request-side fields of version 2, and the request's content with inline media replaced
    by its size (None when nothing was replaced: the content is the body's own)."""
    body = request.json if request.form is None else request.form
    trace_id, span_id = trace_context(request.headers)
    out: dict[str, Any] = {"request_bytes": len(request.body), "trace_id": trace_id, "span_id": span_id}
    out.update(parameters(body))
    out.update(tools_offered(body))
    media = _Media(keep_urls=keep_content)
    content_key = {"chat": "messages", "responses": "input"}.get(request.request_type)
    replaced = media.items(body.get(content_key)) if content_key and request.form is None else None
    if media.images:
        out["input_images"] = media.images
    if media.audio_bytes or media.audio_format:
        out["input_audio_format"], out["input_audio_bytes"] = media.audio_format, media.audio_bytes
    out.update(_upload_fields(request.request_type, request.form_items))
    out.update(_media_request(request.request_type, body))
    video = video_call(request.path) if request.method == "GET" else None
    if video is not None:
        out["video_id"] = video[1]
    redacted = {**body, content_key: replaced} if replaced is not None else None
    return out, redacted


def _media_request(request_type: str, body: dict) -> dict[str, Any]:
    if request_type == "image":
        return {"image_size": _str(body.get("size")), "image_quality": _str(body.get("quality"))}
    if request_type == "video":
        return {"video_size": _str(body.get("size")), "video_seconds": _num(body.get("seconds"))}
    if request_type == "speech":
        return {"output_audio_format": _str(body.get("response_format")) or "mp3"}
    if request_type == "chat" and isinstance(body.get("audio"), dict):
        return {"output_audio_format": _str(body["audio"].get("format"))}
    return {}


# --- answer -------------------------------------------------------------------------------------------


def _call(call_id: Any, name: Any, arguments: Any) -> dict[str, str | None]:
    return {
        "id": call_id if isinstance(call_id, str) else None,
        "name": name if isinstance(name, str) else None,
        "arguments": arguments if isinstance(arguments, str) else None,
    }


def chat_tool_calls(choices: Any) -> list[dict]:
    """Tool calls of a chat completion's messages (every choice), including the legacy ``function_call``."""
    calls = []
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        for tc in message.get("tool_calls") or ():
            if isinstance(tc, dict):
                kind = tc.get("type") or "function"
                fn = tc.get(kind) if isinstance(tc.get(kind), dict) else {}
                calls.append(_call(tc.get("id"), fn.get("name"), fn.get("arguments", fn.get("input"))))
        fc = message.get("function_call")
        if isinstance(fc, dict):
            calls.append(_call(None, fc.get("name"), fc.get("arguments")))
    return calls


def responses_tool_calls(output: Any) -> list[dict]:
    """Tool calls among a responses API output's items: functions by name, built-in tools by their type."""
    calls = []
    for item in output if isinstance(output, list) else ():
        kind = item.get("type") if isinstance(item, dict) else None
        if not isinstance(kind, str) or not kind.endswith("_call"):
            continue
        if kind in ("function_call", "custom_tool_call", "mcp_call"):
            args = item.get("arguments", item.get("input"))
            calls.append(_call(item.get("call_id", item.get("id")), item.get("name"), args))
        else:  # web_search_call, file_search_call, code_interpreter_call, ...
            calls.append(_call(item.get("id"), kind[: -len("_call")], None))
    return calls


def tool_call_fields(calls: list[dict], keep_content: bool) -> dict[str, Any]:
    if not calls:
        return {"tool_call_names": None, "tool_calls": None, "tool_call_count": 0}
    return {
        "tool_call_names": [c["name"] for c in calls if c["name"] is not None],
        "tool_calls": calls if keep_content else None,
        "tool_call_count": len(calls),
    }


def answer_fields(request_type: str, doc: dict) -> dict[str, Any]:
    """Media fields of a provider's whole JSON answer (audio out, transcription length, images, videos)."""
    out: dict[str, Any] = {}
    if request_type == "chat":
        size = sum(b64_size(a.get("data") or "") for a in _chat_audio(doc.get("choices")))
        if size:
            out["output_audio_bytes"] = size
    elif request_type == "transcription":
        usage = doc.get("usage")
        seconds = doc.get("duration")
        if seconds is None and isinstance(usage, dict) and usage.get("type") == "duration":
            seconds = usage.get("seconds")
        out["input_audio_seconds"] = _num(seconds)
    elif request_type == "image" and isinstance(doc.get("data"), list):
        out["output_image_count"] = len(doc["data"])
        out["image_size"] = _str(doc.get("size"))
        out["image_quality"] = _str(doc.get("quality"))
    elif request_type == "video" and doc.get("object") == "video":
        out["video_id"] = _str(doc.get("id"))
        out["video_size"] = _str(doc.get("size"))
        out["video_seconds"] = _num(doc.get("seconds"))
    return {k: v for k, v in out.items() if v is not None}


def _chat_audio(choices: Any) -> list[dict]:
    out = []
    for c in choices if isinstance(choices, list) else ():
        message = c.get("message") if isinstance(c, dict) else None
        audio = message.get("audio") if isinstance(message, dict) else None
        if isinstance(audio, dict) and isinstance(audio.get("data"), str):
            out.append(audio)
    return out


def without_media_bytes(request_type: str, output: Any) -> Any:
    """A whole answer's output content with generated images and audio replaced by their size."""
    if request_type == "image" and isinstance(output, list):
        return [
            {**d, "b64_json": f"<{b64_size(d['b64_json'])} bytes not kept>"}
            if isinstance(d, dict) and isinstance(d.get("b64_json"), str)
            else d
            for d in output
        ]
    if request_type == "chat" and _chat_audio(output):
        out = []
        for c in output:
            message = c.get("message") if isinstance(c, dict) else None
            audio = message.get("audio") if isinstance(message, dict) else None
            if isinstance(audio, dict) and isinstance(audio.get("data"), str):
                audio = {**audio, "data": f"<{b64_size(audio['data'])} bytes not kept>"}
                c = {**c, "message": {**message, "audio": audio}}
            out.append(c)
        return out
    return output
