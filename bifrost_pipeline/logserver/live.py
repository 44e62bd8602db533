"""The live stream: new lines of the landing zone, read as they land, fanned out to bounded subscribers.

`Tailer` polls the segments of the current and previous UTC day (the published ones and the ``.part`` files
the proxy appends to and flushes every second), remembering how far it read each; a ``.part`` renamed into
view keeps its offset (same segment name), so nothing is sent twice. Records that land under an older day
(a gateway posting yesterday's logs to /v1/logs) are found by the API but not streamed.

`Hub` hands each new record to every subscriber whose filter matches. A subscriber's queue is bounded: one
that falls `limit` records behind is dropped, told so by a last message, instead of holding memory.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bifrost_pipeline.landing.layout import PART_SUFFIX, SEGMENT_SUFFIX
from bifrost_pipeline.logserver.filters import LogFilter
from bifrost_pipeline.logserver.store import segment_files

DROPPED = object()


class Tailer:
    """Reads what was appended to the landing zone since the last `poll` (blocking file I/O: run in a thread)."""

    def __init__(self, landing_dir: Path, days_back: int = 1):
        self.root = Path(landing_dir)
        self.days_back = days_back
        self.offsets: dict[str, int] = {}  # segment name (without the .part dress) -> bytes read
        self.primed = False

    def _files(self) -> list[Path]:
        today = datetime.now(UTC).date()
        out: list[Path] = []
        for back in range(self.days_back + 1):
            day_dir = self.root / f"date={(today - timedelta(days=back)).isoformat()}"
            if day_dir.is_dir():
                out.extend(segment_files(day_dir))
        return out

    def poll(self) -> list[dict[str, Any]]:
        """New records since the last call; the first call only notes where every file ends."""
        found: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for path in self._files():
            name = _segment_name(path)
            if name in seen:  # listed as .part and again as published while it was renamed
                continue
            offset = self.offsets.get(name, 0)
            try:
                with open(path, "rb") as fh:
                    if not self.primed:
                        seen[name] = _after_last_newline(fh)
                        continue
                    fh.seek(offset)
                    data = fh.read()
            except FileNotFoundError:
                if name in self.offsets:
                    seen[name] = offset  # being renamed: the published name is read next poll
                continue
            complete = data[: data.rfind(b"\n") + 1]  # a torn last line is read when it is whole
            seen[name] = offset + len(complete)
            found.extend(_records(complete))
        self.offsets = seen
        self.primed = True
        return found


def _segment_name(path: Path) -> str:
    name = path.name
    if name.endswith(SEGMENT_SUFFIX + PART_SUFFIX):
        name = name.removeprefix(".").removesuffix(PART_SUFFIX)
    return name


def _after_last_newline(fh) -> int:
    size = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, size - 65536))
    tail = fh.read()
    cut = tail.rfind(b"\n")
    if cut >= 0:
        return size - len(tail) + cut + 1
    return 0 if size <= 65536 else size  # no whole line yet: read it when it is


def _records(data: bytes) -> list[dict[str, Any]]:
    out = []
    for line in data.splitlines():
        try:
            rec = orjson.loads(line.removeprefix(b"\xef\xbb\xbf"))
        except orjson.JSONDecodeError:
            continue  # the quarantine explains it; the stream shows records
        if isinstance(rec, dict) and rec.get("request_id") and rec.get("timestamp"):
            out.append(rec)
    return out


class Subscriber:
    def __init__(self, flt: LogFilter, limit: int):
        self.filter = flt
        self.limit = limit
        self.queue: asyncio.Queue[Any] = asyncio.Queue(limit + 1)  # +1: the slot of the drop notice
        self.dropped = False

    def offer(self, rec: dict[str, Any]) -> None:
        if self.dropped or not self.filter.matches(rec):
            return
        if self.queue.qsize() >= self.limit:
            self.dropped = True
            self.queue.put_nowait(DROPPED)
            return
        self.queue.put_nowait(rec)

    async def next(self) -> dict[str, Any] | None:
        """The next record, or None once this subscriber has been dropped."""
        item = await self.queue.get()
        return None if item is DROPPED else item

    def drop_message(self) -> str:
        return f"dropped: this subscriber fell {self.limit} records behind the live stream; reconnect to resume"


class Hub:
    def __init__(self, limit: int):
        self.limit = limit
        self.subscribers: set[Subscriber] = set()

    def subscribe(self, flt: LogFilter) -> Subscriber:
        sub = Subscriber(flt, self.limit)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def publish(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            for sub in list(self.subscribers):
                sub.offer(rec)
                if sub.dropped:
                    self.subscribers.discard(sub)


async def follow(tailer: Tailer, hub: Hub, interval_s: float) -> None:
    """Poll the landing zone forever, publishing what is new (cancel the task to stop)."""
    while True:
        try:
            records = await asyncio.to_thread(tailer.poll)
        except OSError:
            records = []  # the landing directory unreadable for a moment: try again next poll
        hub.publish(records)
        await asyncio.sleep(interval_s)
