"""fsspec remote access: the same layout on an object store (``s3://bucket/landing``,
``gs://bucket/landing``, ``az://container/landing``, with the filesystem's ``storage_options``), where
every object PUT is atomic, so a listing never sees half a segment.

Listing a remote zone, shipping a local zone's published segments to one (`upload_segments`, for a proxy
on another machine) and copying a remote day into a local zone (`mirror_day`, so validation reads it with
its local code path). fsspec (and s3fs / gcsfs / adlfs) are imported only when a URL root is used: the
proxy imports this package.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from bifrost_pipeline.landing.layout import (
    DAY_DIR,
    HOUR_DIR,
    PART_SUFFIX,
    SEGMENT_SUFFIX,
    Segment,
    local_days,
    local_segments,
)


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


def remote_days(root: str, storage_options: Mapping[str, Any] | None) -> list[date]:
    fs, path = _remote(root, storage_options)
    fs.invalidate_cache(path)  # fsspec caches listings; a sensor must see new days
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    out = set()
    for entry in entries:
        m = DAY_DIR.match(PurePosixPath(entry["name"].rstrip("/")).name)
        if m and entry.get("type") == "directory":
            out.add(date.fromisoformat(m.group(1)))
    return sorted(out)


def remote_segments(root: str, day: date, storage_options: Mapping[str, Any] | None) -> list[Segment]:
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
        m = HOUR_DIR.match(rel.parts[0])
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
    for day in local_days(local_root):
        for seg in local_segments(local_root, day):
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
    for seg in remote_segments(root, day, storage_options):
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
    return local_segments(local_root, day)
