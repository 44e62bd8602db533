"""The landing-zone contract shared by the proxy (writer) and the pipeline (reader).

Layout: ``<root>/date=YYYY-MM-DD/hour=HH/<segment>.ndjson``, one JSON record per line, UTF-8, the
date and hour being the UTC hour of the records' ``timestamp``. A segment is written under a hidden
temporary name (``.<segment>.ndjson.part``) and renamed when complete, so a reader that lists
``*.ndjson`` never sees a half-written file. ``recover`` publishes what a crashed writer left behind,
up to its last complete line.

Standard library only: the proxy imports this module.

The reading side (`days`, `list_segments`, `Segment.open`) also takes an fsspec URL as the root
(``s3://bucket/landing``, ``gs://bucket/landing``, ``az://container/landing``, with the filesystem's
``storage_options``): the same layout on an object store, where every object PUT is atomic, so a listing
never sees half a segment. `upload_segments` ships the published segments of a local zone to such a root.
fsspec (and s3fs / gcsfs / adlfs) are imported only when a URL root is used.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

SEGMENT_SUFFIX = ".ndjson"
PART_SUFFIX = ".part"
_DAY_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_HOUR_DIR = re.compile(r"^hour=(\d{2})$")


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


def hour_dir(root: Path, when: datetime) -> Path:
    when = when.astimezone(UTC)
    return Path(root) / f"date={when:%Y-%m-%d}" / f"hour={when:%H}"


def new_segment_name(source: str, when: datetime) -> str:
    """A unique, sortable segment file name: time, writer, process and a random suffix."""
    when = when.astimezone(UTC)
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", source) or "writer"
    return f"{when:%Y%m%dT%H%M%S}-{safe}-{os.getpid()}-{uuid.uuid4().hex[:12]}{SEGMENT_SUFFIX}"


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
        written, count = 0, 0
        chunk: list[bytes] = []
        size = 0
        try:
            for line in lines:
                if not line.endswith(b"\n"):
                    line += b"\n"
                chunk.append(line)
                size += len(line)
                count += 1
                if size >= self.WRITE_CHUNK:
                    written += _write_all(self._fd, b"".join(chunk))
                    chunk, size = [], 0
            if chunk:
                written += _write_all(self._fd, b"".join(chunk))
        except BaseException:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass  # the segment stays cut at a line boundary or not; recovery cuts at the last full line
            raise
        self.bytes_written = start + written
        self.lines_written += count

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

    def discard(self) -> None:
        """Remove the segment unpublished (a batch that must land whole or not at all)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.temp_path.unlink(missing_ok=True)


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


def recover(root: Path) -> list[Path]:
    """Publish segments left as ``.part`` by a writer that died, cut at their last complete line."""
    published = []
    for part in sorted(Path(root).glob(f"date=*/hour=*/.*{SEGMENT_SUFFIX}{PART_SUFFIX}")):
        final = _publish_part(part)
        if final is not None:
            published.append(final)
    return published


def _publish_part(part: Path) -> Path | None:
    """Cut a ``.part`` segment at its last complete line and rename it into view (None: it had no line)."""
    data = part.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut == 0:
        part.unlink()
        return None
    if cut < len(data):
        with open(part, "r+b") as fh:
            fh.truncate(cut)
            os.fsync(fh.fileno())
    final = part.with_name(part.name[1 : -len(PART_SUFFIX)])
    os.replace(part, final)
    return final


def is_url(root: Path | str) -> bool:
    """True for an fsspec URL root (``s3://...``, ``gs://...``, ``az://...``), False for a local path."""
    return isinstance(root, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", root) is not None


def _remote(root: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    # gcsfs otherwise waits about 60 s per bucket on a hierarchical-namespace lookup (must be set before
    # gcsfs is imported, which url_to_fs does on first use of gs://).
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(root, **dict(storage_options or {}))
    return fs, path.rstrip("/")


def _mtime(info: Mapping[str, Any]) -> float:
    """Modification time (epoch seconds) from an fsspec info dict; each store names it differently."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
        if isinstance(value, str) and value:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return 0.0


def _remote_days(root: str, storage_options: Mapping[str, Any] | None) -> list[date]:
    fs, path = _remote(root, storage_options)
    fs.invalidate_cache(path)  # fsspec caches listings; a sensor must see new days
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    out = set()
    for entry in entries:
        m = _DAY_DIR.match(PurePosixPath(entry["name"].rstrip("/")).name)
        if m and entry.get("type") == "directory":
            out.add(date.fromisoformat(m.group(1)))
    return sorted(out)


def _remote_segments(root: str, day: date, storage_options: Mapping[str, Any] | None) -> list[Segment]:
    fs, path = _remote(root, storage_options)
    day_path = f"{path}/date={day.isoformat()}"
    fs.invalidate_cache(day_path)
    try:
        found = fs.find(day_path, detail=True)
    except FileNotFoundError:
        return []
    protocol = root.split("://", 1)[0]  # the root's own scheme (adlfs would say abfs for az://)
    out = []
    for name, info in found.items():
        rel = PurePosixPath(name).relative_to(day_path)
        if len(rel.parts) != 2 or info.get("type") == "directory":
            continue
        m = _HOUR_DIR.match(rel.parts[0])
        if not m or rel.name.startswith(".") or not rel.name.endswith(SEGMENT_SUFFIX):
            continue
        size = int(info.get("size") or 0)
        out.append(
            Segment(PurePosixPath(name), day, int(m.group(1)), size, _mtime(info), f"{protocol}://{name}", fs)
        )
    return sorted(out, key=lambda s: (s.hour, s.path.name))


def upload_segments(
    local_root: Path, root: str, storage_options: Mapping[str, Any] | None = None, *, remove: bool = True
) -> list[str]:
    """Ship every published segment of a local landing zone to an fsspec URL root, under the same
    ``date=.../hour=.../<name>`` key (one PUT each: atomic on S3, GCS and Azure Blob); by default the local
    copy is removed once uploaded. Returns the URLs written. (For a proxy writing to local disk on one
    machine while the pipeline reads the object store from another.)"""
    fs, path = _remote(root, storage_options)
    protocol = root.split("://", 1)[0]  # the root's own scheme (adlfs would say abfs for az://)
    written = []
    for day in days(local_root):
        for seg in list_segments(local_root, day):
            target = f"{path}/{seg.relative_to(local_root)}"
            fs.put_file(str(seg.path), target)
            written.append(f"{protocol}://{target}")
            if remove:
                seg.path.unlink(missing_ok=True)
    return written


def mirror_day(
    root: str, day: date, local_root: Path, storage_options: Mapping[str, Any] | None = None
) -> list[Segment]:
    """Copy a UTC day's segments from an fsspec URL root into a local landing zone (same layout, same
    modification times; a segment already there with the same size is not fetched again) and return the
    local day's segments: the local validation then reads an object-store landing zone unchanged."""
    local_root = Path(local_root)
    for seg in _remote_segments(root, day, storage_options):
        target = local_root / seg.relative_to(root)
        if target.exists() and target.stat().st_size == seg.size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}")
        try:
            seg.fs.get_file(str(seg.path), str(tmp))
            if seg.mtime:
                os.utime(tmp, (seg.mtime, seg.mtime))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return list_segments(local_root, day)


def days(root: Path | str, storage_options: Mapping[str, Any] | None = None) -> list[date]:
    """Every UTC day that has a directory in the landing zone."""
    if is_url(root):
        return _remote_days(root, storage_options)
    out = []
    root = Path(root)
    if not root.exists():
        return out
    for child in root.iterdir():
        m = _DAY_DIR.match(child.name)
        if m and child.is_dir():
            out.append(date.fromisoformat(m.group(1)))
    return sorted(out)


def list_segments(
    root: Path | str, day: date, storage_options: Mapping[str, Any] | None = None
) -> list[Segment]:
    """Every complete segment of a UTC day, in a stable order (hour, then name)."""
    if is_url(root):
        return _remote_segments(root, day, storage_options)
    day_dir = Path(root) / f"date={day.isoformat()}"
    if not day_dir.is_dir():
        return []
    out = []
    for hour_path in sorted(day_dir.iterdir()):
        m = _HOUR_DIR.match(hour_path.name)
        if not (m and hour_path.is_dir()):
            continue
        for seg in sorted(hour_path.glob(f"*{SEGMENT_SUFFIX}")):
            if seg.name.startswith("."):
                continue
            st = seg.stat()
            out.append(Segment(seg, day, int(m.group(1)), st.st_size, st.st_mtime))
    return out


# --- a long-running writer (the proxy's) ------------------------------------------------------------------


def _writer_pid(part: Path) -> int | None:
    """The process id in a segment name made by `new_segment_name` (``<time>-<source>-<pid>-<rand>``)."""
    parts = part.name.split("-")
    if len(parts) < 4:
        return None
    try:
        return int(parts[-2])
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_dead_writers(root: Path) -> list[Path]:
    """Like `recover`, but leaves alone the ``.part`` segments of writers that are still running.

    A landing zone may be shared by several proxy processes; one that starts must publish only what a dead
    one left behind. A segment whose name has no process id, or whose process is gone (or is this very
    process, restarted under the same id), is recovered.
    """
    published = []
    for part in sorted(Path(root).glob(f"date=*/hour=*/.*{SEGMENT_SUFFIX}{PART_SUFFIX}")):
        pid = _writer_pid(part)
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        final = _publish_part(part)
        if final is not None:
            published.append(final)
    return published


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
