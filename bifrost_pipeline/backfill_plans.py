"""The export partitions a running `bifrost-pipeline backfill` is about to run, announced in the Dagster
instance so that `raw_logs_updated_sensor` does not start a duplicate run of one of them.

The CLI backfill runs in its own process, invisible to Dagster's backfill table. It writes its plan (the
export partitions it has still to run) with a heartbeat to the instance's key-value store (the run
storage's cursor values, which every instance has, sqlite or Postgres), refreshes the heartbeat while it
runs, drops each partition once its run is over, and clears the plan at the end. A plan whose heartbeat is
older than STALE_AFTER_S is ignored: its process died.

All plans share one key (the store cannot list keys); two backfills started at the same moment could
overwrite each other's entry for one heartbeat period, after which each writes its own again.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster import DagsterInstance

KEY = "bifrost/backfill_plans"
TAG = "bifrost/backfill"  # on every run of a CLI backfill: its id
STALE_AFTER_S = 600.0
HEARTBEAT_EVERY_S = 30.0


def _read(instance: DagsterInstance) -> dict[str, dict]:
    raw = instance.daemon_cursor_storage.get_cursor_values({KEY}).get(KEY)
    try:
        plans = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return plans if isinstance(plans, dict) else {}


def _write(instance: DagsterInstance, plans: dict[str, dict]) -> None:
    instance.daemon_cursor_storage.set_cursor_values({KEY: json.dumps(plans, sort_keys=True)})


def planned(instance: DagsterInstance, now: float | None = None) -> set[tuple[str, str]]:
    """(job name, partition key) of every export run a live CLI backfill has still to make."""
    now = time.time() if now is None else now
    out: set[tuple[str, str]] = set()
    for plan in _read(instance).values():
        if now - float(plan.get("heartbeat", 0)) <= STALE_AFTER_S:
            out.update((job, key) for job, key in plan.get("exports", []))
    return out


class Plan:
    """One CLI backfill's announcement; `done` as each export run ends, `close` at the end."""

    def __init__(self, instance: DagsterInstance, exports: Iterable[tuple[str, str]]):
        self.instance = instance
        self.id = uuid.uuid4().hex[:12]
        self.remaining = list(exports)
        self._lock = threading.Lock()
        self.save()

    def save(self) -> None:
        with self._lock:
            plans = _read(self.instance)
            plans[self.id] = {"heartbeat": time.time(), "exports": [list(e) for e in self.remaining]}
            # forget plans of processes that died, so the key stays small
            now = time.time()
            plans = {k: p for k, p in plans.items() if now - float(p.get("heartbeat", 0)) <= STALE_AFTER_S}
            _write(self.instance, plans)

    def done(self, job: str, key: str) -> None:
        self.remaining = [e for e in self.remaining if e != (job, key)]
        self.save()

    def close(self) -> None:
        with self._lock:
            plans = _read(self.instance)
            plans.pop(self.id, None)
            _write(self.instance, plans)


@contextmanager
def announced(instance: DagsterInstance, exports: Iterable[tuple[str, str]]) -> Iterator[Plan]:
    """Announce the plan, keep its heartbeat fresh while the body runs, clear it at the end (even on error)."""
    plan = Plan(instance, exports)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_EVERY_S):
            plan.save()

    ticker = threading.Thread(target=beat, daemon=True)
    ticker.start()
    try:
        yield plan
    finally:
        stop.set()
        ticker.join()
        plan.close()
