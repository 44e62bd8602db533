"""The landing-zone layout: the state of a day that tells raw_logs and the landing sensor it changed."""

from datetime import UTC, date, datetime

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


def test_a_year_before_1000_gets_the_directory_its_day_is_read_from(tmp_path):
    """strftime's %Y writes the year 999 as "999": the day 0999-01-01 would never find its segment."""
    from bifrost_pipeline.landing import layout

    when = datetime(999, 1, 1, 7, tzinfo=UTC)
    assert layout.hour_dir(tmp_path, when) == tmp_path / "date=0999-01-01" / "hour=07"
    assert layout.new_segment_name("proxy", when).startswith("09990101T070000-proxy-")
    path = landing.write_segment(tmp_path, [b'{"a": 1}'], when, source="test")
    assert [s.path for s in landing.list_segments(tmp_path, date(999, 1, 1))] == [path]
