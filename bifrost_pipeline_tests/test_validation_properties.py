"""Property tests: hostile lines mixed into valid segments never fail a day, and every line is accounted for.

Each example lands one to three segments of a UTC day, each a shuffle of valid records, copies of earlier
records (identical or changed: a resent batch), blank lines and hostile lines, with LF or CRLF line ends, a
byte order mark here and there, and sometimes a last line cut short. Then, whatever the lines hold:
- validate_day returns (the day never fails);
- valid + quarantined + duplicates + blank = lines read, each count equal to what was landed;
- every valid record is in raw_logs exactly once, as its first copy in landing order;
- every hostile line is in the quarantine with its segment, line number, raw text (capped) and length, and a
  reason in words.
The 50 MB line has its own test in test_validation.py (too slow to generate).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bifrost_pipeline import validation
from bifrost_pipeline_tests.helpers import DAY, land_bytes, make_app, record, utc

BOM = b"\xef\xbb\xbf"
GOOD = json.dumps(record(request_id="h")).encode()


def _in_good(old: bytes, new: bytes) -> bytes:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


# Lines that must be quarantined, whatever else is on the day.
HOSTILE_FIXED = [
    _in_good(b'"cost_usd": 0.0045', b'"cost_usd": NaN'),
    _in_good(b'"cost_usd": 0.0045', b'"cost_usd": Infinity'),
    _in_good(b'"cost_usd": 0.0045', b'"cost_usd": -Infinity'),
    _in_good(b'"cost_usd": 0.0045', b'"cost_usd": 1e400'),
    _in_good(b'"cost_usd": 0.0045', b'"cost_usd": -2.5e308'),
    _in_good(b'"latency_ms": 1250', b'"latency_ms": 99999999999999999999999'),
    _in_good(b'"input_tokens": 100', b'"input_tokens": 9223372036854775808'),
    _in_good(b'"status_code": 200', b'"status_code": -9223372036854775809'),
    _in_good(b'"gpt-4o"', b'"gpt\\ud800"'),
    _in_good(b'"gpt-4o"', b'"gpt\\ud800x"'),
    _in_good(b'"gpt-4o"', b'"\\udfff-gpt"'),
    _in_good(b'"gpt-4o"', b'"gpt\xed\xa0\x80"'),  # a surrogate as raw bytes: not UTF-8
    _in_good(b'"gpt-4o"', b'"gpt\xff"'),
    _in_good(b'"gpt-4o"', b'"gpt\xc3"'),
    _in_good(b'"gpt-4o"', b'"gpt\x00"'),
    _in_good(b'"gpt-4o"', b'"gpt\x07\x1b"'),
    GOOD + b"\x00",
    GOOD + b" " + GOOD,
    GOOD[:-1],
    b"{}",
    b"[]",
    b'[{"request_id": "h"}]',
    b'"a string"',
    b"12345",
    b"-1.5e3",
    b"true",
    b"null",
    b"\x00",
    b"\x0b\x0c",
    BOM + BOM + GOOD,
    _in_good(b'"status": "success"', b'"status": "maybe", "status": "success"'),  # duplicate key: the first is read
]

hostile_lines = st.one_of(
    st.sampled_from(HOSTILE_FIXED),  # drawn as often as the three generated kinds together
    st.sampled_from(HOSTILE_FIXED),
    st.sampled_from(HOSTILE_FIXED),
    st.integers(min_value=1025, max_value=3000).map(_nested),
    st.integers(min_value=1, max_value=len(GOOD) - 1).map(lambda n: GOOD[:n]),  # a record cut short
    # any bytes that are not a JSON object, so never a valid record: they must be blank or quarantined
    st.binary(min_size=1, max_size=60).filter(
        lambda b: b"\n" not in b and not b.endswith(b"\r") and not b.strip().startswith(b"{")
    ),
)

# Valid records with unusual but legal content: escaped NULs and controls, pairs of surrogates (ensure_ascii),
# raw UTF-8, a BOM character inside a string, a duplicate key with two valid values, big ints outside the
# record's fields.
odd_text = st.text(st.characters(codec="utf-8"), max_size=30)


@st.composite
def valid_line(draw, request_id: str) -> tuple[bytes, str]:
    """(line, the model raw_logs must show for it)."""
    model = draw(st.sampled_from(["gpt-4o", "claude-3", "m\u00e9"])) + draw(odd_text.filter(lambda t: t.strip()))
    rec = record(request_id=request_id, model=model, output_content=draw(odd_text))
    line = json.dumps(rec, ensure_ascii=draw(st.booleans())).encode()
    extra = draw(st.sampled_from([b"", b', "zzz": 99999999999999999999999', b', "model": "not-this-one"']))
    return line[:-1] + extra + b"}", model


def _judged(line: bytes) -> bytes:
    """The line as the quarantine keeps it: without a leading BOM."""
    return line[3:] if line.startswith(BOM) else line


@dataclass
class Day:
    """What was landed, and what validation must make of it, built one line at a time."""

    segments: list[bytes] = field(default_factory=list)
    lines_read: int = 0
    blank: int = 0
    duplicates: int = 0
    differing: int = 0
    kept: dict[str, str] = field(default_factory=dict)  # request_id -> model of its first copy
    hostile: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (segment, line) -> line
    lines: list[bytes] = field(default_factory=list)  # the segment being built

    def valid(self, line: bytes, request_id: str, model: str) -> None:
        self.kept[request_id] = model
        self.lines.append(line)

    def copy(self, line: bytes, changed: bool) -> None:
        self.duplicates += 1
        self.differing += changed
        self.lines.append(line)

    def other(self, line: bytes) -> None:
        """A blank or hostile line (which one: its content says)."""
        if _judged(line).strip(b" \t\r"):
            self.hostile[(len(self.segments), len(self.lines) + 1)] = line
        else:
            self.blank += 1
        self.lines.append(line)

    def end_segment(self, ends: list[bytes]) -> None:
        self.segments.append(b"".join(ln + end for ln, end in zip(self.lines, ends, strict=True)))
        self.lines_read += len(self.lines)
        self.lines = []


@st.composite
def days(draw) -> Day:
    day = Day()
    copies: list[tuple[str, bytes, str]] = []  # earlier valid lines: (request_id, line, model)
    for s in range(draw(st.integers(1, 3))):
        for n in range(1, draw(st.integers(1, 12)) + 1):
            kind = draw(st.sampled_from(["valid", "valid", "hostile", "hostile", "blank", "copy"]))
            bom = BOM if draw(st.integers(0, 9)) == 0 else b""  # a BOM at a line start is stripped
            if kind == "copy" and copies:
                rid, line, model = draw(st.sampled_from(copies))
                changed = draw(st.booleans())  # changed by the sender, same request_id
                if changed:
                    line = json.dumps(record(request_id=rid, model=model + "~resent")).encode()
                day.copy(bom + line, changed)
            elif kind in ("valid", "copy"):
                rid = f"s{s}n{n}"
                line, model = draw(valid_line(rid))
                copies.append((rid, line, model))
                day.valid(bom + line, rid, model)
            else:
                line = draw(st.sampled_from([b"", b"   ", b"\t", b"\r", BOM]) if kind == "blank" else hostile_lines)
                day.other(line if line.startswith(BOM) else bom + line)
        ends = [draw(st.sampled_from([b"\n", b"\r\n"])) for _ in day.lines]
        if day.lines[-1] and draw(st.integers(0, 3)) == 0:
            ends[-1] = b""  # the segment ends without a final newline (an empty last line would not exist)
        day.end_segment(ends)
    return day


# a reason that is a bare exception (class name, maybe with its arguments) instead of words
BARE_EXCEPTION = re.compile(r"^\w*(Error|Exception)\b|^\w+\(\w*\)$|TapeError|Error\(")


def _validate_and_check(day: Day) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(Path(tmp))
        names = [
            land_bytes(app, data, utc(2024, 1, 15, hour)).relative_to(app.landing_dir).as_posix()
            for hour, data in enumerate(day.segments)
        ]
        result = validation.validate_day(app, DAY)

        assert result.lines_read == day.lines_read
        assert result.blank_lines == day.blank
        assert (result.duplicates, result.duplicates_differing) == (day.duplicates, day.differing)
        assert result.unaccounted_lines == 0

        raw = pl.read_parquet(result.raw_path)
        assert raw["request_id"].n_unique() == raw.height
        assert dict(zip(raw["request_id"], raw["model"], strict=True)) == day.kept

        q = {(r["segment"], r["line"]): r for r in pl.read_parquet(result.quarantine_path).iter_rows(named=True)}
        expected = {(names[s], n): line for (s, n), line in day.hostile.items()}
        assert set(q) == set(expected)
        for key, line in expected.items():
            row, text = q[key], _judged(line)
            assert row["raw_bytes"] == len(text), key
            assert row["raw"] == text[: validation.RAW_CAP_BYTES].decode("utf-8", "replace"), key
            assert " " in row["reason"] and not BARE_EXCEPTION.search(row["reason"]), row["reason"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(day=days())
def test_hostile_lines_never_fail_a_day_and_every_line_is_accounted_for(day: Day):
    _validate_and_check(day)


def test_every_fixed_hostile_line_at_once_between_valid_records_and_their_copies():
    # the generated days draw from HOSTILE_FIXED at random; this day holds each of them for sure
    day = Day()
    for i, hostile in enumerate(HOSTILE_FIXED):
        line = json.dumps(record(request_id=f"v{i}", model=f"m{i}")).encode()
        day.valid(line, f"v{i}", f"m{i}")
        day.other(hostile)
        day.other(BOM + hostile if i % 3 == 0 else b"")
        day.copy(line, changed=False)
    day.end_segment([b"\r\n" if i % 2 else b"\n" for i in range(len(day.lines))])
    day.other(HOSTILE_FIXED[0])
    day.end_segment([b""])
    _validate_and_check(day)
