"""Crash recovery: publish what a writer that died left as ``.part``, cut at its last complete line, after
undoing the group commit it was in the middle of (a batch is wholly there or wholly gone, never torn).

Standard library only: the proxy recovers its landing zone when it starts.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path

from bifrost_pipeline.landing.layout import PART_SUFFIX, part_files, writer_pid
from bifrost_pipeline.landing.writer import JOURNAL_PREFIX, JOURNAL_SUFFIX

_JOURNAL = re.compile(rf"^{re.escape(JOURNAL_PREFIX)}(\d+)-[0-9a-f]+{re.escape(JOURNAL_SUFFIX)}$")


def recover(root: Path) -> list[Path]:
    """Publish segments left as ``.part`` by a writer that died, cut at their last complete line."""
    for journal in _journals(root):
        undo_torn_group(root, journal)
    published = []
    for part in part_files(root):
        final = publish_part(part)
        if final is not None:
            published.append(final)
    return published


def recover_dead_writers(root: Path) -> list[Path]:
    """Like `recover`, but leaves alone the ``.part`` segments of writers that are still running.

    A landing zone may be shared by several proxy processes; one that starts must publish only what a dead
    one left behind. A segment whose name has no process id, or whose process is gone (or is this very
    process, restarted under the same id), is recovered, after the group commit its writer's journal names.
    """
    for journal in _journals(root):
        pid = int(_JOURNAL.match(journal.name)[1])
        if pid == os.getpid() or not _alive(pid):
            undo_torn_group(root, journal)
    published = []
    for part in part_files(root):
        pid = writer_pid(part.name)
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        final = publish_part(part)
        if final is not None:
            published.append(final)
    return published


def _journals(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if _JOURNAL.match(p.name))


def undo_torn_group(root: Path, journal: Path) -> list[Path]:
    """Cut the segments of a group commit that a crash left incomplete back to where it began; remove the
    journal. Returns the segments cut (none when every one reaches its end: the group is whole).

    A group is whole when every segment it names reaches the end recorded for it (a segment no longer
    there as ``.part`` was published, which happens only after its group was fsynced).
    """
    data = journal.read_bytes()
    crc, _, body = data.partition(b" ")
    extents = []
    if body and crc == b"%08x" % zlib.crc32(body):  # else torn: the group had not started to be written
        for rel, start, end in json.loads(body)["segments"]:
            part = Path(root) / rel
            if part.exists():
                extents.append((part, start, end))
    cut = []
    if any(part.stat().st_size < end for part, _, end in extents):
        for part, start, _ in extents:
            with open(part, "r+b") as fh:
                fh.truncate(start)
                os.fsync(fh.fileno())
            cut.append(part)
    journal.unlink()
    return cut


def publish_part(part: Path) -> Path | None:
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
