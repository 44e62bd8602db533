"""The proxy's background landing writer: a bounded queue in front of a `landing.RotatingWriter` thread.

The request path only builds a dict and appends it to a queue (no I/O, no serialization). A thread takes
the queue in batches, serializes with orjson, appends to the open segment of each record's UTC hour,
flushes (fsync) every ``flush_interval_s``, rotates segments by size and age, and publishes them by rename.

The bound is enforced at admission: a request reserves a slot (``await reserve()``) before it is sent
upstream and its record fills that slot, so a record that was admitted is never refused later, even from a
``finally`` block of a cancelled stream. When every slot is taken the request waits (backpressure) or, with
``client.drop_excess_requests``, is answered 429; both are counted and logged, never silent.

Intake batches take another way in: ``await commit(batch)`` queues the whole batch and the thread wakes at
once. It appends every batch waiting to the same rotating segments and fsyncs them once for all (group
commit), then answers each: landed durably, or refused whole (OSError), never in part. So the files per hour
follow the rotation size and age, not the number of batches.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson

from bifrost_pipeline import landing

log = logging.getLogger("bifrost_pipeline.proxy.writer")

_STOP = object()
_FLUSH = object()
_COMMIT = object()  # (_COMMIT, batch, future): an intake batch to land whole
MAX_BATCH = 5000
BATCH_INTERVAL_S = 0.025  # the writer takes what was queued at most this often
RETRY_INTERVAL_S = 1.0  # while the disk refuses writes, they are tried again this often
RETRY_CHUNK = 100  # records per write while retrying
STOP_RETRIES = 5  # on shutdown, a write the disk still refuses is tried this many more times


class QueueFull(Exception):
    pass


class Slots:
    """A counting semaphore owned by the event loop; released from the writer thread through the loop."""

    def __init__(self, n: int):
        self.size = n
        self.free = n
        self.waiters: deque[asyncio.Future] = deque()

    def try_acquire(self) -> bool:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def acquire(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(1)  # it was handed a slot just as it was cancelled: give it back
            else:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def release(self, n: int) -> None:
        while n and self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1
        self.free += n


class LandingWriter:
    def __init__(
        self,
        root: Path,
        *,
        queue_size: int,
        segment_max_bytes: int,
        segment_max_age_s: float,
        flush_interval_s: float,
        source: str = "proxy",
        on_landed: Callable[[int], None] | None = None,
        on_wait: Callable[[], None] | None = None,
        on_error: Callable[[], None] | None = None,
        on_lost: Callable[[int], None] | None = None,
    ):
        self.root = Path(root)
        self.slots = Slots(queue_size)
        self.flush_interval_s = flush_interval_s
        self.rotating = landing.RotatingWriter(
            self.root, source, max_bytes=segment_max_bytes, max_age_s=segment_max_age_s
        )
        self.on_landed = on_landed
        self.on_wait = on_wait
        self.on_error = on_error
        self.on_lost = on_lost
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self.batch_interval_s = min(BATCH_INTERVAL_S, flush_interval_s)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.submitted = 0
        self.written = 0
        self.waits = 0
        self.refused = 0
        self.write_errors = 0
        self.lost = 0
        self.error: BaseException | None = None  # the last disk error, until a write succeeds again
        self._last_error_log = 0.0
        self._closed = False
        self.journal = landing.CommitJournal(self.root)
        self.batches_committed = 0
        self.group_commits = 0

    # --- lifecycle (event loop side) -----------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> list[Path]:
        """Publish what a dead writer left behind, then start the thread."""
        self._loop = loop
        recovered = landing.recover_dead_writers(self.root) if self.root.exists() else []
        if recovered:
            log.warning("recovered %d segment(s) left incomplete by a previous run", len(recovered))
        self._thread = threading.Thread(target=self._run, name="landing-writer", daemon=True)
        self._thread.start()
        return recovered

    def close(self, timeout: float | None = None) -> None:
        """Drain the queue, publish every open segment, stop the thread (blocking)."""
        if self._closed or self._thread is None:
            return
        self._closed = True
        self._q.put(_STOP)
        self._wake.set()
        self._thread.join(timeout)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def publish_now(self) -> None:
        """Ask the thread to write what it has and publish every open segment (tests, admin)."""
        self._q.put(_FLUSH)
        self._wake.set()

    # --- the request path (event loop side) -----------------------------------------------------------

    async def reserve(self, drop_excess: bool) -> None:
        """Take a slot for one record; wait for one (backpressure) or raise QueueFull (drop_excess)."""
        if self.slots.try_acquire():
            return
        if drop_excess:
            self.refused += 1
            log.warning("landing queue full (%d records): request refused with 429", self.slots.size)
            raise QueueFull()
        self.waits += 1
        if self.on_wait is not None:
            self.on_wait()
        if self.waits == 1 or self.waits % 1000 == 0:
            log.warning(
                "landing queue full (%d records): requests wait for the writer (%d so far)",
                self.slots.size,
                self.waits,
            )
        await self.slots.acquire()

    def release(self) -> None:
        """Give back a slot that will carry no record."""
        self.slots.release(1)

    async def commit(self, batch: dict[datetime, list[bytes]]) -> None:
        """Land a batch of serialized records (by UTC hour) durably, all or none; OSError if refused."""
        if self._closed or self._thread is None:
            raise OSError("the landing writer is not running")
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._q.put((_COMMIT, batch, done))
        self._wake.set()
        await asyncio.wrap_future(done)

    def submit(self, hour: datetime, record: dict) -> None:
        """Hand a record (its slot already reserved) to the writer. Never blocks, never refuses."""
        self.submitted += 1
        self._q.put((hour, record))

    # --- the writer thread ---------------------------------------------------------------------------

    def _release_from_thread(self, n: int) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self.slots.release, n)
        except RuntimeError:
            pass  # the loop stopped: nobody is waiting any more

    # long on purpose: one loop owns the writer thread's state (lines held per hour, the flush timer, group
    # commits, stop retries); split up, that state would live on self between calls, read by both threads.
    def _run(self) -> None:
        rw = self.rotating
        next_flush = time.monotonic() + self.flush_interval_s
        stop = False
        stop_retries = 0
        flush_failed = False
        durable_before = 0  # self.written at the last flush that made the proxy's records durable
        # Serialized records not yet written, per hour. They keep their queue slots until they are written,
        # so while the disk refuses them the queue fills and requests wait (or get 429): none is dropped.
        pending: dict[datetime, list[bytes]] = {}
        while True:
            if pending or flush_failed:
                wait = RETRY_INTERVAL_S
            else:
                # Wake on a timer, not per record: a thread woken for every record would contend for the GIL
                # with the event loop on every request (measured: it shows in the proxy's p99).
                wait = min(self.batch_interval_s, max(0.0, next_flush - time.monotonic()))
            if not stop:
                self._wake.wait(wait)
                self._wake.clear()
            elif pending or flush_failed:
                time.sleep(RETRY_INTERVAL_S)
            force_flush = False
            commits = []
            for item in self._take():
                if item is _STOP:
                    stop = True
                elif item is _FLUSH:
                    force_flush = True
                elif item[0] is _COMMIT:
                    commits.append(item[1:])
                else:
                    hour, rec = item
                    pending.setdefault(hour, []).append(self._serialize(rec))
            for hour, lines in list(pending.items()):
                done = self._write_hour(hour, lines, sum(len(v) for v in pending.values()))
                if done:
                    self.written += done
                    self._release_from_thread(done)
                if done == len(lines):
                    del pending[hour]
                else:
                    pending[hour] = lines[done:]
            if commits:
                self._commit(commits)  # after the proxy's records: a group's extent holds only its batches
            if force_flush or stop or flush_failed or time.monotonic() >= next_flush:
                try:
                    rw.flush(durable=True)
                    rw.rotate_expired()
                    if force_flush:
                        rw.close()
                    flush_failed = False
                    if self.on_landed and self.written != durable_before:
                        self.on_landed(self.written - durable_before)
                        durable_before = self.written
                except Exception as err:  # tried again next time; the segments stay open until they publish
                    flush_failed = True
                    self._failed(err, "flush or publish", sum(len(v) for v in pending.values()))
                next_flush = time.monotonic() + self.flush_interval_s
            if self.error is not None and not pending and not flush_failed:
                log.warning("landing writer recovered: every record it held is written and flushed")
                self.error = None
            if stop:
                stop_retries += 1
                if not (pending or flush_failed) or stop_retries > STOP_RETRIES:
                    break
        try:
            rw.close()
            self.journal.close()
            if self.on_landed and self.written != durable_before:
                self.on_landed(self.written - durable_before)
        except Exception as err:
            self._failed(err, "publish", 0)
            log.error(
                "landing writer stopped with segments it could not publish; the next start publishes them"
            )
        lost = sum(len(v) for v in pending.values())
        if lost:
            self.lost += lost
            if self.on_lost is not None:
                self.on_lost(lost)
            log.error(
                "landing writer stopped after %d retries with %d record(s) it could not write: they are lost "
                "(%s)",
                STOP_RETRIES,
                lost,
                self.error,
            )

    def _write_hour(self, hour: datetime, lines: list[bytes], held: int) -> int:
        """Write ``lines`` to the hour's segment; return how many were written (from the front).

        A refused write is tried once more in a new segment (the full one is published): that gets past a
        segment that cannot grow (a file-size limit), not past a full disk. While failing, lines go in
        parts of RETRY_CHUNK, so that what can be written is.
        """
        rw = self.rotating
        step = len(lines) if self.error is None else RETRY_CHUNK
        done = 0
        in_new_segment = False
        while done < len(lines):
            part = lines[done : done + step]
            try:
                rw.write(hour, part)
            except Exception as err:  # disk full, I/O error, permissions: the lines stay held
                self._failed(err, "write", held)
                if in_new_segment:
                    return done
                try:
                    rw.publish(hour)
                except Exception:
                    return done  # still open: publishing is tried again with the next write or flush
                in_new_segment = True
                step = min(step, RETRY_CHUNK)
                continue
            done += len(part)
            in_new_segment = False
        return done

    def _commit(self, commits: list[tuple[dict, concurrent.futures.Future]]) -> None:
        """Land every waiting batch with one fsync; if the disk refuses the group, land each batch alone, so
        that one batch too large for the disk does not refuse the others."""
        try:
            self.rotating.commit([batch for batch, _ in commits], self.journal)
        except Exception as err:
            if len(commits) == 1:
                self._commit_alone(*commits[0], err)
                return
            for batch, done in commits:
                self._commit_alone(batch, done, None)
            return
        self.group_commits += 1
        for _, done in commits:
            self.batches_committed += 1
            done.set_result(None)

    def _commit_alone(self, batch: dict, done: concurrent.futures.Future, failed: Exception | None) -> None:
        """One batch; a refused one is tried once more in new segments (past a segment that cannot grow, as
        ``_write_hour`` does). A batch refused again is answered with the error (the intake counts it)."""
        rw = self.rotating
        for fresh in [False, True] if failed is None else [True]:
            try:
                if fresh:
                    for hour in batch:
                        rw.publish(hour)
                rw.commit([batch], self.journal)
            except Exception as err:
                failed = err
                continue
            self.batches_committed += 1
            done.set_result(None)
            return
        done.set_exception(failed if isinstance(failed, OSError) else OSError(str(failed)))

    def _take(self) -> list:
        items: list = []
        try:
            while len(items) < MAX_BATCH:
                items.append(self._q.get_nowait())
        except queue.Empty:
            pass
        return items

    @staticmethod
    def _serialize(rec: dict) -> bytes:
        try:
            return orjson.dumps(rec, default=str)
        except Exception as err:  # a record that cannot be serialized is a bug: say so loudly, land it anyway
            log.error(
                "record %s could not be serialized (%s); landed with its values as text",
                rec.get("request_id"),
                err,
            )
            return orjson.dumps(
                {k: (v if isinstance(v, str | int | float | bool | None) else str(v)) for k, v in rec.items()}
            )

    def _failed(self, err: BaseException, what: str, held: int) -> None:
        """Count a failed disk operation; log the first of a run of failures, then one a minute."""
        self.write_errors += 1
        if self.on_error is not None:
            self.on_error()
        first = self.error is None
        self.error = err
        now = time.monotonic()
        if first or now - self._last_error_log >= 60:
            self._last_error_log = now
            log.error(
                "landing writer: %s failed (%s); %d record(s) held in memory and retried every %.0f s, "
                "requests wait for room in the queue meanwhile (%d failure(s) so far)",
                what,
                err,
                held,
                RETRY_INTERVAL_S,
                self.write_errors,
            )
