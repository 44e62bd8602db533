"""The landing writer: rotation, hour routing, backpressure, refusal, crash recovery (in-process)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from bifrost_pipeline import landing
from bifrost_pipeline.landing import writer as segment_writer
from bifrost_pipeline.proxy import writer as writer_mod
from bifrost_pipeline.proxy.writer import LandingWriter, QueueFull

H1 = datetime(2026, 1, 2, 13, tzinfo=UTC)
H2 = datetime(2026, 1, 2, 14, tzinfo=UTC)


def _lines(root):
    out = []
    for seg in landing.list_segments(root, H1.date()):
        out += [json.loads(x) for x in seg.path.read_bytes().splitlines()]
    return out


def test_rotating_writer_rotates_by_size_and_routes_by_hour(tmp_path):
    rw = landing.RotatingWriter(tmp_path, "t", max_bytes=1024, max_age_s=3600)
    for i in range(100):
        rw.write(H1 if i % 2 else H2, [json.dumps({"i": i, "pad": "x" * 40}).encode()])
    assert not landing.list_segments(tmp_path, H1.date()) or all(
        s.size >= 1024 for s in landing.list_segments(tmp_path, H1.date())
    )
    rw.close()
    segs = landing.list_segments(tmp_path, H1.date())
    assert {s.hour for s in segs} == {13, 14} and len(segs) >= 6
    assert sorted(r["i"] for r in _lines(tmp_path)) == list(range(100))
    assert not list(tmp_path.rglob("*.part"))
    assert rw.lines_published == 100


def test_rotating_writer_rotates_by_age(tmp_path):
    rw = landing.RotatingWriter(tmp_path, "t", max_bytes=10**9, max_age_s=60)
    rw.write(H1, [b'{"a": 1}'])
    rw.rotate_expired(datetime.now(UTC))
    assert landing.list_segments(tmp_path, H1.date()) == []  # younger than 60 s: still open
    rw.rotate_expired(datetime(2100, 1, 1, tzinfo=UTC))
    assert len(landing.list_segments(tmp_path, H1.date())) == 1


def _writer(tmp_path, size, on_wait=None):
    return LandingWriter(
        tmp_path,
        queue_size=size,
        segment_max_bytes=10**9,
        segment_max_age_s=3600,
        flush_interval_s=0.05,
        on_wait=on_wait,
    )


def test_backpressure_waits_for_the_writer_and_drop_excess_refuses(tmp_path):
    waits = []

    async def scenario():
        w = _writer(tmp_path, 2, on_wait=lambda: waits.append(1))
        w.start(asyncio.get_running_loop())
        await w.reserve(False)
        await w.reserve(False)
        with pytest.raises(QueueFull):
            await w.reserve(True)  # drop_excess_requests: refused at once, and counted
        assert w.refused == 1
        third = asyncio.ensure_future(w.reserve(False))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not third.done() and w.waits == 1 and waits == [1]  # every slot is taken: the request waits
        w.submit(H1, {"request_id": "r1"})  # the writer writes it, then hands its slot over
        await asyncio.wait_for(third, 5)
        w.submit(H1, {"request_id": "r2"})
        w.submit(H1, {"request_id": "r3"})
        await w.aclose()
        return w

    w = asyncio.run(scenario())
    assert sorted(r["request_id"] for r in _lines(tmp_path)) == ["r1", "r2", "r3"]
    assert w.written == 3 and not list(tmp_path.rglob("*.part"))


def test_a_cancelled_waiter_gives_its_slot_back(tmp_path):
    async def scenario():
        w = _writer(tmp_path, 1)
        w.start(asyncio.get_running_loop())
        await w.reserve(False)
        waiter = asyncio.ensure_future(w.reserve(False))
        await asyncio.sleep(0)
        waiter.cancel()
        w.release()
        await asyncio.wait_for(w.reserve(False), 5)  # the slot went to a live caller, not the cancelled one
        assert w.slots.free == 0 and not w.slots.waiters
        w.release()
        await w.aclose()

    asyncio.run(scenario())


def test_recover_publishes_dead_writers_only(tmp_path):
    hour = landing.hour_dir(tmp_path, H1)
    hour.mkdir(parents=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead_pid = 2**22 + 12345  # above the default pid_max range: no such process
        dead = hour / f".20260102T130000-proxy-{dead_pid}-aaaaaaaaaaaa.ndjson.part"
        dead.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3, "cut')
        alive = hour / f".20260102T130000-proxy-{live.pid}-bbbbbbbbbbbb.ndjson.part"
        alive.write_bytes(b'{"b": 1}\n')
        empty = hour / f".20260102T130000-proxy-{dead_pid}-cccccccccccc.ndjson.part"
        empty.write_bytes(b'{"partial')
        published = landing.recover_dead_writers(tmp_path)
        assert [p.name for p in published] == [f"20260102T130000-proxy-{dead_pid}-aaaaaaaaaaaa.ndjson"]
        assert published[0].read_bytes() == b'{"a": 1}\n{"a": 2}\n'  # cut at the last complete line
        assert alive.exists() and not empty.exists()
    finally:
        live.kill()
        live.wait()
    assert os.path.exists(alive)


class FailingDisk:
    """Stands in for ``landing.writer._write_all`` (the one place segment bytes reach the disk): while ``full``, each
    write puts half its bytes in the file and then fails as a full disk does."""

    def __init__(self):
        self.full = False
        self.failures = 0
        self._real = segment_writer._write_all

    def __call__(self, fd: int, data: bytes) -> int:
        if self.full:
            self.failures += 1
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._real(fd, data)


@pytest.fixture
def disk(monkeypatch):
    fake = FailingDisk()
    monkeypatch.setattr(segment_writer, "_write_all", fake)
    monkeypatch.setattr(writer_mod, "RETRY_INTERVAL_S", 0.05)
    return fake


def test_a_refused_write_leaves_the_segment_as_it_was(tmp_path, disk):
    seg = landing.SegmentFile(tmp_path, "t", H1)
    seg.write_lines([b'{"i": 1}'])
    disk.full = True
    with pytest.raises(OSError, match="No space"):
        seg.write_lines([b'{"i": 2}', b'{"i": 3}'])
    assert seg.temp_path.read_bytes() == b'{"i": 1}\n'  # the half-written batch was cut off again
    assert (seg.lines_written, seg.bytes_written) == (1, 9)
    disk.full = False
    seg.write_lines([b'{"i": 2}', b'{"i": 3}'])
    assert seg.publish().read_bytes() == b'{"i": 1}\n{"i": 2}\n{"i": 3}\n'


def test_a_full_disk_holds_records_and_applies_backpressure_until_it_has_room(tmp_path, disk):
    errors, landed = [], []

    async def scenario():
        w = LandingWriter(
            tmp_path,
            queue_size=3,
            segment_max_bytes=10**9,
            segment_max_age_s=3600,
            flush_interval_s=0.05,
            on_error=lambda: errors.append(1),
            on_landed=landed.append,
        )
        w.start(asyncio.get_running_loop())
        disk.full = True
        for i in range(3):
            await w.reserve(True)
            w.submit(H1 if i < 2 else H2, {"request_id": f"r{i}"})
        deadline = asyncio.get_running_loop().time() + 5
        while disk.failures < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert disk.failures >= 3 and isinstance(w.error, OSError) and errors  # retried, counted
        with pytest.raises(QueueFull):
            await w.reserve(True)  # the held records keep their slots: the queue is full, nothing is dropped
        assert w.written == 0 and w.slots.free == 0
        disk.full = False
        await asyncio.wait_for(w.reserve(False), 5)  # room again once the held records are written
        w.release()
        deadline = asyncio.get_running_loop().time() + 5
        while w.error is not None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert w.error is None and w.written == 3 and w.lost == 0
        await w.aclose()
        return w

    w = asyncio.run(scenario())
    ids = sorted(r["request_id"] for r in _lines(tmp_path))
    assert ids == ["r0", "r1", "r2"]  # each exactly once: no torn line, no duplicate from the retries
    assert sum(landed) == 3 and not list(tmp_path.rglob("*.part"))
    assert w.write_errors == len(errors) >= 3


def test_stopping_on_a_disk_that_stays_full_counts_and_logs_the_records_lost(
    tmp_path, disk, monkeypatch, caplog
):
    monkeypatch.setattr(writer_mod, "STOP_RETRIES", 2)
    lost = []

    async def scenario():
        w = LandingWriter(
            tmp_path,
            queue_size=10,
            segment_max_bytes=10**9,
            segment_max_age_s=3600,
            flush_interval_s=0.05,
            on_lost=lost.append,
        )
        w.start(asyncio.get_running_loop())
        disk.full = True
        for i in range(4):
            await w.reserve(True)
            w.submit(H1, {"request_id": f"r{i}"})
        await w.aclose()
        return w

    w = asyncio.run(scenario())
    assert w.lost == 4 and lost == [4] and disk.failures >= 3
    assert "4 record(s) it could not write: they are lost" in caplog.text
    assert "No space left on device" in caplog.text


def _batch(tag: str, n: int, hours=(H1,)) -> dict:
    return {h: [json.dumps({"request_id": f"{tag}-{h.hour}-{i}"}).encode() for i in range(n)] for h in hours}


def _ids(root) -> list[str]:
    out = []
    for seg in root.glob("date=*/hour=*/*.ndjson"):
        out += [json.loads(x)["request_id"] for x in seg.read_bytes().splitlines()]
    return sorted(out)


def test_many_concurrent_batches_share_few_segments_and_fsyncs(tmp_path):
    async def scenario():
        w = LandingWriter(tmp_path, queue_size=10, segment_max_bytes=10**9, segment_max_age_s=3600, flush_interval_s=5)
        w.start(asyncio.get_running_loop())
        await asyncio.gather(*(w.commit(_batch(f"b{i}", 50, (H1, H2))) for i in range(200)))
        # Answered means fsynced: every line is in the open segments before anything is published.
        parts = list(tmp_path.rglob(".*.part"))
        assert len(parts) == 2 and sum(p.read_bytes().count(b"\n") for p in parts) == 200 * 100
        await w.aclose()
        return w

    w = asyncio.run(scenario())
    assert w.batches_committed == 200 and w.group_commits < 200  # one fsync served several batches
    ids = _ids(tmp_path)
    assert len(ids) == len(set(ids)) == 200 * 100
    assert len(list(tmp_path.rglob("*.ndjson"))) == 2  # one segment per hour, not one per batch
    assert not list(tmp_path.glob(".commit-*"))  # the journal goes with a clean close


def test_a_refused_batch_is_refused_whole_and_the_others_land(tmp_path, disk):
    async def scenario():
        w = LandingWriter(tmp_path, queue_size=10, segment_max_bytes=10**9, segment_max_age_s=3600, flush_interval_s=5)
        w.start(asyncio.get_running_loop())
        await w.commit(_batch("before", 3, (H1, H2)))
        disk.full = True
        with pytest.raises(OSError, match="No space"):
            await w.commit(_batch("refused", 400, (H1, H2)))
        disk.full = False
        await w.commit(_batch("after", 3, (H1, H2)))
        await w.aclose()

    asyncio.run(scenario())
    ids = _ids(tmp_path)
    assert not [i for i in ids if i.startswith("refused")]  # nothing of it, in either hour
    assert len(ids) == 12 and not list(tmp_path.rglob("*.part"))


CHILD = """
import asyncio, json, os, sys, time
from datetime import UTC, datetime
from bifrost_pipeline.landing import writer as segment_writer
from bifrost_pipeline.proxy.writer import LandingWriter

root, stage = sys.argv[1], sys.argv[2]
H1, H2 = datetime(2026, 1, 2, 13, tzinfo=UTC), datetime(2026, 1, 2, 14, tzinfo=UTC)
real_write, real_flush = segment_writer._write_all, segment_writer.SegmentFile.flush
armed = False

def hang(what):
    print(what, flush=True)
    time.sleep(60)

def write_all(fd, data):
    if armed and stage == "write" and b'"big-14' in data:
        real_write(fd, data[: len(data) // 3])  # the 14:00 part of the batch is torn mid-line
        hang("torn")
    return real_write(fd, data)

def flush(self, durable=True):
    if armed and stage == "fsync":
        hang("written")  # every line of the batch written, not yet fsynced or answered
    return real_flush(self, durable)

segment_writer._write_all = write_all
segment_writer.SegmentFile.flush = flush

def batch(tag, n):
    return {h: [json.dumps({"request_id": f"{tag}-{h.hour}-{i}", "pad": "x" * 100}).encode() for i in range(n)]
            for h in (H1, H2)}

async def main():
    global armed
    w = LandingWriter(root, queue_size=10, segment_max_bytes=10**9, segment_max_age_s=3600, flush_interval_s=60)
    w.start(asyncio.get_running_loop())
    await w.commit(batch("ok", 5))
    armed = True
    await w.commit(batch("big", 2000))

asyncio.run(main())
"""


@pytest.mark.parametrize("stage", ["write", "fsync"])
def test_kill_9_mid_batch_leaves_the_unanswered_batch_whole_or_absent(tmp_path, stage):
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), stage], stdout=subprocess.PIPE, env={**os.environ}
    )
    try:
        assert proc.stdout.readline().strip() in (b"torn", b"written")
    finally:
        proc.kill()
        proc.wait(10)
    assert list(tmp_path.glob(".commit-*.journal"))  # the dead writer's journal is still there
    landing.recover_dead_writers(tmp_path)
    ids = _ids(tmp_path)
    answered = [i for i in ids if i.startswith("ok-")]
    big = [i for i in ids if i.startswith("big-")]
    assert len(answered) == 10  # the batch answered before the crash is kept
    assert len(big) == {"write": 0, "fsync": 4000}[stage]  # never part of it
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.glob(".commit-*"))


def test_a_torn_journal_is_ignored_and_a_whole_group_kept(tmp_path):
    seg = landing.SegmentFile(tmp_path, "t", H1)
    seg.write_lines([b'{"request_id": "a"}', b'{"request_id": "b"}'])
    journal = landing.CommitJournal(tmp_path)
    journal.record([(seg.temp_path, 0, seg.bytes_written)])  # the group is whole
    landing.recover(tmp_path)
    assert _ids(tmp_path) == ["a", "b"]
    seg2 = landing.SegmentFile(tmp_path, "t", H2)
    seg2.write_lines([b'{"request_id": "c"}'])
    (tmp_path / journal.path.name).write_bytes(b"deadbeef {\"segments\": [[")  # died while writing it
    landing.recover(tmp_path)
    assert _ids(tmp_path) == ["a", "b", "c"] and not list(tmp_path.glob(".commit-*"))
