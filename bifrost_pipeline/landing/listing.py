"""The reading side's one entry point: the days and segments of a landing zone, whether its root is a local
directory (`layout`) or an fsspec URL (`remote`). Apart from the layout so the layout stays free of fsspec."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from bifrost_pipeline.landing.layout import Segment, local_days, local_segments
from bifrost_pipeline.landing.remote import is_url, remote_days, remote_segments


def days(root: Path | str, storage_options: Mapping[str, Any] | None = None) -> list[date]:
    """Every UTC day that has a directory in the landing zone."""
    if is_url(root):
        return remote_days(root, storage_options)
    return local_days(Path(root))


def list_segments(
    root: Path | str, day: date, storage_options: Mapping[str, Any] | None = None
) -> list[Segment]:
    """Every complete segment of a UTC day, in a stable order (hour, then name)."""
    if is_url(root):
        return remote_segments(root, day, storage_options)
    return local_segments(Path(root), day)
