"""A seeded generator of realistic gateway traffic, landed in the landing-zone contract.

Used by the demo, the tests and the benchmark. The same seed and day give the same records.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson

from bifrost_pipeline import landing
from bifrost_pipeline.proxy.pricing import Pricing
from bifrost_pipeline.records import SCHEMA_VERSION

# provider, model, request type, endpoint, median latency ms (prices come from the proxy's pricing table;
# a model without a price gets a null cost, as the proxy records it)
MODELS = [
    ("openai", "gpt-4o", "chat", "/v1/chat/completions", 1400),
    ("openai", "gpt-4o-mini", "chat", "/v1/chat/completions", 700),
    ("openai", "gpt-4.1", "responses", "/v1/responses", 1600),
    ("openai", "gpt-3.5-turbo-instruct", "text_completion", "/v1/completions", 500),
    ("openai", "text-embedding-3-small", "embeddings", "/v1/embeddings", 120),
    ("openai", "tts-1", "speech", "/v1/audio/speech", 900),
    ("openai", "whisper-1", "transcription", "/v1/audio/transcriptions", 2200),
    ("openai", "gpt-image-1", "image", "/v1/images/generations", 8000),
    ("anthropic", "claude-3-5-sonnet", "chat", "/v1/chat/completions", 1800),
    ("anthropic", "claude-3-haiku", "chat", "/v1/chat/completions", 600),
    ("azure", "gpt-4o", "chat", "/v1/chat/completions", 1500),
    ("mistral", "mistral-large", "chat", "/v1/chat/completions", 1100),
    ("gemini", "gemini-1.5-pro", "chat", "/v1/chat/completions", 1300),
    ("openai", "sora-2", "video", "/v1/videos", 45000),
]
MODEL_WEIGHTS = [14, 30, 6, 2, 12, 2, 2, 1, 10, 8, 6, 3, 3, 0.5]
ERRORS = [
    (429, "rate_limit_error", "Rate limit reached for requests"),
    (500, "api_error", "The server had an error while processing your request"),
    (503, "service_unavailable", "The engine is currently overloaded"),
    (400, "invalid_request_error", "This model's maximum context length is 128000 tokens"),
    (401, "authentication_error", "Incorrect API key provided"),
    (504, "timeout", "Upstream timed out"),
]
WORDS = (
    "the a data pipeline model token latency cost request response customer export schedule partition "
    "warehouse query summarize translate explain python function error retry stream chunk embedding vector "
    "analysis report quarterly revenue forecast support ticket refund policy contract clause review draft"
).split()
BAD_LINES = [
    b'{"request_id": "broken", "timestamp": ',  # truncated
    b"not json at all",
    b'["an", "array"]',
    b'{"schema_version": "1", "timestamp": "yesterday", "request_id": "r", "customer_id": "c", '
    b'"provider": "p", "model": "m", "endpoint": "/e", "method": "POST", "request_type": "chat", '
    b'"stream": false, "status": "success", "status_code": 200, "latency_ms": 5}',
    b'{"schema_version": "1", "timestamp": "2024-01-01T00:00:00Z", "request_id": "r2", "customer_id": "c", '
    b'"provider": "p", "model": "m", "endpoint": "/e", "method": "POST", "request_type": "chat", '
    b'"stream": "no", "status": "success", "status_code": 200, "latency_ms": 5}',
]


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, k=words))


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


TOOLS = [("get_weather", "city"), ("search_docs", "query"), ("create_ticket", "summary"), ("lookup_order", "order_id")]
KEY_NAMES = {"openai": ["openai-a", "openai-b"], "anthropic": ["anthropic-main"]}


def generate_day(day: date, n: int, seed: int = 7, *, content: bool = True) -> Iterator[dict]:
    """`n` records with timestamps spread over the UTC day, in time order."""
    rng = random.Random(f"{seed}:{day.isoformat()}")
    # The schema-version-2 fields draw from their own generator, so the version-1 fields of a seed stay
    # what they were before version 2 existed.
    rng_v2 = random.Random(f"{seed}:{day.isoformat()}:v2")
    pricing = Pricing()
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    offsets = sorted(rng.random() * 86_400 for _ in range(n))
    for i, off in enumerate(offsets):
        record = _record(rng, pricing, start + timedelta(seconds=off))
        if content:
            _add_content(rng, record)
        _add_v2(rng_v2, record)
        yield record
        if record["status"] == "error" and record["retries"] and i % 3 == 0:
            yield _successful_retry(record, pricing, start)


CUSTOMERS = [f"cust_{i:03d}" for i in range(1, 41)]
CUSTOMER_WEIGHTS = [1 / (i + 1) ** 0.8 for i in range(len(CUSTOMERS))]
TEAMS = ["team_search", "team_support", "team_growth", "team_platform"]


def _record(rng: random.Random, pricing: Pricing, ts: datetime) -> dict:
    """One request's version-1 fields (no content)."""
    provider, model, rtype, endpoint, median = rng.choices(MODELS, MODEL_WEIGHTS)[0]
    latency = max(5, int(rng.lognormvariate(math.log(median), 0.45)))
    is_error = rng.random() < 0.04
    stream = rtype in ("chat", "responses") and rng.random() < 0.35
    in_tokens = int(rng.lognormvariate(math.log(350), 0.8)) + 5
    out_tokens = 0 if rtype in ("embeddings", "transcription", "speech") else int(rng.lognormvariate(math.log(220), 0.7))
    cached = int(in_tokens * rng.random() * 0.5) if rng.random() < 0.2 else 0
    reasoning = int(out_tokens * 0.3) if model in ("gpt-4.1",) else 0
    customer = rng.choices(CUSTOMERS, CUSTOMER_WEIGHTS)[0]
    request_id = f"req_{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}"
    retries = rng.randint(1, 3) if is_error and rng.random() < 0.3 else 0
    record = {
        "schema_version": SCHEMA_VERSION,
        "timestamp": _iso(ts),
        "ended_at": _iso(ts + timedelta(milliseconds=latency)),
        "request_id": request_id,
        "parent_request_id": None,
        "customer_id": customer,
        "user_id": f"user_{rng.randint(1, 400):04d}",
        "team_id": rng.choice(TEAMS),
        "virtual_key_id": f"vk_{CUSTOMERS.index(customer) % 12:02d}",
        "provider": provider,
        "model": model,
        "endpoint": endpoint,
        "method": "POST",
        "request_type": rtype,
        "stream": stream,
        "status": "error" if is_error else "success",
        "status_code": 200,
        "error_type": None,
        "error_message": None,
        "finish_reason": None,
        "retries": retries,
        "fallback_index": 1 if retries and rng.random() < 0.5 else 0,
        "latency_ms": latency,
        "time_to_first_token_ms": int(latency * rng.uniform(0.08, 0.3)) if stream else None,
        "input_tokens": in_tokens,
        "output_tokens": out_tokens,
        "total_tokens": in_tokens + out_tokens,
        "cached_tokens": cached,
        "reasoning_tokens": reasoning,
        "cost_usd": pricing.cost(provider, model, in_tokens, out_tokens),
        "metadata": {
            "x-tenant-id": customer.replace("cust_", "tenant-"),
            "env": rng.choices(["production", "staging"], [9, 1])[0],
            "region": rng.choice(["us-east-1", "eu-west-1", "ap-south-1"]),
        },
        "input_content": None,
        "output_content": None,
    }
    if is_error:
        code, etype, message = rng.choice(ERRORS)
        record.update(
            status_code=code,
            error_type=etype,
            error_message=message,
            output_tokens=0,
            total_tokens=in_tokens,
            cost_usd=0.0 if record["cost_usd"] is not None else None,
        )
    elif rtype in ("chat", "responses", "text_completion"):
        record["finish_reason"] = rng.choices(["stop", "length", "tool_calls"], [90, 6, 4])[0]
    return record


def _add_content(rng: random.Random, record: dict) -> None:
    prompt = _text(rng, rng.randint(40, 120))
    record["input_content"] = orjson.dumps(
        [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": prompt}]
    ).decode()
    if record["status"] != "error":
        record["output_content"] = orjson.dumps(
            [{"role": "assistant", "content": _text(rng, rng.randint(40, 140))}]
        ).decode()


def _add_v2(rng: random.Random, record: dict) -> None:
    """Schema version 2: parameters, tools and tool calls, sizes, the attempt trail."""
    rtype = record["request_type"]
    if rtype in ("chat", "responses", "text_completion"):
        params = {"model": record["model"], "temperature": rng.choice([0.0, 0.2, 0.7, 1.0]),
                  "max_tokens": rng.choice([256, 512, 1024, 4096])}
        record.update(temperature=params["temperature"], max_tokens=params["max_tokens"],
                      request_params=orjson.dumps(params).decode())
        if rtype != "text_completion" and rng.random() < 0.25:
            offered = rng.sample(TOOLS, rng.randint(1, 3))
            record["tool_names"] = [name for name, _ in offered]
            record["tool_definitions"] = orjson.dumps([
                {"type": "function", "function": {"name": name, "parameters": {
                    "type": "object", "properties": {arg: {"type": "string"}}, "required": [arg]}}}
                for name, arg in offered
            ]).decode()
            record["tool_choice"] = "auto"
            if record["finish_reason"] == "tool_calls" or rng.random() < 0.3:
                name, arg = rng.choice(offered)
                call_id = f"call_{rng.getrandbits(48):012x}"
                record.update(tool_call_names=[name], tool_call_count=1,
                              tool_calls=[{"id": call_id, "name": name, "arguments": orjson.dumps(
                                  {arg: _text(rng, 2)}).decode()}])
    record["request_bytes"] = len(record["input_content"] or "") + rng.randint(120, 600)
    record["response_bytes"] = len(record["output_content"] or "") + rng.randint(200, 900)
    keys = KEY_NAMES.get(record["provider"], [f"{record['provider']}-main"])
    trail = [
        {"provider": record["provider"], "model": record["model"], "key_name": rng.choice(keys),
         "status_code": 503 if n < record["retries"] else record["status_code"],
         "error_type": "service_unavailable" if n < record["retries"] else record["error_type"],
         "error_message": None, "latency_ms": record["latency_ms"] // (record["retries"] + 1)}
        for n in range(record["retries"] + 1)
    ]
    record["attempts"] = trail


def _successful_retry(record: dict, pricing: Pricing, day_start: datetime) -> dict:
    """The retry that succeeded, linked to the failed first attempt."""
    retry = dict(record)
    ts = datetime.fromisoformat(record["ended_at"].replace("Z", "+00:00")) + timedelta(milliseconds=50)
    in_tokens, out_tokens = record["input_tokens"], max(1, record["input_tokens"] // 2)
    retry.update(
        request_id=record["request_id"] + "_r1",
        parent_request_id=record["request_id"],
        status="success",
        status_code=200,
        error_type=None,
        error_message=None,
        timestamp=_iso(min(ts, day_start + timedelta(seconds=86_399))),
        fallback_index=1,
        output_tokens=out_tokens,
        total_tokens=in_tokens + out_tokens,
        cost_usd=pricing.cost(record["provider"], record["model"], in_tokens, out_tokens),
    )
    return retry


def land_day(
    root: Path,
    day: date,
    n: int,
    seed: int = 7,
    *,
    content: bool = True,
    bad_lines: int = 0,
    segments_per_hour: int = 1,
) -> int:
    """Land one day of generated records as hourly segments; returns the number of lines written."""
    by_hour: dict[int, list[bytes]] = {}
    for rec in generate_day(day, n, seed, content=content):
        hour = int(rec["timestamp"][11:13])
        by_hour.setdefault(hour, []).append(orjson.dumps(rec))
    rng = random.Random(f"bad:{seed}:{day}")
    for k in range(bad_lines):
        hour = rng.choice(sorted(by_hour)) if by_hour else 0
        lines = by_hour.setdefault(hour, [])
        lines.insert(rng.randint(0, len(lines)), BAD_LINES[k % len(BAD_LINES)])
    written = 0
    for hour, lines in sorted(by_hour.items()):
        when = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
        size = math.ceil(len(lines) / segments_per_hour)
        for s in range(0, len(lines), size):
            landing.write_segment(root, lines[s : s + size], when, source="sample")
            written += len(lines[s : s + size])
    return written
