"""The landing zone: the contract shared by the proxy (writer) and the pipeline (reader).

One module per concern:

- `layout`: the contract itself (``<root>/date=YYYY-MM-DD/hour=HH/<segment>.ndjson``, segment names,
  `Segment`, `LandingState`, listing a local zone);
- `writer`: the atomic local writer (`SegmentFile`, `write_segment`, `RotatingWriter` and its group commit
  with a `CommitJournal`);
- `recovery`: publishing what a crashed writer left behind, a torn group commit undone first (`recover`,
  `recover_dead_writers`);
- `remote`: the same layout on an object store through fsspec (`upload_segments`, `mirror_day`);
- `listing`: `days` and `list_segments`, for a local root or an fsspec URL root.

Standard library only at import time: the proxy imports this package (fsspec is imported on first use of
a URL root). Callers use the names below (``from bifrost_pipeline import landing; landing.write_segment``).
"""

from bifrost_pipeline.landing.layout import (
    PART_SUFFIX,
    SEGMENT_SUFFIX,
    LandingState,
    Segment,
    hour_dir,
    new_segment_name,
)
from bifrost_pipeline.landing.listing import days, list_segments
from bifrost_pipeline.landing.recovery import recover, recover_dead_writers
from bifrost_pipeline.landing.remote import is_url, mirror_day, upload_segments
from bifrost_pipeline.landing.writer import CommitJournal, RotatingWriter, SegmentFile, write_segment

__all__ = [
    "PART_SUFFIX",
    "SEGMENT_SUFFIX",
    "CommitJournal",
    "LandingState",
    "RotatingWriter",
    "Segment",
    "SegmentFile",
    "days",
    "hour_dir",
    "is_url",
    "list_segments",
    "mirror_day",
    "new_segment_name",
    "recover",
    "recover_dead_writers",
    "upload_segments",
    "write_segment",
]
