"""The layout contract: where a segment lives, what it is called, and what a reader may see.

``<root>/date=YYYY-MM-DD/hour=HH/<segment>.ndjson``, one JSON record per line, UTF-8, the date and hour
being the UTC hour of the records' ``timestamp``. A segment being written is a hidden temporary file
(``.<segment>.ndjson.part``) until it is complete, so a reader that lists ``*.ndjson`` never sees a
half-written one. Segment names carry the writer's process id, so recovery can tell whose a ``.part`` is.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

SEGMENT_SUFFIX = ".ndjson"
PART_SUFFIX = ".part"
DAY_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
HOUR_DIR = re.compile(r"^hour=(\d{2})$")


@dataclass(frozen=True)
class Segment:
    path: Path  # on an fsspec root: the filesystem's path (``bucket/landing/date=.../...``)
    day: date
    hour: int
    size: int
    mtime: float
    url: str | None = None  # set for a segment under an fsspec URL root (``s3://bucket/...``)
    fs: Any = field(default=None, repr=False, compare=False)  # its fsspec filesystem

    def relative_to(self, root: Path | str) -> str:
        if self.url is not None:
            return "/".join(PurePosixPath(self.path).parts[-3:])  # date=.../hour=.../<name>
        return self.path.relative_to(root).as_posix()

    def open(self) -> IO[bytes]:
        """The segment's bytes, as a binary file object (local file or object-store stream)."""
        if self.fs is not None:
            return self.fs.open(str(self.path), "rb")
        return open(self.path, "rb")


@dataclass(frozen=True)
class LandingState:
    """What a UTC day of the landing zone holds, in the two figures that tell whether it changed."""

    segments: int
    newest_mtime: float

    @classmethod
    def of(cls, segments: Iterable[Segment]) -> LandingState:
        listed = list(segments)
        return cls(len(listed), max((s.mtime for s in listed), default=0.0))

    def is_newer_than(self, recorded: LandingState) -> bool:
        """True when this state has segments that `recorded` (what a read of the day saw) did not.

        A different count means segments were added (or removed by hand); a newer mtime means one was
        replaced. Either way what was built from `recorded` is stale. An emptied day is not newer: the
        retention job removes a day's segments only once raw_logs has read all of them (retention.py).
        """
        if self.segments == 0:
            return False
        return self.segments != recorded.segments or self.newest_mtime > recorded.newest_mtime

    def describe(self) -> str:
        return json.dumps({"segments": self.segments, "newest_mtime": self.newest_mtime})


def hour_dir(root: Path, when: datetime) -> Path:
    when = when.astimezone(UTC)
    # isoformat, not %Y: strftime writes the year 999 as "999", a directory no reader of day 0999-01-01 lists
    return Path(root) / f"date={when.date().isoformat()}" / f"hour={when.hour:02d}"


def new_segment_name(source: str, when: datetime) -> str:
    """A unique, sortable segment file name: time, writer, process and a random suffix."""
    when = when.astimezone(UTC)
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", source) or "writer"
    return f"{when.year:04d}{when:%m%dT%H%M%S}-{safe}-{os.getpid()}-{uuid.uuid4().hex[:12]}{SEGMENT_SUFFIX}"


def writer_pid(name: str) -> int | None:
    """The process id in a segment name made by `new_segment_name` (``<time>-<source>-<pid>-<rand>``)."""
    parts = name.split("-")
    if len(parts) < 4:
        return None
    try:
        return int(parts[-2])
    except ValueError:
        return None


def part_files(root: Path) -> list[Path]:
    """Every segment still being written (or left behind by a writer that died), in a stable order."""
    return sorted(Path(root).glob(f"date=*/hour=*/.*{SEGMENT_SUFFIX}{PART_SUFFIX}"))


def local_days(root: Path) -> list[date]:
    """Every UTC day that has a directory in a local landing zone."""
    out = []
    root = Path(root)
    if not root.exists():
        return out
    for child in root.iterdir():
        m = DAY_DIR.match(child.name)
        if m and child.is_dir():
            out.append(date.fromisoformat(m.group(1)))
    return sorted(out)


def local_segments(root: Path, day: date) -> list[Segment]:
    """Every complete segment of a UTC day in a local landing zone, in a stable order (hour, then name)."""
    day_dir = Path(root) / f"date={day.isoformat()}"
    if not day_dir.is_dir():
        return []
    out = []
    for hour_path in sorted(day_dir.iterdir()):
        m = HOUR_DIR.match(hour_path.name)
        if not (m and hour_path.is_dir()):
            continue
        for seg in sorted(hour_path.glob(f"*{SEGMENT_SUFFIX}")):
            if seg.name.startswith("."):
                continue
            st = seg.stat()
            out.append(Segment(seg, day, int(m.group(1)), st.st_size, st.st_mtime))
    return out
