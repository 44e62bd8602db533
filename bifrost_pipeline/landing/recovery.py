"""Crash recovery: publish what a writer that died left as ``.part``, cut at its last complete line.

Standard library only: the proxy recovers its landing zone when it starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from bifrost_pipeline.landing.layout import PART_SUFFIX, part_files, writer_pid


def recover(root: Path) -> list[Path]:
    """Publish segments left as ``.part`` by a writer that died, cut at their last complete line."""
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
    process, restarted under the same id), is recovered.
    """
    published = []
    for part in part_files(root):
        pid = writer_pid(part.name)
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        final = publish_part(part)
        if final is not None:
            published.append(final)
    return published


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
