"""A built-in OpenAI-compatible mock upstream, for the demo, the tests and the benchmark.

Serves chat completions, text completions, responses, embeddings, speech and transcription (multipart),
streamed (SSE, with a final usage chunk when ``stream_options.include_usage`` is set, as OpenAI does) or not;
image generations and edits (multipart), and videos (create, status, content). A chat or responses request
that offers tools gets a call of its first tool (arguments ``MOCK_TOOL_ARGUMENTS``), unless ``tool_choice``
is "none" or the request already sends a tool's result back.
Behaviour per request, from headers (the proxy forwards them): ``x-mock-delay-ms`` (wait before answering),
``x-mock-status`` (answer with that error status), ``x-mock-chunks`` (words in the reply),
``x-mock-chunk-delay-ms`` (wait between streamed chunks). Server-wide defaults: ``delay_ms`` and
``error_rate`` (a seeded share of requests answered 500). ``GET /mock/requests`` lists the last requests
it received (path, headers, body) so tests can check what the proxy forwarded.

Failures on demand, for the tests of retries, key rotation and fallbacks (a status is a number, or ``reset``:
the answer is cut after its headers, as a dropped connection):
- ``x-mock-fail: <status>[*<n>]`` with ``x-mock-fail-id: <id>``: the first n requests carrying that id are
  answered so (all of them without ``*<n>``); the id lets a retry of the same request succeed;
- ``x-mock-fail-key: <key>=<status>[,...]``: every request sent with that provider key (its bearer token);
- ``x-mock-fail-model: <model>=<status>[,...]``: every request for that model (as the mock receives it);
- ``x-mock-retry-after: <seconds>``: sent as ``retry-after`` with those failures.

Run alone: ``python -m bifrost_pipeline.proxy.mock --port 9000``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

WORDS = (
    "This is a mock reply from the bifrost pipeline mock upstream , streamed word by word for tests .".split()
)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "timeout",
}
EMBEDDING_DIMS = 8
MOCK_TOOL_ARGUMENTS = '{"query": "mock", "limit": 3}'
PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
VIDEO_BYTES = b"\x00\x00\x00\x18ftypmp42" + bytes(1000)  # an mp4 header and some bytes


def _tool_to_call(req: dict, items_key: str) -> str | None:
    """The name of the tool the mock calls: the first one offered, unless a tool result came back."""
    tools = req.get("tools")
    if not isinstance(tools, list) or not tools or req.get("tool_choice") == "none":
        return None
    items = req.get(items_key)
    last = items[-1] if isinstance(items, list) and items else {}
    if isinstance(last, dict) and (last.get("role") == "tool" or last.get("type") == "function_call_output"):
        return None
    tool = tools[0] if isinstance(tools[0], dict) else {}
    inner = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    return str(inner.get("name") or tool.get("type") or "tool")


def _count_words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_count_words(v) for v in value)
    if isinstance(value, dict):
        return sum(_count_words(v) for k, v in value.items() if k in ("content", "text", "input", "prompt"))
    return 0


@dataclass(frozen=True, slots=True)
class MockRequest:
    """A request to one of the mock's endpoints and how it asks to be answered."""

    path: str
    json: dict  # the JSON body ({} for multipart or an empty body)
    form: dict | None  # a multipart body's fields (the file as file_name and file_bytes)
    model: str
    words: list[str]  # the reply, word by word
    stream: bool
    include_usage: bool  # stream_options.include_usage
    chunk_delay: float  # seconds between streamed chunks


async def _lifespan(receive, send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_all(receive) -> bytes:
    body = b""
    more = True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    return body


class MockUpstream:
    def __init__(
        self,
        *,
        delay_ms: float = 0.0,
        error_rate: float = 0.0,
        seed: int = 7,
        keep: int = 200,
        prefix: str = "",
    ):
        self.delay_ms = delay_ms
        self.error_rate = error_rate
        self.rng = random.Random(seed)
        self.requests: deque[dict] = deque(maxlen=keep)
        self.prefix = prefix
        self.count = 0
        self.fail_counts: dict[str, int] = {}  # x-mock-fail-id -> requests seen
        self.endpoints = {
            "/v1/chat/completions": self._chat_endpoint,
            "/v1/completions": self._completions_endpoint,
            "/v1/responses": self._responses_endpoint,
            "/v1/embeddings": self._embeddings_endpoint,
            "/v1/audio/speech": self._speech_endpoint,
            "/v1/audio/transcriptions": self._transcription_endpoint,
            "/v1/images/generations": self._images_endpoint,
            "/v1/images/edits": self._images_endpoint,
            "/v1/videos": self._video_create_endpoint,
        }
        self.videos: dict[str, dict] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if self.prefix and path.startswith(self.prefix):
            path = path[len(self.prefix) :]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body = await _read_all(receive)
        if path == "/mock/requests":
            await self._json(send, 200, list(self.requests))
            return
        if path == "/health":
            await self._json(send, 200, {"status": "ok"})
            return
        self.count += 1
        parsed: Any = None
        form: dict | None = None
        if headers.get("content-type", "").startswith("multipart/form-data"):
            form = await self._form(scope, body)
        elif body:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                await self._error(send, 400, "mock: the body is not JSON")
                return
        self.requests.append({"path": path, "headers": headers, "body": parsed if form is None else form})
        src = form if form is not None else parsed
        model = src.get("model", "") if isinstance(src, dict) else ""
        if await self._delayed_failure(send, headers, str(model)):
            return
        handler = self.endpoints.get(path)
        if handler is None and path.startswith("/v1/videos/"):
            handler = self._video_endpoint
        if handler is None:
            await self._error(send, 404, f"mock: no route {path}")
            return
        await handler(send, self._request(path, headers, parsed, form))

    async def _delayed_failure(self, send, headers: dict[str, str], model: str) -> bool:
        """Wait as asked, then answer with the error asked for (or drawn by error_rate); True if it did."""
        delay = float(headers.get("x-mock-delay-ms", self.delay_ms))
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        status = self._failure_asked(headers, model) or headers.get("x-mock-status", "0") or "0"
        if status == "0" and self.error_rate and self.rng.random() < self.error_rate:
            status = "500"
        if status == "reset":
            # Headers promise a body that never comes: the client sees the connection cut mid-answer.
            head = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": b'{"id": ', "more_body": True})
            return True
        if int(status) >= 400:
            extra = []
            if headers.get("x-mock-retry-after"):
                extra.append((b"retry-after", headers["x-mock-retry-after"].encode()))
            await self._error(send, int(status), f"mock error {status}", extra)
            return True
        return False

    def _failure_asked(self, headers: dict[str, str], model: str) -> str | None:
        """The status asked by x-mock-fail (counted per x-mock-fail-id), -fail-key or -fail-model."""
        key = headers.get("authorization", "")[7:]
        for name, subject in (("x-mock-fail-key", key), ("x-mock-fail-model", model)):
            for rule in headers.get(name, "").split(","):
                target, _, status = rule.strip().rpartition("=")
                if target and target == subject:
                    return status
        rule = headers.get("x-mock-fail")
        if not rule:
            return None
        status, _, times = rule.partition("*")
        fail_id = headers.get("x-mock-fail-id", rule)
        if len(self.fail_counts) > 10_000:
            self.fail_counts.clear()  # a long-running demo mock stays bounded
        seen = self.fail_counts[fail_id] = self.fail_counts.get(fail_id, 0) + 1
        return status.strip() if not times or seen <= int(times) else None

    @staticmethod
    def _request(path: str, headers: dict[str, str], parsed: Any, form: dict | None) -> MockRequest:
        req = parsed if isinstance(parsed, dict) else {}
        n_words = int(headers.get("x-mock-chunks", 0) or 0) or len(WORDS)
        if isinstance(req.get("max_tokens"), int):
            n_words = min(n_words, max(1, req["max_tokens"]))
        return MockRequest(
            path=path,
            json=req,
            form=form,
            model=(form or req).get("model", "mock-gpt"),
            words=[WORDS[i % len(WORDS)] for i in range(n_words)],
            stream=bool(req.get("stream")) or (form is not None and str(form.get("stream")).lower() == "true"),
            include_usage=bool((req.get("stream_options") or {}).get("include_usage")),
            chunk_delay=float(headers.get("x-mock-chunk-delay-ms", 0) or 0) / 1000,
        )

    # --- endpoints ------------------------------------------------------------------------------------

    async def _chat_endpoint(self, send, r: MockRequest) -> None:
        prompt = max(1, _count_words(r.json.get("messages")))
        tool = _tool_to_call(r.json, "messages")
        if tool is not None:
            await self._chat_tool_call(send, r, tool, prompt)
        elif r.stream:
            await self._stream_chat(send, r, prompt, "chat")
        else:
            await self._json(send, 200, self._chat(r.model, " ".join(r.words), prompt, len(r.words)))

    async def _completions_endpoint(self, send, r: MockRequest) -> None:
        prompt = max(1, _count_words(r.json.get("prompt")))
        if r.stream:
            await self._stream_chat(send, r, prompt, "text")
        else:
            await self._json(send, 200, self._completion(r.model, " ".join(r.words), prompt, len(r.words)))

    async def _responses_endpoint(self, send, r: MockRequest) -> None:
        prompt = max(1, _count_words(r.json.get("input")))
        tool = _tool_to_call(r.json, "input")
        if tool is not None:
            await self._responses_tool_call(send, r, tool, prompt)
        elif r.stream:
            await self._stream_responses(send, r, prompt)
        else:
            await self._json(send, 200, self._response(r.model, " ".join(r.words), prompt, len(r.words)))

    async def _embeddings_endpoint(self, send, r: MockRequest) -> None:
        inputs = r.json.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        prompt = max(1, _count_words(inputs))
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": [round(0.1 * (i + j + 1), 3) for j in range(EMBEDDING_DIMS)],
            }
            for i in range(len(inputs))
        ]
        usage = {"prompt_tokens": prompt, "total_tokens": prompt}
        await self._json(send, 200, {"object": "list", "data": data, "model": r.model, "usage": usage})

    async def _speech_endpoint(self, send, r: MockRequest) -> None:
        # As OpenAI's TTS: the audio in chunks as it is made (chunked transfer), or with
        # stream_format "sse" as speech.audio.delta events (base64) and a speech.audio.done with usage.
        pieces = [b"ID3" + bytes(range(256))] + [bytes(range(256))] * max(0, len(r.words) - 1)
        if r.json.get("stream_format") == "sse":
            prompt = max(1, _count_words(r.json.get("input")))
            events: list[tuple[str | None, dict]] = [
                (None, {"type": "speech.audio.delta", "audio": base64.b64encode(p).decode()}) for p in pieces
            ]
            out = len(pieces)
            usage = {"input_tokens": prompt, "output_tokens": out, "total_tokens": prompt + out}
            events.append((None, {"type": "speech.audio.done", "usage": usage}))
            await self._sse(send, events, r.chunk_delay, done=False)
            return
        headers = [(b"content-type", b"audio/mpeg")]  # no length: sent chunked
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            if r.chunk_delay:
                await asyncio.sleep(r.chunk_delay)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _transcription_endpoint(self, send, r: MockRequest) -> None:
        size = int((r.form or {}).get("file_bytes", 0))
        text = f"mock transcription of {size} bytes"
        usage = {
            "type": "tokens",
            "input_tokens": max(1, size // 100),
            "output_tokens": len(text.split()),
            "total_tokens": max(1, size // 100) + len(text.split()),
        }
        if r.stream:
            events = [{"type": "transcript.text.delta", "delta": w + " "} for w in text.split()]
            events.append({"type": "transcript.text.done", "text": text, "usage": usage})
            await self._sse(send, [(None, e) for e in events], r.chunk_delay, done=False)
        else:
            await self._json(send, 200, {"text": text, "usage": usage})

    async def _images_endpoint(self, send, r: MockRequest) -> None:
        fields = r.form if r.form is not None else r.json
        n = int(fields.get("n") or 1)
        b64 = fields.get("response_format") == "b64_json" or str(fields.get("model", "")).startswith("gpt-image")
        data = [
            {"b64_json": base64.b64encode(PNG_1PX).decode()} if b64 else {"url": f"https://mock.invalid/img/{i}.png"}
            for i in range(n)
        ]
        doc = {"created": int(time.time()), "data": data, "size": fields.get("size") or "1024x1024"}
        if fields.get("quality"):
            doc["quality"] = fields["quality"]
        prompt = max(1, _count_words(fields.get("prompt")))
        doc["usage"] = {"input_tokens": prompt, "output_tokens": 100 * n, "total_tokens": prompt + 100 * n}
        await self._json(send, 200, doc)

    async def _video_create_endpoint(self, send, r: MockRequest) -> None:
        fields = r.form if r.form is not None else r.json
        video = {
            "id": f"video_mock_{self.count}",
            "object": "video",
            "created_at": int(time.time()),
            "status": "queued",
            "model": r.model,
            "progress": 0,
            "seconds": str(fields.get("seconds") or "4"),
            "size": fields.get("size") or "720x1280",
        }
        self.videos[video["id"]] = video
        await self._json(send, 200, video)

    async def _video_endpoint(self, send, r: MockRequest) -> None:
        """GET /v1/videos/{id} (done at the first look) and GET /v1/videos/{id}/content (mp4 bytes)."""
        video_id, _, tail = r.path[len("/v1/videos/") :].partition("/")
        video = self.videos.get(video_id)
        if video is None:
            await self._error(send, 404, f"mock: no video {video_id}")
            return
        if tail != "content":
            video.update(status="completed", progress=100)
            await self._json(send, 200, video)
            return
        headers = [(b"content-type", b"video/mp4")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(0, len(VIDEO_BYTES), 256):
            await send({"type": "http.response.body", "body": VIDEO_BYTES[i : i + 256], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _chat_tool_call(self, send, r: MockRequest, tool: str, prompt: int) -> None:
        call_id = self._id("call")
        usage = {"prompt_tokens": prompt, "completion_tokens": 9, "total_tokens": prompt + 9}
        if not r.stream:
            doc = self._chat(r.model, "", prompt, 9)
            doc["choices"][0]["message"] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": tool, "arguments": MOCK_TOOL_ARGUMENTS}}
                ],
            }
            doc["choices"][0]["finish_reason"] = "tool_calls"
            await self._json(send, 200, doc)
            return
        head = {"id": self._id("chatcmpl"), "object": "chat.completion.chunk", "created": int(time.time()),
                "model": r.model}

        def chunk(delta: dict, finish: str | None = None) -> tuple[None, dict]:
            return None, {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        first = {"index": 0, "id": call_id, "type": "function", "function": {"name": tool, "arguments": ""}}
        events = [chunk({"role": "assistant", "content": None, "tool_calls": [first]})]
        third = len(MOCK_TOOL_ARGUMENTS) // 3
        for piece in (MOCK_TOOL_ARGUMENTS[:third], MOCK_TOOL_ARGUMENTS[third : 2 * third],
                      MOCK_TOOL_ARGUMENTS[2 * third :]):
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        events.append(chunk({}, "tool_calls"))
        if r.include_usage:
            events.append((None, {**head, "choices": [], "usage": usage}))
        await self._sse(send, events, r.chunk_delay, done=True)

    async def _responses_tool_call(self, send, r: MockRequest, tool: str, prompt: int) -> None:
        item = {"type": "function_call", "id": self._id("fc"), "call_id": self._id("call"), "name": tool,
                "arguments": MOCK_TOOL_ARGUMENTS, "status": "completed"}
        done = self._response(r.model, "", prompt, 9)
        done["output"] = [item]
        if not r.stream:
            await self._json(send, 200, done)
            return
        start = {**done, "status": "in_progress", "output": [], "usage": None}
        seq = iter(range(10_000))
        events: list[tuple[str | None, dict]] = []

        def ev(name: str, **fields) -> None:
            events.append((name, {"type": name, **fields, "sequence_number": next(seq)}))

        ev("response.created", response=start)
        ev("response.output_item.added", output_index=0, item={**item, "arguments": "", "status": "in_progress"})
        half = len(MOCK_TOOL_ARGUMENTS) // 2
        for piece in (MOCK_TOOL_ARGUMENTS[:half], MOCK_TOOL_ARGUMENTS[half:]):
            ev("response.function_call_arguments.delta", item_id=item["id"], output_index=0, delta=piece)
        ev("response.function_call_arguments.done", item_id=item["id"], output_index=0,
           arguments=MOCK_TOOL_ARGUMENTS)
        ev("response.output_item.done", output_index=0, item=item)
        ev("response.completed", response=done)
        await self._sse(send, events, r.chunk_delay, done=False)

    # --- bodies ---------------------------------------------------------------------------------------

    def _id(self, kind: str) -> str:
        return f"{kind}-mock-{self.count}"

    def _chat(self, model: str, text: str, prompt: int, completion: int) -> dict:
        return {
            "id": self._id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        }

    def _completion(self, model: str, text: str, prompt: int, completion: int) -> dict:
        return {
            "id": self._id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def _response(
        self, model: str, text: str, prompt: int, completion: int, status: str = "completed"
    ) -> dict:
        return {
            "id": self._id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": model,
            "output": [
                {
                    "type": "message",
                    "id": self._id("msg"),
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": prompt,
                "output_tokens": completion,
                "total_tokens": prompt + completion,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }

    async def _stream_chat(self, send, r: MockRequest, prompt: int, kind: str) -> None:
        model, words = r.model, r.words
        cid = self._id("chatcmpl" if kind == "chat" else "cmpl")
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        created = int(time.time())

        def chunk(delta_text: str | None, finish: str | None, first: bool = False) -> dict:
            if kind == "chat":
                delta: dict = {"role": "assistant", "content": ""} if first else {"content": delta_text}
                if finish:
                    delta = {}
                choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": delta_text or "", "finish_reason": finish, "logprobs": None}
            return {"id": cid, "object": obj, "created": created, "model": model, "choices": [choice]}

        events: list[tuple[str | None, dict]] = []
        if kind == "chat":
            events.append((None, chunk(None, None, first=True)))
        for i, w in enumerate(words):
            events.append((None, chunk(w if i == 0 else " " + w, None)))
        events.append((None, chunk(None, "stop")))
        if r.include_usage:
            events.append(
                (
                    None,
                    {
                        "id": cid,
                        "object": obj,
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": prompt,
                            "completion_tokens": len(words),
                            "total_tokens": prompt + len(words),
                        },
                    },
                )
            )
        await self._sse(send, events, r.chunk_delay, done=True)

    async def _stream_responses(self, send, r: MockRequest, prompt: int) -> None:
        model, words = r.model, r.words
        text = " ".join(words)
        start = self._response(model, "", prompt, 0, status="in_progress")
        start["output"] = []
        start["usage"] = None
        item_id = self._id("msg")
        seq = iter(range(10_000))
        events: list[tuple[str | None, dict]] = []

        def ev(name: str, **fields) -> None:
            events.append((name, {"type": name, **fields, "sequence_number": next(seq)}))

        ev("response.created", response=start)
        ev(
            "response.output_item.added",
            output_index=0,
            item={
                "type": "message",
                "id": item_id,
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        )
        ev(
            "response.content_part.added",
            item_id=item_id,
            output_index=0,
            content_index=0,
            part={"type": "output_text", "text": "", "annotations": []},
        )
        for i, w in enumerate(words):
            ev(
                "response.output_text.delta",
                item_id=item_id,
                output_index=0,
                content_index=0,
                delta=w if i == 0 else " " + w,
                logprobs=[],
            )
        ev(
            "response.output_text.done",
            item_id=item_id,
            output_index=0,
            content_index=0,
            text=text,
            logprobs=[],
        )
        part = {"type": "output_text", "text": text, "annotations": []}
        ev("response.content_part.done", item_id=item_id, output_index=0, content_index=0, part=part)
        ev(
            "response.output_item.done",
            output_index=0,
            item={
                "type": "message",
                "id": item_id,
                "status": "completed",
                "role": "assistant",
                "content": [part],
            },
        )
        done = self._response(model, text, prompt, len(words))
        done["output"][0]["id"] = item_id
        ev("response.completed", response=done)
        await self._sse(send, events, r.chunk_delay, done=False)

    async def _sse(self, send, events, chunk_delay: float, done: bool) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        for name, ev in events:
            head = f"event: {name}\n".encode() if name else b""
            await send(
                {
                    "type": "http.response.body",
                    "body": head + b"data: " + orjson.dumps(ev) + b"\n\n",
                    "more_body": True,
                }
            )
            if chunk_delay:
                await asyncio.sleep(chunk_delay)
        await send(
            {"type": "http.response.body", "body": b"data: [DONE]\n\n" if done else b"", "more_body": False}
        )

    async def _form(self, scope, body: bytes) -> dict:
        from starlette.datastructures import UploadFile
        from starlette.requests import Request

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        out: dict = {}
        async with Request(scope, replay).form() as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    out["file_name"] = value.filename
                    out["file_bytes"] = len(data)
                else:
                    out[key] = value
        return out

    async def _json(self, send, status: int, doc: Any, extra: list | None = None) -> None:
        body = orjson.dumps(doc)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *(extra or ()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send, status: int, message: str, extra: list | None = None) -> None:
        etype = ERROR_TYPES.get(status, "api_error")
        await self._json(
            send, status, {"error": {"message": message, "type": etype, "param": None, "code": etype}}, extra
        )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    p = argparse.ArgumentParser(description="OpenAI-compatible mock upstream")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--error-rate", type=float, default=0.0)
    args = p.parse_args(argv)
    app = MockUpstream(delay_ms=args.delay_ms, error_rate=args.error_rate)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        timeout_keep_alive=75,
    )


if __name__ == "__main__":
    main()
