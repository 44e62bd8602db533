"""The small context a destination is created with, for tests that need no whole application config."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bifrost_pipeline.destinations.base import DestinationContext

_BASE = Path(tempfile.gettempdir()) / "bifrost-destination-tests"  # created only by a test that writes there


def context(export: str = "e", base_dir: Path | None = None) -> DestinationContext:
    base = base_dir or _BASE
    return DestinationContext(
        export=export, base_dir=base, data_dir=base / "data", warehouse_path=base / "data" / "warehouse.duckdb"
    )
