"""The atomic local writer: a segment is appended to under a hidden ``.part`` name and renamed into view
when complete (see `layout`), so a reader never sees half of one.

Group commit: ``RotatingWriter.commit`` appends whole batches (an intake request each) to the open segments
and fsyncs them once for all; a `CommitJournal` written first says where they begin and end, so that a
process killed in the middle leaves each batch wholly there or wholly gone after recovery (``recovery``).

Standard library only: the proxy writes with it.
"""

from __future__ import annotations

import json
import os
import uuid
import zlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from operator import methodcaller
from pathlib import Path

from bifrost_pipeline.landing.layout import PART_SUFFIX, hour_dir, new_segment_name

JOURNAL_PREFIX = ".commit-"
JOURNAL_SUFFIX = ".journal"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentFile:
    """One segment being written: append lines, then `publish()` renames it into view.

    ``write_lines`` is all or nothing: if the disk refuses part of a call (full, I/O error), the file is cut
    back to where the call began and the error is raised, so the caller can write the same lines again
    later without leaving a torn line or a duplicate behind.
    """

    WRITE_CHUNK = 1024 * 1024  # lines are joined into writes of about this size

    def __init__(self, root: Path, source: str, when: datetime):
        self.directory = hour_dir(root, when)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = new_segment_name(source, when)
        self.temp_path = self.directory / f".{self.name}{PART_SUFFIX}"
        self.final_path = self.directory / self.name
        self.opened_at = datetime.now(UTC)
        self.bytes_written = 0
        self.lines_written = 0
        self._fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write_lines(self, lines: Iterable[bytes]) -> None:
        start = self.bytes_written
        lines = lines if isinstance(lines, list) else list(lines)
        written = 0
        try:
            for data in _joined(lines, self.WRITE_CHUNK):
                written += _write_all(self._fd, data)
        except BaseException:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass  # the segment stays cut at a line boundary or not; recovery cuts at the last full line
            raise
        self.bytes_written = start + written
        self.lines_written += len(lines)

    def flush(self, durable: bool = True) -> None:
        if durable:
            os.fsync(self._fd)  # written straight to the file (no user-space buffer): only fsync is left

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def publish(self) -> Path | None:
        """Fsync and rename into view. An empty segment is removed instead.

        If it fails it can be called again: it goes on from the step that failed."""
        if self._fd >= 0:
            self.flush(durable=True)
            os.close(self._fd)
            self._fd = -1
        if self.lines_written == 0:
            self.temp_path.unlink(missing_ok=True)
            return None
        os.replace(self.temp_path, self.final_path)
        _fsync_dir(self.directory)
        return self.final_path

    def cut_back(self, size: int, lines: int) -> None:
        """Cut the segment back to ``size`` bytes and ``lines`` lines (what it held before a refused batch)."""
        os.ftruncate(self._fd, size)
        self.bytes_written, self.lines_written = size, lines

    def discard(self) -> None:
        """Remove the segment unpublished (a batch that must land whole or not at all)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.temp_path.unlink(missing_ok=True)


_ENDS_WITH_NEWLINE = methodcaller("endswith", b"\n")


def _line_bytes(lines: list[bytes]) -> int:
    """The bytes ``lines`` take in a segment, where each ends with a newline (added to those without)."""
    return sum(map(len, lines)) + len(lines) - sum(map(_ENDS_WITH_NEWLINE, lines))


def _joined(lines: list[bytes], size: int) -> Iterator[bytes]:
    """``lines`` in writes of about ``size`` bytes (as many lines as their mean length fits), with a newline
    after each line that has none. Joined by C code, not line by line: a batch has thousands."""
    step = max(1, size * len(lines) // max(1, sum(map(len, lines))))
    for i in range(0, len(lines), step):
        part = lines[i : i + step]
        if any(map(_ENDS_WITH_NEWLINE, part)):
            yield b"".join(line if line.endswith(b"\n") else line + b"\n" for line in part)
        else:
            part.append(b"")  # the newline after the last line
            yield b"\n".join(part)


def _write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    return len(data)


def write_segment(root: Path, lines: Iterable[bytes], when: datetime, source: str = "batch") -> Path | None:
    """Write one complete segment atomically (used by intake, the demo and tests)."""
    segment = SegmentFile(Path(root), source, when)
    segment.write_lines(lines)
    return segment.publish()



class RotatingWriter:
    """Open segments per UTC hour, rotated by size and age, published by rename.

    Not thread-safe: one thread owns it (the proxy's background writer). ``write`` takes the record's own
    UTC hour (``hour_key``, e.g. ``datetime(2026, 1, 2, 13, tzinfo=UTC)``) so that a record lands under the
    hour of its timestamp even when it is written later.
    """

    def __init__(self, root: Path, source: str, *, max_bytes: int, max_age_s: float):
        self.root = Path(root)
        self.source = source
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.open: dict[datetime, SegmentFile] = {}
        self.segments_published = 0
        self.lines_published = 0

    def write(self, hour_key: datetime, lines: list[bytes]) -> None:
        """Append ``lines`` to the hour's open segment: all of them, or none if this raises."""
        seg = self.open.get(hour_key)
        if seg is not None and (seg.closed or seg.bytes_written >= self.max_bytes):
            self._publish(hour_key)  # left over from a publish that failed: finish it first
            seg = None
        if seg is None:
            seg = self.open[hour_key] = SegmentFile(self.root, self.source, hour_key)
        seg.write_lines(lines)
        if seg.bytes_written >= self.max_bytes:
            try:
                self._publish(hour_key)
            except OSError:
                pass  # the lines are written; the next write, rotation or close publishes it or raises

    def flush(self, durable: bool = True) -> None:
        for seg in self.open.values():
            if not seg.closed:
                seg.flush(durable=durable)

    def rotate_expired(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        for key in [k for k, s in self.open.items() if (now - s.opened_at).total_seconds() >= self.max_age_s]:
            self._publish(key)

    def close(self) -> None:
        """Publish every open segment; if some fail, the others are still published and the first error raised."""
        first: OSError | None = None
        for key in list(self.open):
            try:
                self._publish(key)
            except OSError as err:
                first = first or err
        if first is not None:
            raise first

    def commit(self, batches: list[dict[datetime, list[bytes]]], journal: CommitJournal) -> None:
        """Append every batch to the open segments and fsync them: all of them, or none if this raises.

        The journal names each segment's extent of the group before a byte of it is written, so that
        recovery can tell a group written whole from one cut short by a crash. If the disk refuses any part,
        every segment is cut back to where the group began (empty new ones removed) and the error raised.
        """
        merged: dict[datetime, list[bytes]] = {}
        for batch in batches:
            for hour, lines in batch.items():
                merged.setdefault(hour, []).extend(lines)
        sizes = {hour: _line_bytes(lines) for hour, lines in merged.items()}
        segments: dict[datetime, SegmentFile] = {}
        marks: dict[datetime, tuple[int, int]] = {}
        try:
            for hour in sorted(merged):
                seg = segments[hour] = self._segment_with_room(hour, sizes[hour])
                marks[hour] = (seg.bytes_written, seg.lines_written)
            journal.record([(seg.temp_path, marks[h][0], marks[h][0] + sizes[h]) for h, seg in segments.items()])
            for hour, seg in segments.items():
                seg.write_lines(merged[hour])
            for seg in segments.values():
                seg.flush(durable=True)
        except BaseException:
            self._undo(segments, marks)
            journal.clear()
            raise
        for hour, seg in segments.items():
            if seg.bytes_written >= self.max_bytes:
                try:
                    self._publish(hour)
                except OSError:
                    pass  # the group is durable as it is; the next write, rotation or close publishes it

    def _segment_with_room(self, hour_key: datetime, size: int) -> SegmentFile:
        """The hour's open segment, or a new one if that one is closed or ``size`` more would overflow it."""
        seg = self.open.get(hour_key)
        if seg is not None and (seg.closed or (seg.bytes_written and seg.bytes_written + size > self.max_bytes)):
            self._publish(hour_key)
            seg = None
        if seg is None:
            seg = self.open[hour_key] = SegmentFile(self.root, self.source, hour_key)
            _fsync_dir(seg.directory)  # the new name must outlive a power loss as the fsynced lines do
        return seg

    def _undo(self, segments: dict[datetime, SegmentFile], marks: dict[datetime, tuple[int, int]]) -> None:
        for hour, seg in segments.items():
            try:
                seg.cut_back(*marks[hour])
                if seg.lines_written == 0:
                    seg.discard()
                    del self.open[hour]
            except OSError:
                pass  # left longer than its mark: the journal still says where the group began

    def publish(self, hour_key: datetime) -> None:
        """Publish the hour's open segment now (if any); its next write starts a new one."""
        if hour_key in self.open:
            self._publish(hour_key)

    def _publish(self, key: datetime) -> None:
        seg = self.open[key]
        lines = seg.lines_written
        path = seg.publish()  # if it raises, the segment stays open, to be published again later
        del self.open[key]
        if path is not None:
            self.segments_published += 1
            self.lines_published += lines


class CommitJournal:
    """Where the group being committed lies in each segment, fsynced before the group is written.

    One small file per writer process at the landing root (``.commit-<pid>-<random>.journal``), rewritten
    for each group: ``<crc32> {"segments": [[part path relative to the root, start, end], ...]}``. After a
    crash, recovery keeps a group whose segments all reach their ``end`` and cuts them back to ``start``
    otherwise (``recovery.undo_torn_group``). A torn journal (bad checksum) was being written when the
    process died, before any line of its group: it is ignored.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.path = self.root / f"{JOURNAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}{JOURNAL_SUFFIX}"
        self._fd = -1

    def record(self, extents: list[tuple[Path, int, int]]) -> None:
        if self._fd < 0:
            self.root.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            _fsync_dir(self.root)
        doc = {"segments": [[p.relative_to(self.root).as_posix(), start, end] for p, start, end in extents]}
        self._write(encode_journal(doc))
        os.fsync(self._fd)

    def clear(self) -> None:
        """Nothing to undo any more (the group was cut back in process)."""
        if self._fd >= 0:
            try:
                self._write(b"")
            except OSError:
                pass  # a stale extent: recovery cuts at most what came after the group's start

    def close(self) -> None:
        """Remove the journal (every segment it could name is published or cut back)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.path.unlink(missing_ok=True)

    def _write(self, data: bytes) -> None:
        os.ftruncate(self._fd, 0)
        if data:
            os.pwrite(self._fd, data, 0)


def encode_journal(doc: dict) -> bytes:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return b"%08x " % zlib.crc32(body) + body
