import json
import os

import polars as pl
import pytest

from bifrost_pipeline import landing, validation
from bifrost_pipeline_tests.helpers import DAY, land, land_bytes, make_app, record, utc

BAD_CORPUS = [
    (b'{"request_id": "x", "timestamp": ', "malformed JSON"),
    (b"plain text", "malformed JSON"),
    (b'["not", "an", "object"]', "expected a JSON object, got list"),
    (b'"just a string"', "expected a JSON object, got str"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    (json.dumps(record(stream="yes")).encode(), "stream: 'yes' is not of type 'boolean'"),
    (json.dumps(record(status_code="200")).encode(), "status_code: '200' is not of type 'integer'"),
    (json.dumps(record(latency_ms=1.5)).encode(), "latency_ms: 1.5 is not of type 'integer'"),
    (json.dumps(record(status_code=700)).encode(), "status_code: 700 is above the maximum 599"),
    (json.dumps(record(latency_ms=-3)).encode(), "latency_ms: -3 is below the minimum 0"),
    (json.dumps(record(status="ok")).encode(), "status: ok is not one of success, error"),
    (json.dumps(record(request_type="chat.completion")).encode(), "request_type: chat.completion is not one of"),
    (json.dumps(record(request_id="")).encode(), "request_id: must not be empty"),
    (json.dumps({k: v for k, v in record().items() if k != "customer_id"}).encode(), "customer_id: required"),
    (json.dumps(record(model=None)).encode(), "model: required"),
    (json.dumps(record(timestamp="2024-01-15 10:30")).encode(), "timestamp: 2024-01-15 10:30 is not an RFC 3339"),
    (json.dumps(record(timestamp="2024-01-15T10:30:00")).encode(), "is not an RFC 3339 date-time with a zone"),
    (json.dumps(record(timestamp="2024-01-16T00:00:00Z")).encode(), "is outside the partition day 2024-01-15"),
    (json.dumps(record(metadata="tenant=acme")).encode(), "metadata: expected an object of strings"),
    (json.dumps(record(schema_version="3")).encode(), "schema_version: 3 is not one of 1, 2"),
]


def test_bad_lines_are_quarantined_with_line_and_reason_and_nothing_is_lost(tmp_path):
    app = make_app(tmp_path)
    lines = []
    for i, (bad, _) in enumerate(BAD_CORPUS):
        lines.append(record(request_id=f"good_{i}"))
        lines.append(bad)
    lines.append(record(request_id="good_last"))
    seg = land(app, lines, when=utc(2024, 1, 15, 10))
    result = validation.validate_day(app, DAY)

    assert result.lines == len(lines)
    assert result.valid_rows == len(BAD_CORPUS) + 1
    assert result.quarantined_rows == len(BAD_CORPUS)
    q = pl.read_parquet(result.quarantine_path).sort("line")
    assert q["line"].to_list() == [2 * (i + 1) for i in range(len(BAD_CORPUS))]
    assert set(q["segment"]) == {seg.relative_to(app.landing_dir).as_posix()}
    for (bad, reason), row in zip(BAD_CORPUS, q.iter_rows(named=True), strict=True):
        assert reason in row["reason"], (bad, row["reason"])
        assert row["raw"] == bad.decode("utf-8", "replace")
    raw = pl.read_parquet(result.raw_path)
    assert sorted(raw["request_id"]) == sorted([f"good_{i}" for i in range(len(BAD_CORPUS))] + ["good_last"])


def test_a_record_breaking_several_rules_gets_every_reason(tmp_path):
    app = make_app(tmp_path)
    land(app, [record(status="ok", status_code=99, latency_ms=-1)])
    result = validation.validate_day(app, DAY)
    (reason,) = pl.read_parquet(result.quarantine_path)["reason"].to_list()
    assert "status: ok is not one of" in reason and "status_code: 99 is below" in reason
    assert "latency_ms: -1 is below" in reason


def test_typed_values_round_trip(tmp_path):
    app = make_app(tmp_path)
    land(app, [record(timestamp="2024-01-15T12:30:00.123456+02:00", stream=True, retries=2)])
    result = validation.validate_day(app, DAY)
    row = pl.read_parquet(result.raw_path).row(0, named=True)
    assert row["timestamp"] == utc(2024, 1, 15, 10, 30, 0, 123456)
    assert row["stream"] is True and row["retries"] == 2 and row["status_code"] == 200
    assert json.loads(row["metadata"]) == {"x-tenant-id": "acme"}
    assert row["user_id"] is None  # absent optional field -> null


@pytest.mark.parametrize("block_bytes", [64, 700, 1 << 20])
def test_block_boundaries_and_blank_lines_keep_line_numbers(tmp_path, block_bytes):
    app = make_app(tmp_path)
    lines = [json.dumps(record(request_id=f"r{i}")).encode() for i in range(30)]
    lines[7] = b""
    lines[8] = b"   "
    lines[20] = b"{broken"
    path = landing.write_segment(app.landing_dir, [ln for ln in lines], utc(2024, 1, 15, 3))
    # write_segment appends newlines; blank entries become empty lines
    assert path.read_bytes().count(b"\n") == 30
    result = validation.validate_day(app, DAY, block_bytes=block_bytes)
    assert result.valid_rows == 27 and result.quarantined_rows == 1 and result.blank_lines == 2
    assert pl.read_parquet(result.quarantine_path)["line"].to_list() == [21]


def test_revalidating_a_day_replaces_it_and_incomplete_segments_are_ignored(tmp_path):
    app = make_app(tmp_path)
    land(app, [record(request_id="a")])
    assert validation.validate_day(app, DAY).valid_rows == 1
    land(app, [record(request_id="b"), b"junk"])
    # a segment still being written is invisible
    part = landing.SegmentFile(app.landing_dir, "writer", utc(2024, 1, 15, 11))
    part.write_lines([json.dumps(record(request_id="c")).encode()])
    part.flush()
    result = validation.validate_day(app, DAY)
    assert (result.valid_rows, result.quarantined_rows, result.segments) == (2, 1, 2)
    assert sorted(pl.read_parquet(result.raw_path)["request_id"]) == ["a", "b"]
    part.publish()
    assert validation.validate_day(app, DAY).valid_rows == 3


def test_an_empty_day_gives_empty_outputs(tmp_path):
    app = make_app(tmp_path)
    result = validation.validate_day(app, DAY)
    assert result.valid_rows == 0 and result.segments == 0
    assert pl.read_parquet(result.raw_path).height == 0
    assert pl.read_parquet(result.quarantine_path).height == 0


def test_recover_publishes_a_crashed_writers_segment_up_to_its_last_line(tmp_path):
    app = make_app(tmp_path)
    part = landing.SegmentFile(app.landing_dir, "crashy", utc(2024, 1, 15, 9))
    part.write_lines([json.dumps(record(request_id="kept")).encode()])
    os.write(part._fd, b'{"request_id": "half')  # the process died mid-line
    part.flush()
    (published,) = landing.recover(app.landing_dir)
    assert published.read_bytes().endswith(b"}\n")
    result = validation.validate_day(app, DAY)
    assert result.valid_rows == 1 and result.quarantined_rows == 0


def test_several_segments_each_keep_their_own_line_numbers(tmp_path):
    app = make_app(tmp_path)
    clean = land(app, [record(request_id="c1"), record(request_id="c2")], when=utc(2024, 1, 15, 1))
    broken = land(app, [record(request_id="b1"), b"{oops", record(request_id="b3")], when=utc(2024, 1, 15, 2))
    ruled = land(app, [record(request_id="r1"), record(request_id="r2", status="maybe"), b"", record(request_id="r4", latency_ms=-1)], when=utc(2024, 1, 15, 3))
    result = validation.validate_day(app, DAY)
    assert (result.valid_rows, result.quarantined_rows) == (5, 3)
    q = {(r["segment"], r["line"]): r["reason"] for r in pl.read_parquet(result.quarantine_path).iter_rows(named=True)}
    rel = {p: p.relative_to(app.landing_dir).as_posix() for p in (clean, broken, ruled)}
    assert set(q) == {(rel[broken], 2), (rel[ruled], 2), (rel[ruled], 4)}
    assert q[(rel[ruled], 4)].startswith("latency_ms: -1 is below the minimum 0")
    assert sorted(pl.read_parquet(result.raw_path)["request_id"]) == ["b1", "b3", "c1", "c2", "r1"]


# --- hostile lines (issue 11): no single line fails a day; every reason is in words -------------------


def _segment_of(app, data: bytes, hour: int = 10):
    return land_bytes(app, data, utc(2024, 1, 15, hour))


def _good(request_id: str) -> bytes:
    return json.dumps(record(request_id=request_id)).encode()


def test_a_line_nested_2000_levels_deep_is_quarantined_and_the_day_completes(tmp_path):
    app = make_app(tmp_path)
    deep = b'{"a":' * 2000 + b"1" + b"}" * 2000
    deep_meta = _good("m")[:-1] + b', "metadata": ' + b'{"a":' * 2000 + b'"x"' + b"}" * 2000 + b"}"
    land(app, [record(request_id="before"), deep, deep_meta, record(request_id="after")])
    result = validation.validate_day(app, DAY)
    assert (result.valid_rows, result.quarantined_rows) == (2, 2)
    q = pl.read_parquet(result.quarantine_path).sort("line")
    assert q["line"].to_list() == [2, 3]
    for reason in q["reason"]:
        assert "nested" in reason and "deep" in reason, reason


def test_a_bom_at_the_start_of_a_segment_or_of_any_line_is_stripped(tmp_path):
    app = make_app(tmp_path)
    bom = b"\xef\xbb\xbf"
    _segment_of(app, bom + _good("first") + b"\n" + _good("second") + b"\r\n" + bom + _good("third") + b"\n")
    result = validation.validate_day(app, DAY)
    assert result.quarantined_rows == 0, pl.read_parquet(result.quarantine_path)["reason"].to_list()
    assert sorted(pl.read_parquet(result.raw_path)["request_id"]) == ["first", "second", "third"]


GOOD = _good("x")
WORDED = [
    (GOOD.replace(b'"cost_usd": 0.0045', b'"cost_usd": NaN'), "malformed JSON: NaN is not a JSON number (column"),
    (GOOD.replace(b'"cost_usd": 0.0045', b'"cost_usd": Infinity'), "Infinity is not a JSON number (column"),
    (GOOD.replace(b'"cost_usd": 0.0045', b'"cost_usd": -Infinity'), "-Infinity is not a JSON number (column"),
    (GOOD.replace(b'"cost_usd": 0.0045', b'"cost_usd": 1e400'), "beyond the range of a double"),
    (GOOD.replace(b'"latency_ms": 1250', b'"latency_ms": 99999999999999999999999'), "latency_ms:"),
    (GOOD.replace(b'"gpt-4o"', b'"gpt\\ud800\\u0041"'), "lone UTF-16 surrogate"),
    (GOOD.replace(b'"gpt-4o"', b'"gpt\\udc00"'), "lone UTF-16 surrogate"),
    (GOOD.replace(b'"gpt-4o"', b'"gpt\xed\xa0\x80"'), "not valid UTF-8 at byte"),
    (GOOD.replace(b'"gpt-4o"', b'"gpt\x00"'), "control character U+0000"),
    (GOOD.replace(b'"gpt-4o"', b'"gpt\x1f"'), "control character U+001F"),
    (GOOD + b"\x00", "malformed JSON: more than one JSON value on the line, or text after it"),
    (GOOD + b" " + GOOD, "more than one JSON value on the line"),
    (GOOD[:60], "the line ends before the JSON value does"),
    (b"\x0b", "malformed JSON: unexpected character, expected a JSON value, found U+000B (column 1)"),
    (b"42", "expected a JSON object, got int"),
    (b"null", "expected a JSON object, got null"),
    # an integer column's value written with a fraction or an exponent: the field named, as at intake
    (GOOD.replace(b'"input_tokens": 100', b'"input_tokens": 100.0'), "input_tokens: 100.0 is not of type 'integer'"),
    (GOOD.replace(b'"latency_ms": 1250', b'"latency_ms": 1.25e3'), "latency_ms: 1250.0 is not of type 'integer'"),
]


def test_rfc_3339_as_senders_write_it_is_read_lower_case_long_fractions_and_offsets(tmp_path):
    """What the intake accepts as a date-time, the day reads: a lower-case t and z, nine fraction digits
    (cut to the microsecond), an offset that puts the UTC time on this day."""
    app = make_app(tmp_path)
    times = {"a": "2024-01-15t10:30:00z", "b": "2024-01-15T10:30:00.123456789Z", "c": "2024-01-16T05:00:00+23:59",
             "d": "2024-01-14t23:30:00.5-01:00"}  # fmt: skip
    land(app, [record(request_id=k, timestamp=v) for k, v in times.items()], utc(2024, 1, 15, 10))
    result = validation.validate_day(app, DAY)
    assert (result.valid_rows, result.quarantined_rows) == (4, 0), dict(result.reasons)
    got = dict(pl.read_parquet(result.raw_path).select("request_id", "timestamp").iter_rows())
    assert [got[k].isoformat() for k in "abcd"] == [
        "2024-01-15T10:30:00+00:00", "2024-01-15T10:30:00.123456+00:00", "2024-01-15T05:01:00+00:00",
        "2024-01-15T00:30:00.500000+00:00",
    ]  # fmt: skip


@pytest.mark.parametrize(("line", "words"), WORDED, ids=[w for _, w in WORDED])
def test_every_reason_says_in_words_what_is_wrong(tmp_path, line, words):
    app = make_app(tmp_path)
    land(app, [record(request_id="a"), line, record(request_id="b")])
    result = validation.validate_day(app, DAY)
    (reason,) = pl.read_parquet(result.quarantine_path)["reason"].to_list()
    assert words in reason, reason
    assert "Error(" not in reason and "TapeError" not in reason, reason
    assert result.valid_rows == 2


def test_a_lone_surrogate_escape_never_lands_as_a_nul_character(tmp_path):
    # the reader turns "\ud800x" into "\x00x" without a word: the line must be quarantined instead
    app = make_app(tmp_path)
    land(app, [record(request_id="a"), GOOD.replace(b'"gpt-4o"', b'"gpt\\ud800x"'), record(model="\U0001f600")])
    result = validation.validate_day(app, DAY)
    assert result.quarantined_rows == 1
    models = pl.read_parquet(result.raw_path)["model"].to_list()
    assert all("\x00" not in m for m in models) and "\U0001f600" in models


def test_crlf_line_ends_and_a_segment_cut_mid_line(tmp_path):
    app = make_app(tmp_path)
    _segment_of(app, _good("a") + b"\r\n\r\n" + _good("b") + b"\r\n" + _good("c")[:70])
    result = validation.validate_day(app, DAY)
    assert (result.valid_rows, result.quarantined_rows, result.blank_lines, result.lines_read) == (2, 1, 1, 4)
    (row,) = pl.read_parquet(result.quarantine_path).to_dicts()
    assert row["line"] == 4 and row["raw"] == _good("c")[:70].decode() and row["raw_bytes"] == 70


def test_a_50_mb_line_is_quarantined_with_its_raw_text_capped_and_its_length_kept(tmp_path):
    app = make_app(tmp_path)
    huge = b'{"request_id": "' + b"x" * (50 * 1024 * 1024)  # a string that never ends
    land(app, [record(request_id="a"), huge, record(request_id="b", input_content="y" * (5 * 1024 * 1024))])
    result = validation.validate_day(app, DAY, block_bytes=1 << 20)
    assert (result.valid_rows, result.quarantined_rows) == (2, 1)
    (row,) = pl.read_parquet(result.quarantine_path).to_dicts()
    assert row["raw_bytes"] == len(huge) and len(row["raw"]) == validation.RAW_CAP_BYTES
    assert "the line ends before the JSON value does" in row["reason"]


def test_duplicate_keys_keep_the_first_value_as_the_reader_does(tmp_path):
    app = make_app(tmp_path)
    land(app, [GOOD[:-1] + b', "model": "second"}'], when=utc(2024, 1, 15, 10))
    result = validation.validate_day(app, DAY)
    assert pl.read_parquet(result.raw_path)["model"].to_list() == ["gpt-4o"]


# --- every line accounted for; each request_id once (issue 11) ---------------------------------------------


def _accounted(result) -> None:
    assert result.unaccounted_lines == 0, result
    assert result.lines_read == result.valid_rows + result.quarantined_rows + result.duplicates + result.blank_lines


@pytest.mark.parametrize("careful", [False, True], ids=["fast path", "careful path"])
def test_lines_read_are_all_accounted_for(tmp_path, careful):
    app = make_app(tmp_path)
    lines = [record(request_id="a"), b"", b"  \t", record(request_id="b"), record(request_id="a"), record(status="?")]
    if careful:
        lines.append(b"{broken")
    land(app, lines)
    result = validation.validate_day(app, DAY)
    _accounted(result)
    assert (result.lines_read, result.blank_lines, result.duplicates) == (len(lines), 2, 1)
    assert result.quarantined_rows == 1 + careful and result.valid_rows == 2


@pytest.mark.parametrize("block_bytes", [200, validation.BLOCK_BYTES])
def test_a_record_landed_twice_is_kept_once_the_first_copy_wins(tmp_path, block_bytes):
    app = make_app(tmp_path)
    first = land(app, [record(request_id="r1"), record(request_id="r2", model="first-copy")], when=utc(2024, 1, 15, 1))
    # a resent batch: one copy identical, one changed by the sender; a copy in the same segment too
    land(app, [record(request_id="r2", model="second-copy"), record(request_id="r1"), record(request_id="r1"), b"{x"], when=utc(2024, 1, 15, 2))
    assert first.name
    result = validation.validate_day(app, DAY, block_bytes=block_bytes)
    raw = pl.read_parquet(result.raw_path).sort("request_id")
    assert raw["request_id"].to_list() == ["r1", "r2"]
    assert raw["model"].to_list() == ["gpt-4o", "first-copy"]
    assert (result.valid_rows, result.duplicates, result.duplicates_differing) == (2, 3, 1)
    _accounted(result)
    again = validation.validate_day(app, DAY, block_bytes=block_bytes)
    assert pl.read_parquet(again.raw_path).sort("request_id").equals(raw)  # re-materializing is idempotent


def test_two_copies_of_one_segment_are_kept_once(tmp_path):
    app = make_app(tmp_path)
    seg = land(app, [record(request_id=f"r{i}") for i in range(1000)])
    copy = seg.with_name("zz-" + seg.name)
    copy.write_bytes(seg.read_bytes())
    result = validation.validate_day(app, DAY)
    assert (result.valid_rows, result.duplicates, result.duplicates_differing) == (1000, 1000, 0)
    raw = pl.read_parquet(result.raw_path)
    assert raw["request_id"].n_unique() == raw.height == 1000
    _accounted(result)


# --- a day split by hour -----------------------------------------------------------------------------


def land_hostile_day(app) -> None:
    """Several segments in several hours, duplicates within and across hours (one differing), hostile
    lines, blank lines, a BOM and a lone surrogate (the careful path)."""
    def rec(rid: str, hour: int, **kw) -> dict:
        return record(request_id=rid, timestamp=f"2024-01-15T{hour:02d}:10:00Z", **kw)

    land(app, [rec("a", 0), rec("b", 0), BAD_CORPUS[0][0], b"", rec("a", 0)], when=utc(2024, 1, 15, 0))
    land(app, [rec("c", 0), rec("b", 0, model="other"), b"   "], when=utc(2024, 1, 15, 0))
    land(app, [rec("d", 5), BAD_CORPUS[8][0], rec("a", 5)], when=utc(2024, 1, 15, 5))
    land(app, [rec("e", 11), rec("c", 11), b"\xef\xbb\xbf" + json.dumps(rec("f", 11)).encode()], when=utc(2024, 1, 15, 11))
    land(app, [rec("g", 12), GOOD.replace(b'"gpt-4o"', b'"gpt\\ud800"'), rec("e", 12)], when=utc(2024, 1, 15, 12))
    land(app, [rec("h", 12), BAD_CORPUS[4][0], rec("g", 12, latency_ms=9)], when=utc(2024, 1, 15, 12))
    land(app, [rec("i", 23), rec("d", 23), rec("j", 23)], when=utc(2024, 1, 15, 23))


def _day_snapshot(app, result) -> tuple:
    raw = pl.read_parquet(result.raw_path)
    quarantine = pl.read_parquet(result.quarantine_path).drop("validated_at")
    counts = {
        name: getattr(result, name)
        for name in (
            "segments", "bytes_read", "lines", "valid_rows", "quarantined_rows", "blank_lines", "lines_read",
            "duplicates", "duplicates_differing", "newest_segment_mtime",
        )
    }
    return raw, quarantine, counts, dict(result.reasons)


def _validate_split(app, n: int, block_bytes: int = validation.BLOCK_BYTES):
    stage_root = validation.split_stage_dir(app, DAY, "run-1")
    stages = []
    for hours in validation.hour_groups(n):
        stage = stage_root / validation.hours_label(hours)
        validation.validate_hours(app, DAY, hours, stage, block_bytes=block_bytes)
        stages.append(stage)
    return validation.combine_day(app, DAY, stages)


def test_hour_groups_are_contiguous_and_cover_the_day():
    for n in range(1, 25):
        groups = validation.hour_groups(n)
        assert len(groups) == n
        assert [h for g in groups for h in g] == list(range(24))
        assert max(len(g) for g in groups) - min(len(g) for g in groups) <= 1
    assert validation.hour_groups(4)[1] == range(6, 12)
    assert validation.hours_label(range(6, 12)) == "hours_06_11"
    with pytest.raises(ValueError, match="hour_groups: 25"):
        validation.hour_groups(25)


@pytest.mark.parametrize("n", [2, 3, 24])
def test_a_day_split_by_hour_is_the_unsplit_day(tmp_path, n):
    """Same rows in the same order, same quarantine, same numbers: the first landed copy wins across hours."""
    app = make_app(tmp_path)
    land_hostile_day(app)
    unsplit = _day_snapshot(app, validation.validate_day(app, DAY))
    raw, quarantine, counts, _ = unsplit
    assert counts["duplicates"] == 7 and counts["duplicates_differing"] == 6
    assert sorted(raw["request_id"]) == list("abcdefghij")
    # the first landed copy: hour 0's, not hour 5's or hour 23's
    kept = raw.filter(pl.col("request_id").is_in(["a", "d"])).sort("request_id")["timestamp"].dt.hour().to_list()
    assert kept == [0, 5]
    assert quarantine.height == 4 and counts["blank_lines"] == 2

    split = _validate_split(app, n)
    for got, want in zip(_day_snapshot(app, split), unsplit, strict=True):
        if isinstance(want, pl.DataFrame):
            assert got.equals(want), (got, want)
        else:
            assert got == want
    assert split.unaccounted_lines == 0
    assert split.raw_path == validation.raw_path(app, DAY)
    assert sorted(p.name for p in split.raw_path.iterdir()) == [
        f"part-{i:05d}.parquet" for i in range(len(list(split.raw_path.iterdir())))
    ]


def test_a_split_day_with_nothing_landed_is_an_empty_readable_day(tmp_path):
    app = make_app(tmp_path)
    land(app, [record(request_id="late", timestamp="2024-01-15T22:00:00Z")])
    result = _validate_split(app, 2)
    assert pl.read_parquet(result.raw_path)["request_id"].to_list() == ["late"]
    (tmp_path / "landing" / f"date={DAY}").rename(tmp_path / "gone")
    empty = _validate_split(app, 4)
    assert empty.lines_read == 0 and empty.segments == 0 and empty.newest_segment_mtime is None
    assert pl.read_parquet(empty.raw_path).height == 0
    assert pl.read_parquet(empty.quarantine_path).height == 0


def test_combine_refuses_a_stage_that_has_not_finished_and_leaves_the_day_alone(tmp_path):
    app = make_app(tmp_path)
    land(app, [record(request_id="kept")])
    validation.validate_day(app, DAY)
    stage_root = validation.split_stage_dir(app, DAY, "run-2")
    first, second = (stage_root / validation.hours_label(h) for h in validation.hour_groups(2))
    validation.validate_hours(app, DAY, validation.hour_groups(2)[0], first)
    with pytest.raises(FileNotFoundError, match="hours_12_23: no result.json"):
        validation.combine_day(app, DAY, [first, second])
    assert pl.read_parquet(validation.raw_path(app, DAY))["request_id"].to_list() == ["kept"]
    assert not [p for p in validation.raw_path(app, DAY).parent.iterdir() if p.name.endswith(".tmp")]
