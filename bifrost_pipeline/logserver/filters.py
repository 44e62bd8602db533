"""The filters of ``GET /api/logs``, ``/ws`` and ``/api/logs/stream``: parsed once from the query string,
then applied two ways that must agree: as a DuckDB ``WHERE`` (the API) and on one record dict (the live
stream). Parameter names follow Bifrost's logging API (``providers``, ``models``, ``status``, ``objects``,
``start_time`` / ``end_time``, ``min_/max_latency``, ``min_/max_tokens``, ``min_/max_cost``,
``content_search``) plus this project's ``customers``, ``teams``, ``virtual_keys`` and
``metadata.<key>=<value>``. A bad value is a `QueryError` naming its parameter (a 400).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

STATUSES = ("success", "error")
SORT_COLUMNS = {"timestamp": "ts", "latency": "latency_ms", "tokens": "total_tokens", "cost": "cost_usd"}
# Bifrost's request-type names (``objects``) and this project's ``request_type`` values, both accepted.
OBJECTS = {
    "chat.completion": "chat",
    "chat.completion.chunk": "chat",
    "chat_completion": "chat",
    "text.completion": "text_completion",
    "text_completion": "text_completion",
    "response": "responses",
    "embedding": "embeddings",
    "list": "embeddings",
    "audio.speech": "speech",
    "audio.transcription": "transcription",
    "image.generation": "image",
    "video.generation": "video",
}
REQUEST_TYPES = ("chat", "text_completion", "responses", "embeddings", "speech", "transcription", "image", "video")
LIST_PARAMS = {"providers": "provider", "models": "model", "customers": "customer_id", "teams": "team_id",
               "virtual_keys": "virtual_key_id"}  # fmt: skip
RANGE_PARAMS = {"latency": ("latency_ms", int), "tokens": ("total_tokens", int), "cost": ("cost_usd", float)}
PAGE_PARAMS = ("limit", "offset", "sort_by", "order")
# Not filters, but accepted everywhere the filters are (the key, for clients that cannot send a header).
OTHER_PARAMS = ("api_key", "include_stats", "group_by", "buckets")
KNOWN = {
    *LIST_PARAMS, "status", "objects", "start_time", "end_time", "content_search", *PAGE_PARAMS, *OTHER_PARAMS,
    *(f"{b}_{name}" for name in RANGE_PARAMS for b in ("min", "max")),
}  # fmt: skip


class QueryError(ValueError):
    """A query parameter the server cannot use (400, or 403 for what the key may not ask); the message
    starts with the parameter's name."""

    def __init__(self, param: str, message: str, status: int = 400):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message
        self.status = status


@dataclass(frozen=True)
class LogFilter:
    lists: dict[str, tuple[str, ...]] = field(default_factory=dict)  # column -> allowed values
    statuses: tuple[str, ...] = ()
    request_types: tuple[str, ...] = ()
    start: datetime | None = None  # naive UTC
    end: datetime | None = None
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # column -> (min, max)
    content_search: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def where(self) -> tuple[str, list[Any]]:
        """The filter as a DuckDB condition over the log store's columns, with its parameters."""
        clauses: list[str] = ["TRUE"]
        params: list[Any] = []
        for column, values in self.lists.items():
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
        for column, values in (("status", self.statuses), ("request_type", self.request_types)):
            if values:
                clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        if self.start is not None:
            clauses.append("ts >= ?")
            params.append(self.start)
        if self.end is not None:
            clauses.append("ts <= ?")
            params.append(self.end)
        for column, (low, high) in self.ranges.items():
            if low is not None:
                clauses.append(f"{column} >= ?")
                params.append(low)
            if high is not None:
                clauses.append(f"{column} <= ?")
                params.append(high)
        if self.content_search:
            clauses.append("(contains(lower(input_content), ?) OR contains(lower(output_content), ?))")
            params.extend([self.content_search.lower()] * 2)
        for key, value in self.metadata.items():
            clauses.append("json_extract_string(metadata, ?) = ?")
            params.extend([_json_path(key), value])
        return " AND ".join(clauses), params

    def matches(self, rec: Mapping[str, Any]) -> bool:
        """The same filter on one record as landed (the live stream)."""
        for column, values in self.lists.items():
            if rec.get(column) not in values:
                return False
        if self.statuses and rec.get("status") not in self.statuses:
            return False
        if self.request_types and rec.get("request_type") not in self.request_types:
            return False
        if self.start is not None or self.end is not None:
            ts = _record_time(rec)
            if ts is None or (self.start and ts < self.start) or (self.end and ts > self.end):
                return False
        for column, (low, high) in self.ranges.items():
            value = rec.get(column)
            if (low is not None or high is not None) and not isinstance(value, int | float):
                return False
            if (low is not None and value < low) or (high is not None and value > high):
                return False
        if self.content_search:
            needle = self.content_search.lower()
            if not any(needle in str(rec.get(f) or "").lower() for f in ("input_content", "output_content")):
                return False
        meta = rec.get("metadata") or {}
        return all(isinstance(meta, dict) and meta.get(k) == v for k, v in self.metadata.items())


@dataclass(frozen=True)
class Page:
    limit: int = 50
    offset: int = 0
    sort_by: str = "timestamp"
    order: str = "desc"

    def order_by(self) -> str:
        # NULLS LAST either way: a record without cost or tokens is not the most expensive one.
        return f"{SORT_COLUMNS[self.sort_by]} {self.order.upper()} NULLS LAST, request_id {self.order.upper()}"

    def as_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "offset": self.offset, "sort_by": self.sort_by, "order": self.order}


def parse_filter(params: Mapping[str, str]) -> LogFilter:
    """The filter of a query string; unknown parameters are errors (a misspelt filter must not match all)."""
    for name in params:
        if name not in KNOWN and not name.startswith("metadata."):
            raise QueryError(name, "unknown parameter")
    lists = {column: _list(params, name) for name, column in LIST_PARAMS.items() if params.get(name)}
    statuses = _list(params, "status")
    for s in statuses:
        if s not in STATUSES:
            raise QueryError("status", f"{s!r} is not one of {', '.join(STATUSES)}")
    types = tuple(dict.fromkeys(_request_type(o) for o in _list(params, "objects")))
    ranges = {}
    for name, (column, kind) in RANGE_PARAMS.items():
        low, high = _number(params, f"min_{name}", kind), _number(params, f"max_{name}", kind)
        if low is not None and high is not None and low > high:
            raise QueryError(f"min_{name}", f"{low} is above max_{name} {high}")
        if low is not None or high is not None:
            ranges[column] = (low, high)
    start, end = _time(params, "start_time"), _time(params, "end_time")
    if start and end and start > end:
        raise QueryError("start_time", "is after end_time")
    metadata = {}
    for name, value in params.items():
        if name.startswith("metadata."):
            key = name.removeprefix("metadata.")
            if not key:
                raise QueryError(name, "expected metadata.<key>=<value>")
            metadata[key] = value
    search = params.get("content_search") or None
    return LogFilter(lists, statuses, types, start, end, ranges, search, metadata)


def parse_page(params: Mapping[str, str], max_limit: int) -> Page:
    limit = _number(params, "limit", int)
    offset = _number(params, "offset", int)
    if limit is not None and not 1 <= limit <= max_limit:
        raise QueryError("limit", f"expected 1 to {max_limit}, got {limit}")
    if offset is not None and offset < 0:
        raise QueryError("offset", f"expected 0 or more, got {offset}")
    sort_by = params.get("sort_by") or "timestamp"
    if sort_by not in SORT_COLUMNS:
        raise QueryError("sort_by", f"{sort_by!r} is not one of {', '.join(SORT_COLUMNS)}")
    order = (params.get("order") or "desc").lower()
    if order not in ("asc", "desc"):
        raise QueryError("order", f"{order!r} is not asc or desc")
    return Page(limit if limit is not None else 50, offset or 0, sort_by, order)


def _list(params: Mapping[str, str], name: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in (params.get(name) or "").split(",") if v.strip())
    if params.get(name) is not None and params.get(name) != "" and not values:
        raise QueryError(name, "expected a comma-separated list")
    return values


def _request_type(value: str) -> str:
    if value in REQUEST_TYPES:
        return value
    if value in OBJECTS:
        return OBJECTS[value]
    raise QueryError("objects", f"{value!r} is not a request type ({', '.join(REQUEST_TYPES)} or {', '.join(OBJECTS)})")


def _number(params: Mapping[str, str], name: str, kind: type) -> Any:
    text = params.get(name)
    if text is None or text == "":
        return None
    try:
        value = kind(text)
    except ValueError:
        raise QueryError(name, f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise QueryError(name, f"expected a finite number, got {text!r}")
    if value < 0 and name not in ("limit", "offset"):
        raise QueryError(name, f"expected 0 or more, got {text!r}")
    return value


def _time(params: Mapping[str, str], name: str) -> datetime | None:
    text = params.get(name)
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(name, f"expected an RFC 3339 date-time such as 2024-01-15T10:00:00Z, got {text!r}") from None
    if when.tzinfo is None:
        raise QueryError(name, f"{text!r} has no time zone (add Z or an offset)")
    return when.astimezone(UTC).replace(tzinfo=None)


def _record_time(rec: Mapping[str, Any]) -> datetime | None:
    text = rec.get("timestamp")
    if not isinstance(text, str):
        return None
    try:  # RFC 3339 allows a lower-case t and z
        when = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
    except (ValueError, OverflowError):  # not a date-time; or one whose UTC time is outside years 1-9999
        return None


def _json_path(key: str) -> str:
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
