"""The logs as one table, read with DuckDB straight from the files this project already has.

Two sources, day by day (UTC days, as the landing zone and raw_logs are partitioned):

- **raw_logs** (``<data_dir>/raw_logs/date=D/*.parquet``): validated and deduplicated on request_id. A day
  whose raw partition is newer than every one of its segments is read from raw_logs alone.
- **the landing zone** (``<landing>/date=D/hour=HH/``): the published segments *and* the ``.part`` files of
  the segments still open. The proxy's writer appends whole lines with ``write(2)`` (no user-space buffer)
  and fsyncs every second, so a line is readable in its ``.part`` as soon as it is landed; reading them is what
  makes a record landed seconds ago findable. A day with segments newer than its raw partition (today; a day
  with late segments) is read from both, keeping one copy per request_id (raw_logs' copy first).

Lines that are not records (no request_id or timestamp, malformed JSON, a torn last line being written) are
skipped here; the pipeline's quarantine is where they are explained. No second log database: every query
lists the files again, so it sees what landed a moment ago and nothing is kept in sync.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson

from bifrost_pipeline import records
from bifrost_pipeline.config import AppConfig
from bifrost_pipeline.landing.layout import DAY_DIR, HOUR_DIR, PART_SUFFIX, SEGMENT_SUFFIX
from bifrost_pipeline.logserver.filters import LogFilter, Page

_DUCK_TYPES = {"string": "VARCHAR", "timestamp": "TIMESTAMPTZ", "int32": "INTEGER", "int64": "BIGINT", "double": "DOUBLE",
               "bool": "BOOLEAN", "json": "JSON"}  # fmt: skip
# The record's content: left out of lists, hidden when content logging is off or the key may not see it.
# Any field named *_content counts too, and the tool calls made (their arguments are content), so fields the
# record gains are hidden by their name without a change here.
CONTENT_FIELDS = frozenset({"input_content", "output_content", "tool_calls", "tool_results", "messages"})
TIME_FIELDS = tuple(f.name for f in records.fields() if f.kind == "timestamp")
JSON_FIELDS = tuple(f.name for f in records.fields() if f.kind == "json")
GROUPS = ("provider", "model")
BUCKET_WIDTHS_S = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)


def is_content(name: str) -> bool:
    return name in CONTENT_FIELDS or name.endswith("_content")


def hide_content(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if not is_content(k)}


@dataclass
class Sources:
    """The files a query reads: raw-only days, and the days read from segments (+ their raw partition)."""

    raw_only: list[Path] = field(default_factory=list)
    live_raw: list[Path] = field(default_factory=list)
    live_segments: list[Path] = field(default_factory=list)


def segment_files(day_dir: Path) -> list[Path]:
    """A day's published segments and the ``.part`` files of its open ones."""
    out = []
    for hour in sorted(os.scandir(day_dir), key=lambda e: e.name):
        if not (HOUR_DIR.match(hour.name) and hour.is_dir()):
            continue
        for entry in sorted(os.scandir(hour.path), key=lambda e: e.name):
            if entry.name.endswith(SEGMENT_SUFFIX) or entry.name.endswith(SEGMENT_SUFFIX + PART_SUFFIX):
                out.append(Path(entry.path))
    return out


def _days(root: Path) -> dict[date, Path]:
    if not root.is_dir():
        return {}
    found = {}
    for entry in os.scandir(root):
        m = DAY_DIR.match(entry.name)
        if m and entry.is_dir():
            found[date.fromisoformat(m.group(1))] = Path(entry.path)
    return found


def _newest(paths: list[Path]) -> float:
    newest = 0.0
    for p in paths:
        try:
            newest = max(newest, p.stat().st_mtime)
        except FileNotFoundError:
            pass  # renamed (published) or removed since listed: the query lists again if it matters
    return newest


def list_sources(app: AppConfig, first: date | None = None, last: date | None = None) -> Sources:
    landing_days, raw_days = _days(app.landing_dir), _days(app.raw_dir)
    src = Sources()
    for day in sorted(set(landing_days) | set(raw_days)):
        if (first and day < first) or (last and day > last):
            continue
        raw = sorted(raw_days[day].glob("*.parquet")) if day in raw_days else []
        segments = segment_files(landing_days[day]) if day in landing_days else []
        if raw and (not segments or _newest(raw) >= _newest(segments)):
            src.raw_only.extend(raw)
        else:
            src.live_raw.extend(raw)
            src.live_segments.extend(segments)
    return src


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _select(available: set[str] | None) -> str:
    """The normalized columns: ``ts`` (naive UTC) for filters, JSON as text; a column a file lacks is NULL.
    ``available`` None: landed lines (``_json_reader``), whose times are RFC 3339 text, a lower-case ``t``
    or ``z`` allowed (upper-cased here: DuckDB's cast takes only upper case)."""
    cols = []
    for f in records.fields():
        present = available is None or f.name in available
        expr = f'"{f.name}"' if present else f"CAST(NULL AS {_DUCK_TYPES[f.kind].replace('JSON', 'VARCHAR')})"
        if f.kind == "timestamp" and available is None:
            expr = f"timezone('UTC', TRY_CAST(upper({expr}) AS TIMESTAMPTZ))"
        elif f.kind == "timestamp" and present:
            expr = f"timezone('UTC', CAST({expr} AS TIMESTAMPTZ))"
        elif f.kind == "json" and present:
            expr = f"CAST({expr} AS VARCHAR)"
        cols.append(f'{expr} AS "{"ts" if f.name == "timestamp" else f.name}"')
    return ", ".join(cols)


def _json_reader(paths: list[Path]) -> str:
    types = {f.name: "VARCHAR" if f.kind == "timestamp" else _DUCK_TYPES[f.kind] for f in records.fields()}
    columns = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in types.items()) + "}"
    return (
        f"read_json({_sql_list(paths)}, format='newline_delimited', columns={columns}, ignore_errors=true, "
        "maximum_object_size=67108864)"
    )


class LogStore:
    """Queries over `Sources`; safe to call from several threads (one DuckDB cursor per call)."""

    RETRIES = 3  # a segment published or removed between listing and reading: list again

    def __init__(self, app: AppConfig, *, memory_limit: str = "1GB", threads: int | None = None):
        self.app = app
        self._db = duckdb.connect(config={"memory_limit": memory_limit, **({"threads": threads} if threads else {})})
        self._columns: dict[tuple[Path, ...], set[str]] = {}
        self._lock = threading.Lock()

    def _raw_columns(self, paths: list[Path]) -> set[str]:
        key = tuple(paths)
        with self._lock:
            if key not in self._columns:
                rel = self._db.cursor().sql(f"DESCRIBE SELECT * FROM read_parquet({_sql_list(paths)}, union_by_name=true)")
                self._columns = {key: {row[0] for row in rel.fetchall()}}  # one set kept: the last asked
            return self._columns[key]

    def _source_sql(self, src: Sources) -> str:
        parts = []
        if src.raw_only:
            cols = _select(self._raw_columns(src.raw_only))
            parts.append(f"SELECT {cols} FROM read_parquet({_sql_list(src.raw_only)}, union_by_name=true)")
        if src.live_segments or src.live_raw:
            inner = []
            if src.live_raw:
                cols = _select(self._raw_columns(src.live_raw))
                inner.append(f"SELECT {cols}, 0 AS _pref FROM read_parquet({_sql_list(src.live_raw)}, union_by_name=true)")
            if src.live_segments:
                inner.append(f"SELECT {_select(None)}, 1 AS _pref FROM {_json_reader(src.live_segments)}")
            parts.append(
                f"SELECT * EXCLUDE (_pref) FROM ({' UNION ALL '.join(inner)}) "
                "WHERE request_id IS NOT NULL AND ts IS NOT NULL "
                "QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY _pref) = 1"
            )
        if not parts:
            cast = ", ".join(f'CAST(NULL AS {_DUCK_TYPES[f.kind].replace("JSON", "VARCHAR").replace("TIMESTAMPTZ", "TIMESTAMP")}) AS "{"ts" if f.name == "timestamp" else f.name}"' for f in records.fields())  # noqa: E501
            parts.append(f"SELECT {cast} WHERE FALSE")
        return " UNION ALL ".join(parts)

    def _run(self, flt: LogFilter, sql_of: Callable[[str, str], str], params: list[Any]) -> duckdb.DuckDBPyConnection:
        """Run ``sql_of(source, where)`` over the files of the filter's days, listing again if one moved."""
        first = flt.start.date() if flt.start else None
        last = flt.end.date() if flt.end else None
        where, where_params = flt.where()
        for attempt in range(self.RETRIES):
            src = list_sources(self.app, first, last)
            try:
                return self._db.cursor().execute(sql_of(self._source_sql(src), where), where_params + params)
            except duckdb.IOException:
                if attempt == self.RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def page(self, flt: LogFilter, page: Page) -> list[dict[str, Any]]:
        """One page of records, without their content fields (the list view)."""
        names = [f.name for f in records.fields() if not is_content(f.name)]
        cols = ", ".join(_output(n) for n in names)
        cur = self._run(
            flt,
            lambda src, where: f"SELECT {cols} FROM ({src}) WHERE {where} ORDER BY {page.order_by()} LIMIT ? OFFSET ?",
            [page.limit, page.offset],
        )
        return [_record(names, row) for row in cur.fetchall()]

    def stats(self, flt: LogFilter) -> dict[str, Any]:
        cur = self._run(
            flt,
            lambda src, where: (
                "SELECT count(*), avg(CASE WHEN status = 'success' THEN 1.0 ELSE 0.0 END), avg(latency_ms), "
                "sum(total_tokens), sum(cost_usd), count(*) FILTER (WHERE status = 'error'), "
                f"approx_quantile(latency_ms, 0.95), min(ts), max(ts) FROM ({src}) WHERE {where}"
            ),
            [],
        )
        n, rate, avg_latency, tokens, cost, errors, p95, first, last = cur.fetchone()
        return {
            "total_requests": n,
            "success_rate": round(rate, 4) if rate is not None else 0.0,
            "average_latency": round(avg_latency, 1) if avg_latency is not None else 0.0,
            "total_tokens": int(tokens or 0),
            "total_cost": round(cost or 0.0, 6),
            "errors": errors,
            "p95_latency": p95,  # approximate (t-digest): exact quantiles cost a sort of every match
            "first_timestamp": _iso(first),
            "last_timestamp": _iso(last),
        }

    def series(self, flt: LogFilter, group_by: str, buckets: int = 60, top: int = 8) -> dict[str, Any]:
        """Requests, tokens, cost, errors and p95 latency per time bucket and provider (or model).

        The `top` groups with the most requests keep their name, the others are summed as ``other``.
        """
        span = self.stats(flt)
        first, last = _parse_iso(span["first_timestamp"]), _parse_iso(span["last_timestamp"])
        start, end = flt.start or first, flt.end or last
        if start is None or end is None:
            return {"group_by": group_by, "bucket_seconds": 60, "groups": [], "points": []}
        width = next((w for w in BUCKET_WIDTHS_S if (end - start).total_seconds() / w <= buckets), BUCKET_WIDTHS_S[-1])
        sql = (
            f"WITH m AS (SELECT * FROM ({{src}}) WHERE {{where}}), "
            f"g AS (SELECT {group_by} AS grp FROM m GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT {top}) "
            f"SELECT time_bucket(INTERVAL '{width} seconds', ts, TIMESTAMP '2000-01-01') AS t, "
            f"CASE WHEN {group_by} IN (SELECT grp FROM g) THEN {group_by} ELSE 'other' END AS grp, "
            "count(*), sum(coalesce(total_tokens, 0)), sum(coalesce(cost_usd, 0)), count(*) FILTER (WHERE status = 'error'), "
            "approx_quantile(latency_ms, 0.95) FROM m GROUP BY 1, 2 ORDER BY 1, 2"
        )
        cur = self._run(flt, lambda src, where: sql.replace("{src}", src).replace("{where}", where), [])
        points = [
            {"t": _iso(t), "group": grp, "requests": n, "tokens": int(tok), "cost": round(cost, 6), "errors": err,
             "p95_latency": p95}
            for t, grp, n, tok, cost, err, p95 in cur.fetchall()
        ]  # fmt: skip
        totals: dict[str, int] = {}
        for p in points:
            totals[p["group"]] = totals.get(p["group"], 0) + p["requests"]
        return {"group_by": group_by, "bucket_seconds": width, "groups": sorted(totals, key=lambda g: -totals[g]),
                "points": points}  # fmt: skip

    def get(self, request_id: str) -> dict[str, Any] | None:
        """One record whole: the typed row, and every field of its landed line when a segment still holds it
        (fields this reader's schema does not know yet, such as a newer record version's, come from there)."""
        names = [f.name for f in records.fields()]
        cols = ", ".join(_output(n) for n in names)
        cur = self._run(LogFilter(), lambda src, where: f"SELECT {cols} FROM ({src}) WHERE request_id = ? LIMIT 1", [request_id])
        row = cur.fetchone()
        if row is None:
            return None
        rec = _record(names, row)
        landed = self._landed_line(request_id, _parse_iso(rec["timestamp"]))
        return {**rec, **landed} if landed else rec

    def _landed_line(self, request_id: str, when: datetime | None) -> dict[str, Any] | None:
        if when is None:
            return None
        day_dir = Path(self.app.landing_dir) / f"date={when.date().isoformat()}"
        for _ in range(self.RETRIES):
            paths = segment_files(day_dir) if day_dir.is_dir() else []
            if not paths:
                return None
            try:
                row = self._db.cursor().execute(
                    f"SELECT json FROM read_ndjson_objects({_sql_list(paths)}, ignore_errors=true) "
                    "WHERE json->>'request_id' = ? LIMIT 1",
                    [request_id],
                ).fetchone()
            except duckdb.IOException:
                continue
            return orjson.loads(row[0]) if row else None
        return None


def _output(name: str) -> str:
    if name == "timestamp":
        return "strftime(ts, '%Y-%m-%dT%H:%M:%S.%gZ') AS \"timestamp\""
    if name in TIME_FIELDS:
        return f"strftime(\"{name}\", '%Y-%m-%dT%H:%M:%S.%gZ') AS \"{name}\""
    return f'"{name}"'


def _record(names: list[str], row: tuple) -> dict[str, Any]:
    rec = dict(zip(names, row, strict=True))
    meta = rec.get("metadata")
    if isinstance(meta, str):
        try:
            rec["metadata"] = orjson.loads(meta)
        except orjson.JSONDecodeError:
            pass  # shown as the text it is
    return rec


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.removesuffix("Z"))

