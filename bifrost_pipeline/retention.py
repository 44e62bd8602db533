"""Retention (compliance): which landed segments and which raw_logs/quarantine days may be removed, and
removing them. No Dagster here: defs/retention.py gathers what Dagster recorded (what raw_logs read of
each day, which export partitions were made from which raw version) and runs this daily.

The rules, each keeping data rather than guessing:

- a landed day goes once it is older than `landing.retention_days` *and* raw_logs was built from all of
  its segments (the LandingState of the latest raw_logs materialization covers every segment there);
  a day with a segment raw_logs has not read is kept whole until raw_logs is re-materialized;
- a raw_logs day (with its quarantine) goes once it is older than `pipeline.raw_retention_days`, unless
  an export still needs it: an export partition whose window overlaps that UTC day (complete or still
  open, in the export's time zone) and that has not been materialized since the day's latest raw_logs
  materialization.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bifrost_pipeline.config import AppConfig, Schedule
from bifrost_pipeline.landing import LandingState, Segment
from bifrost_pipeline.landing.layout import DAY_DIR
from bifrost_pipeline.windows import partition_window

LANDING = "landing_zone"
RAW = "raw_logs"


@dataclass(frozen=True)
class Removal:
    """One day of one store to remove: its files (paths or URLs) and their size."""

    what: str  # landing_zone | raw_logs
    day: date
    paths: tuple[str, ...]
    bytes: int
    segments: tuple[Segment, ...] = field(default=(), repr=False)  # landing: what to delete (local or fsspec)

    def report(self) -> dict:
        return {"what": self.what, "day": self.day.isoformat(), "files": len(self.paths), "bytes": self.bytes,
                "paths": list(self.paths)}


@dataclass(frozen=True)
class Kept:
    """A day past its retention that stays, and why."""

    what: str
    day: date
    reason: str

    def report(self) -> dict:
        return {"what": self.what, "day": self.day.isoformat(), "reason": self.reason}


@dataclass
class Plan:
    removals: list[Removal] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)


def expired(day: date, today: date, retention_days: int | None) -> bool:
    """True when every record of UTC `day` is older than `retention_days` days (None: kept forever)."""
    return retention_days is not None and day < today - timedelta(days=retention_days)


# --- landing --------------------------------------------------------------------------------------------------


def plan_landing_day(day: date, segments: list[Segment], recorded: LandingState | None) -> Removal | Kept | None:
    """The removal of an expired landed day, or why it stays (None: nothing there)."""
    if not segments:
        return None
    if recorded is None:
        return Kept(LANDING, day, "raw_logs was never materialized from this day")
    unread = [s for s in segments if s.mtime > recorded.newest_mtime]
    if unread or len(segments) > recorded.segments:
        return Kept(
            LANDING,
            day,
            f"{max(len(unread), len(segments) - recorded.segments)} segment(s) landed after raw_logs read the "
            "day; kept until raw_logs is re-materialized from them",
        )
    return Removal(
        LANDING,
        day,
        tuple(s.url or str(s.path) for s in segments),
        sum(s.size for s in segments),
        tuple(segments),
    )


# --- raw_logs -------------------------------------------------------------------------------------------------


def _window_key(schedule: Schedule, local_day: date) -> date:
    """The first local day of the export window that contains `local_day` (what its partition is keyed by)."""
    if schedule.frequency == "daily":
        return local_day
    if schedule.frequency == "weekly":
        # cron counts Sunday as 0, isoweekday() as 7
        return local_day - timedelta(days=(local_day.isoweekday() % 7 - schedule.weekday) % 7)
    start_day = int(schedule.day)
    if local_day.day >= start_day:
        return local_day.replace(day=start_day)
    previous = local_day.replace(day=1) - timedelta(days=1)
    return previous.replace(day=start_day)


def covering_partitions(schedule: Schedule, day: date, start_date: date) -> list[str]:
    """Keys of the export partitions whose window overlaps UTC `day`, complete or still open.

    A UTC day touches at most three local days (time zones are within UTC-12..UTC+14), so the windows
    holding those are the only candidates. Windows before the export's first partition do not exist.
    """
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    keys = {_window_key(schedule, day + timedelta(days=offset)) for offset in (-1, 0, 1)}
    out = []
    for key in sorted(keys):
        w_start, w_end = partition_window(schedule, key.isoformat())
        if key >= start_date and w_start < end and w_end > start:
            out.append(key.isoformat())
    return out


def raw_blockers(
    raw_version: int, partitions: Mapping[tuple[str, str], int | None]
) -> list[str]:
    """The export partitions (export name, key) -> storage id of their latest materialization (None: never)
    that were not made since raw version `raw_version` of the day: they still need it."""
    return [
        f"{export} {key}" + (" (never exported)" if done is None else " (exported before raw_logs was rebuilt)")
        for (export, key), done in sorted(partitions.items())
        if done is None or done < raw_version
    ]


def raw_day_files(app: AppConfig, day: date) -> list[Path]:
    """The raw_logs directory and the quarantine file of `day`, those that exist."""
    from bifrost_pipeline.validation import quarantine_path, raw_path

    return [p for p in (raw_path(app, day), quarantine_path(app, day)) if p.exists()]


def raw_days(app: AppConfig) -> list[date]:
    """Every day that has a raw_logs directory or a quarantine file."""
    out = set()
    for parent in (app.raw_dir, app.quarantine_dir):
        if not parent.is_dir():
            continue
        for child in parent.iterdir():
            m = DAY_DIR.match(child.name.removesuffix(".parquet"))
            if m:
                out.add(date.fromisoformat(m.group(1)))
    return sorted(out)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def plan_raw_day(app: AppConfig, day: date, blockers: list[str]) -> Removal | Kept | None:
    files = raw_day_files(app, day)
    if not files:
        return None
    if blockers:
        return Kept(RAW, day, "still needed by export partition(s) not yet made from it: " + ", ".join(blockers))
    return Removal(RAW, day, tuple(str(p) for p in files), sum(_size(p) for p in files))


# --- the whole plan, and doing it -----------------------------------------------------------------------------


def plan(
    app: AppConfig,
    today: date,
    recorded: Callable[[date], LandingState | None],
    segments: Callable[[date], list[Segment]],
    landing_days: Iterable[date],
    blockers: Callable[[date], list[str]],
) -> Plan:
    """What retention removes as of UTC `today`. `recorded(day)`: what the latest raw_logs materialization
    of the day read; `segments(day)`: the day's landed segments now; `blockers(day)`: the unfinished export
    partitions that need raw day `day` (see `raw_blockers`)."""
    out = Plan()
    if app.landing.retention_days is not None:
        for day in landing_days:
            if expired(day, today, app.landing.retention_days):
                _add(out, plan_landing_day(day, segments(day), recorded(day)))
    if app.pipeline.raw_retention_days is not None:
        for day in raw_days(app):
            if expired(day, today, app.pipeline.raw_retention_days):
                _add(out, plan_raw_day(app, day, blockers(day)))
    return out


def _add(out: Plan, item: Removal | Kept | None) -> None:
    if isinstance(item, Removal):
        out.removals.append(item)
    elif isinstance(item, Kept):
        out.kept.append(item)


def _remove_segment(app: AppConfig, segment: Segment) -> None:
    if segment.fs is not None:
        segment.fs.rm(str(segment.path))
        # the pipeline's local mirror of the remote day (validation reads from it) goes too
        local = app.landing_dir / segment.relative_to(app.landing_root)
        local.unlink(missing_ok=True)
        _prune(local.parent, app.landing_dir)
    else:
        segment.path.unlink(missing_ok=True)
        _prune(segment.path.parent, Path(app.landing_root))


def _prune(directory: Path, root: Path) -> None:
    """Remove `directory` and its parents up to `root` (excluded) while they are empty."""
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (or already gone)
        directory = directory.parent


def apply(app: AppConfig, removal: Removal) -> None:
    """Remove the files of `removal` (local files, fsspec objects)."""
    if removal.what == LANDING:
        for segment in removal.segments:
            _remove_segment(app, segment)
        return
    for path in map(Path, removal.paths):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
