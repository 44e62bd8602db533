"""The landing-zone layout: the state of a day that tells raw_logs and the landing sensor it changed."""

from datetime import UTC, datetime

from bifrost_pipeline import landing
from bifrost_pipeline.landing import LandingState


def test_a_landing_state_is_newer_when_segments_were_added_or_replaced():
    read = LandingState(2, 100.0)
    assert not LandingState(2, 100.0).is_newer_than(read)
    assert not LandingState(2, 99.0).is_newer_than(read)
    assert LandingState(3, 100.0).is_newer_than(read)  # a segment landed
    assert LandingState(1, 100.0).is_newer_than(read)  # one was removed by hand: what was read is stale too
    assert LandingState(2, 100.5).is_newer_than(read)  # one was replaced


def test_the_state_of_a_day_counts_its_complete_segments_and_their_newest_mtime(tmp_path):
    hour = datetime(2024, 1, 15, 1, tzinfo=UTC)
    assert LandingState.of(landing.list_segments(tmp_path, hour.date())) == LandingState(0, 0.0)
    landing.write_segment(tmp_path, [b"{}"], hour)
    newest = landing.write_segment(tmp_path, [b"{}"], hour)
    landing.SegmentFile(tmp_path, "t", hour).write_lines([b"{}"])  # still being written: not counted
    state = LandingState.of(landing.list_segments(tmp_path, hour.date()))
    assert state == LandingState(2, newest.stat().st_mtime)
