"""``POST /v1/logs``: a batch of canonical records (NDJSON or a JSON array) checked against ``schemas/``.

Each record is validated with the JSON Schema itself (jsonschema, date-time formats checked), so the proxy
never holds a second definition of the record. Valid records are landed (one segment per UTC hour, published
before the answer); rejected ones are reported with their line (NDJSON) or index (array), the field path
and the reason. ``POST /v1/traces`` lands the records ``otlp`` makes of GenAI spans the same way
(``land_spans``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from bifrost_pipeline import landing, records

from . import otlp
from .pricing import Pricing
from .record import hour_key

MAX_ERRORS_PER_RECORD = 5
_REQUIRED = re.compile(r"^'([^']+)' is a required property$")


@cache
def validator() -> jsonschema.protocols.Validator:
    schema = records.json_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _path(err: jsonschema.ValidationError) -> str:
    parts = list(err.absolute_path)
    if err.validator == "required":
        m = _REQUIRED.match(err.message)
        if m:
            parts.append(m.group(1))
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
    return out or "(record)"


def check_record(obj: Any) -> list[dict[str, str]]:
    """The problems of one decoded record (empty when it is valid)."""
    if not isinstance(obj, dict):
        return [{"path": "(record)", "reason": f"expected a JSON object, got {type(obj).__name__}"}]
    errors = sorted(validator().iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [{"path": _path(e), "reason": e.message[:500]} for e in errors[:MAX_ERRORS_PER_RECORD]]


def record_hour(obj: dict) -> datetime:
    ts = datetime.fromisoformat(obj["timestamp"])
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return hour_key(ts)


def split_batch(body: bytes) -> tuple[str, list[tuple[int, Any, str | None]]]:
    """(kind, [(line or index, decoded value or None, decode error)]) of an NDJSON or JSON-array body."""
    head = body.lstrip()[:1]
    if head == b"[":
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            raise ValueError(f"the body starts with '[' but is not a JSON array: {err}") from None
        return "index", [(i, item, None) for i, item in enumerate(items)]
    out: list[tuple[int, Any, str | None]] = []
    for lineno, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            out.append((lineno, orjson.loads(line), None))
        except orjson.JSONDecodeError as err:
            out.append((lineno, None, f"invalid JSON: {err}"))
    return "line", out


def process_batch(body: bytes, *, strip_content: bool) -> tuple[dict[datetime, list[bytes]], dict]:
    """Validate a batch: (lines to land grouped by UTC hour, the answer's report)."""
    kind, items = split_batch(body)
    groups: dict[datetime, list[bytes]] = {}
    rejected = []
    accepted = 0
    for pos, obj, decode_error in items:
        if decode_error is not None:
            rejected.append({kind: pos, "path": "(line)", "reason": decode_error, "errors": []})
            continue
        problems = check_record(obj)
        if problems:
            rejected.append(
                {kind: pos, "path": problems[0]["path"], "reason": problems[0]["reason"], "errors": problems}
            )
            continue
        if strip_content:
            obj["input_content"] = None
            obj["output_content"] = None
            if obj.get("tool_calls") is not None:  # content too: the model's arguments (schema version 2)
                obj["tool_calls"] = None
        groups.setdefault(record_hour(obj), []).append(orjson.dumps(obj))
        accepted += 1
    return groups, {"accepted": accepted, "rejected_count": len(rejected), "rejected": rejected}


def land_groups(root: Path, groups: dict[datetime, list[bytes]], source: str) -> list[Path]:
    """One published segment per UTC hour, all or none (blocking: run it in a thread).

    Every segment is written and fsynced before any is published: if the disk refuses one, the others are
    removed and the error raised, so the sender can send the whole batch again without duplicates.
    """
    segments: list[landing.SegmentFile] = []
    try:
        for hour, lines in sorted(groups.items()):
            segment = landing.SegmentFile(root, source, hour)
            segments.append(segment)
            segment.write_lines(lines)
            segment.flush(durable=True)
    except BaseException:
        for segment in segments:
            try:
                segment.discard()
            except OSError:
                pass  # left as an empty or partial .part: the next start's recovery deals with it
        raise
    return [p for p in (segment.publish() for segment in segments) if p is not None]


@dataclass
class SpanBatch:
    """What became of the spans of one ``/v1/traces`` request."""

    groups: dict[datetime, list[bytes]] = field(default_factory=dict)  # records to land, by UTC hour
    skipped: int = 0  # spans without GenAI attributes
    rejected: int = 0  # GenAI spans that did not make a valid record
    reasons: list[str] = field(default_factory=list)  # one per rejected span

    @property
    def landed(self) -> int:
        return sum(len(v) for v in self.groups.values())


def convert_spans(spans: list[dict], *, customer_id: str, content: bool, pricing: Pricing) -> SpanBatch:
    """Records of the GenAI spans among ``spans``, each checked against the JSON Schema."""
    batch = SpanBatch()
    for span in spans:
        if not otlp.is_genai(span):
            batch.skipped += 1
            continue
        try:
            if "error" in span:
                raise ValueError(span["error"])
            rec = otlp.span_to_record(span, customer_id=customer_id, content=content, pricing=pricing)
            problems = check_record(rec)
        except Exception as err:  # a span we cannot read is reported, not fatal
            problems = [{"path": "(span)", "reason": str(err)}]
        if problems:
            batch.rejected += 1
            batch.reasons.append(f"span {span['span_id']}: {problems[0]['path']}: {problems[0]['reason']}")
            continue
        batch.groups.setdefault(record_hour(rec), []).append(orjson.dumps(rec))
    return batch


def land_spans(root: Path, spans: list[dict], *, customer_id: str, content: bool, pricing: Pricing) -> SpanBatch:
    """``convert_spans``, then land its records all or none (blocking: run it in a thread)."""
    batch = convert_spans(spans, customer_id=customer_id, content=content, pricing=pricing)
    if batch.groups:
        land_groups(root, batch.groups, "otlp")
    return batch
