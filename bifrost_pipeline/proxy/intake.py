"""``POST /v1/logs``: a batch of canonical records (NDJSON or a JSON array) checked against ``schemas/``.

Every record is checked by code compiled from the JSON Schema file (``compiled_schema``), so the proxy never
holds a second definition of the record and a valid record costs a few microseconds. A record it refuses is
explained by the JSON Schema itself (jsonschema, the reference): the reasons are the reference's, up to
``MAX_ERRORS_PER_RECORD`` per record, with their line (NDJSON) or index (array) and field path. A test keeps
the two in agreement on a generated corpus of valid and invalid records.

Valid records are handed to the landing writer, which appends them to its rotating segments and answers
once they are fsynced (``LandingWriter.commit``). ``POST /v1/traces`` lands the records ``otlp`` makes of
GenAI spans the same way (``convert_spans``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jsonschema
import orjson

from bifrost_pipeline import records

from . import compiled_schema, otlp
from .pricing import Pricing
from .record import hour_key

MAX_ERRORS_PER_RECORD = 5
_REQUIRED = re.compile(r"^'([^']+)' is a required property$")

Groups = dict[datetime, list[bytes]]  # serialized records to land, by UTC hour


@cache
def reference_validator() -> jsonschema.protocols.Validator:
    """The JSON Schema (jsonschema, formats checked, an integer written as one): the reference, and the
    reasons of rejects."""
    return records.json_schema_validator()


@cache
def compiled_check() -> Callable[[Any], bool]:
    """The JSON Schema compiled to Python code: True for a valid record (``compiled_schema``).

    Compiled from the schema file on first use, like ``reference_validator``: a property added to the file
    is checked by both without any other edit.
    """
    schema = records.json_schema()
    formats = compiled_schema.format_checks(schema, reference_validator().format_checker.checkers)
    return compiled_schema.compile_check(schema, formats)


def _path(err: jsonschema.ValidationError) -> str:
    parts = list(err.absolute_path)
    if err.validator == "required":
        m = _REQUIRED.match(err.message)
        if m:
            parts.append(m.group(1))
    return _join(parts)


def _join(parts: list) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
    return out or "(record)"


def check_record(obj: Any) -> list[dict[str, str]]:
    """The problems of one decoded record (empty when it is valid).

    The compiled check decides the common case; a record it refuses is explained by the reference. Should the
    reference find nothing wrong, the reference wins: the record is valid (and test_compiled_schema fails).
    """
    if not isinstance(obj, dict):
        return [{"path": "(record)", "reason": f"expected a JSON object, got {type(obj).__name__}"}]
    if compiled_check()(obj):
        return []
    errors = sorted(
        reference_validator().iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.message)
    )
    return [{"path": _path(e), "reason": e.message[:500]} for e in errors[:MAX_ERRORS_PER_RECORD]]


def _parse_timestamp(ts: str) -> datetime:
    # RFC 3339 allows a lower-case t and z, which fromisoformat does not; the pattern's $ allows a final \n.
    parsed = datetime.fromisoformat(ts.upper().rstrip("\n"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def record_hour(obj: dict) -> datetime:
    """The UTC hour of a valid record's timestamp."""
    return hour_key(_parse_timestamp(obj["timestamp"]))


class HourGroups:
    """Serialized records grouped by the UTC hour of their timestamp (``groups``).

    A timestamp written in UTC (``Z``, ``+00:00``) has its hour in its first 13 characters: a batch's records
    share a few hours, and a dict lookup of that prefix is cheaper than parsing each timestamp.
    """

    def __init__(self) -> None:
        self.groups: Groups = {}
        self.by_prefix: dict[str, list[bytes]] = {}

    def lines(self, obj: dict) -> list[bytes]:
        """The list to append ``obj``'s serialized line to."""
        ts = obj["timestamp"]
        utc = ts[-1] in "Zz" or ts[-6:] in ("+00:00", "-00:00")
        if utc:
            found = self.by_prefix.get(ts[:13])
            if found is not None:
                return found
        hour = record_hour(obj)
        found = self.groups.get(hour)
        if found is None:
            found = self.groups[hour] = []
        if utc:
            self.by_prefix[ts[:13]] = found
        return found

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.groups.values())


def _array_items(body: bytes) -> list:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ValueError(f"the body starts with '[' but is not a JSON array: {err}") from None
    if not isinstance(items, list):
        raise ValueError("the body starts with '[' but is not a JSON array")
    return items


def process_batch(body: bytes, *, strip_content: bool) -> tuple[Groups, dict]:
    """Validate a batch (NDJSON, or a JSON array if it starts with '['): (lines to land grouped by UTC hour,
    the answer's report). A body that starts with '[' but is not a JSON array raises ValueError.

    A valid NDJSON line lands as the sender wrote it (less surrounding white space): it is one JSON object on
    one line, and not serializing it again saves a third of the work. With content logging off, or from a
    JSON array, the decoded record is serialized.
    """
    ndjson = body.lstrip()[:1] != b"["
    kind = "line" if ndjson else "index"
    items = enumerate(body.split(b"\n"), start=1) if ndjson else enumerate(_array_items(body))
    valid, loads, decode_error, dumps = compiled_check(), orjson.loads, orjson.JSONDecodeError, orjson.dumps
    hours, rejected = HourGroups(), []
    for pos, item in items:  # the hot loop: one decode and one call into the compiled check a line
        if ndjson:
            try:
                obj = loads(item)
            except decode_error as err:
                if item.strip():
                    rejected.append({kind: pos, "path": "(line)", "reason": f"invalid JSON: {err}", "errors": []})
                continue
        else:
            obj = item
        if not valid(obj):
            problems = check_record(obj)
            if problems:
                first = problems[0]
                rejected.append({kind: pos, "path": first["path"], "reason": first["reason"], "errors": problems})
                continue
        if strip_content:
            obj["input_content"] = None
            obj["output_content"] = None
            if obj.get("tool_calls") is not None:  # content too: the model's arguments (schema version 2)
                obj["tool_calls"] = None
        try:
            lines = hours.lines(obj)
        except OverflowError:  # a valid date-time whose UTC time is before year 1 or after 9999
            problem = {"path": "timestamp", "reason": f"{obj['timestamp']!r} is outside the years 0001-9999 in UTC"}
            rejected.append({kind: pos, **problem, "errors": [problem]})
            continue
        lines.append(item.strip() if ndjson and not strip_content else dumps(obj))
    return hours.groups, {"accepted": hours.count, "rejected_count": len(rejected), "rejected": rejected}


@dataclass
class SpanBatch:
    """What became of the spans of one ``/v1/traces`` request."""

    groups: Groups = field(default_factory=dict)  # records to land, by UTC hour
    skipped: int = 0  # spans without GenAI attributes
    rejected: int = 0  # GenAI spans that did not make a valid record
    reasons: list[str] = field(default_factory=list)  # one per rejected span

    @property
    def landed(self) -> int:
        return sum(len(v) for v in self.groups.values())


def convert_spans(spans: Iterable[dict], *, customer_id: str, content: bool, pricing: Pricing) -> SpanBatch:
    """Records of the GenAI spans among ``spans``, each checked against the JSON Schema."""
    batch, hours, valid = SpanBatch(), HourGroups(), compiled_check()
    batch.groups = hours.groups
    for span in spans:
        if not otlp.is_genai(span):
            batch.skipped += 1
            continue
        try:
            if "error" in span:
                raise ValueError(span["error"])
            rec = otlp.span_to_record(span, customer_id=customer_id, content=content, pricing=pricing)
            problems = [] if valid(rec) else check_record(rec)
            line = b"" if problems else orjson.dumps(rec)
        except Exception as err:  # a span we cannot read is reported, not fatal to the other spans
            problems = [{"path": "(span)", "reason": str(err)}]
        if problems:
            batch.rejected += 1
            batch.reasons.append(f"span {span['span_id']}: {problems[0]['path']}: {problems[0]['reason']}")
            continue
        hours.lines(rec).append(line)
    return batch
