"""The intake's compiled checks agree with the JSON Schema (jsonschema, the reference) on a corpus generated
from the schema file itself: valid records, and records with one field mutated to a wrong type, an
out-of-range value, a bad enum, a bad timestamp, a missing required field or an extra field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bifrost_pipeline import records
from bifrost_pipeline.proxy import compiled_schema, intake
from bifrost_pipeline_tests.helpers import record

SCHEMA = records.json_schema()
PROPS: dict[str, dict] = SCHEMA["properties"]
REQUIRED: list[str] = SCHEMA["required"]
ANY_JSON = [None, True, False, 0, -1, 1.5, 1.0, 2**40, "", "x", [], ["a"], {}, {"k": 1}]
BAD_TIMESTAMPS = [
    "yesterday", "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z", "0000-01-01T00:00:00Z", "2026-01-01 00:00:00Z",
    "2026-01-01T24:00:00Z", "2026-01-01T00:00:60Z", "2026-01-01T00:00:00", "2026-01-01T00:00:00+0200",
    "2026-01-01", "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00+24:00", "\u0662026-01-01T00:00:00Z",
]  # fmt: skip
GOOD_TIMESTAMPS = ["2024-02-29T23:59:59.999999Z", "2026-01-01t00:00:00z", "2026-12-31T23:00:00-05:30"]


def _types(prop: dict) -> list[str]:
    t = prop.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _timestamps() -> st.SearchStrategy[str]:
    moments = st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC))
    offsets = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))])
    made = st.builds(lambda m, tz: m.astimezone(tz).isoformat().replace("+00:00", "Z"), moments, offsets)
    return st.one_of(made, st.sampled_from(GOOD_TIMESTAMPS))


def _valid_value(prop: dict) -> st.SearchStrategy:
    """Values that satisfy ``prop`` (one property of the schema), from its own keywords."""
    options = []
    for t in _types(prop):
        if "enum" in prop:
            options.append(st.sampled_from(prop["enum"]))
        elif t == "string" and prop.get("format") == "date-time":
            options.append(_timestamps())
        elif t == "string":
            options.append(st.text(min_size=prop.get("minLength", 0), max_size=20))
        elif t == "integer":
            options.append(st.integers(int(prop.get("minimum", -(2**31))), int(prop.get("maximum", 2**31))))
        elif t == "number":
            options.append(st.floats(prop.get("minimum"), prop.get("maximum"), allow_nan=False, allow_infinity=False))
        elif t == "boolean":
            options.append(st.booleans())
        elif t == "null":
            options.append(st.none())
        elif t == "object":
            extra = prop.get("additionalProperties", True)
            values = _valid_value(extra) if isinstance(extra, dict) else st.sampled_from(ANY_JSON)
            options.append(st.dictionaries(st.text(max_size=5), values, max_size=3))
    return st.one_of(options)


@st.composite
def valid_records(draw) -> dict:
    rec = {}
    for name, prop in PROPS.items():
        if name in REQUIRED or draw(st.booleans()):
            rec[name] = draw(_valid_value(prop))
    return rec


def _bad_values(prop: dict) -> list:
    """Values that break one keyword of ``prop`` (some may happen to be valid: the reference decides)."""
    out = list(ANY_JSON)
    for key, step in (("minimum", -1), ("maximum", 1)):
        if key in prop:
            out += [prop[key] + step, prop[key] + step * 0.5]
    if "minLength" in prop:
        out.append("x" * (prop["minLength"] - 1))
    if "enum" in prop:
        out += ["nope", prop["enum"][0].upper() + "x", prop["enum"][0].lower() + " "]
    if prop.get("format") == "date-time":
        out += BAD_TIMESTAMPS
    if "object" in _types(prop):
        out += [{"k": 1}, {"k": None}, {"k": ["v"]}]
    return out


@st.composite
def mutated_records(draw) -> dict:
    rec = draw(valid_records())
    how = draw(st.sampled_from(["value", "missing", "extra"]))
    if how == "missing":
        del rec[draw(st.sampled_from(REQUIRED))]
    elif how == "extra":
        rec[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in PROPS))] = draw(st.sampled_from(ANY_JSON))
    else:
        name = draw(st.sampled_from(sorted(PROPS)))
        rec[name] = draw(st.sampled_from(_bad_values(PROPS[name])))
    return rec


def _without_c(build):
    """``build()`` with the field checks written in Python only, as where check_scalars is not compiled."""
    compiled, compiled_schema._SCALARS = compiled_schema._SCALARS, None
    try:
        return build()
    finally:
        compiled_schema._SCALARS = compiled


FORMATS = compiled_schema.format_checks(SCHEMA, intake.reference_validator().format_checker.checkers)
PYTHON_ONLY = _without_c(lambda: compiled_schema.compile_check(SCHEMA, FORMATS))


def test_the_field_checks_are_compiled_where_the_install_compiled_them():
    if compiled_schema._SCALARS is None:
        pytest.skip("check_scalars is not compiled (BIFROST_NATIVE=0 or no C compiler)")
    check = compiled_schema.compile_check(SCHEMA, FORMATS)
    assert check(record()) and PYTHON_ONLY(record())
    assert compiled_schema._scalar_field(PROPS["status_code"]) is not None
    assert compiled_schema._scalar_field(PROPS["timestamp"]) is None  # a format: written in Python


def _agree(rec: dict) -> None:
    reference = not any(intake.reference_validator().iter_errors(rec))
    assert intake.compiled_check()(rec) is reference, rec
    assert PYTHON_ONLY(rec) is reference, rec
    assert (intake.check_record(rec) == []) is reference, rec


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(valid_records())
def test_generated_valid_records_pass_both(rec):
    _agree(rec)
    assert intake.compiled_check()(rec)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mutated_records())
def test_compiled_checks_agree_with_the_json_schema_on_mutated_records(rec):
    _agree(rec)


@pytest.mark.parametrize("value", BAD_TIMESTAMPS + GOOD_TIMESTAMPS)
def test_date_time_is_the_reference_format_check(value):
    reference, _ = intake.reference_validator().format_checker.checkers["date-time"]
    assert compiled_schema.is_date_time(value) is reference(value)


def test_a_schema_keyword_it_does_not_compile_falls_back_to_the_reference():
    schema = {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 3}}}
    check = compiled_schema.compile_check(schema, {})
    assert check({"n": 6}) and not check({"n": 7})
    assert not check({"n": 6.0})  # an integer written as one, as everywhere


@pytest.mark.parametrize("value", [100.0, 1e2, -0.0, float(2**63), 2.0**64])
def test_an_integer_field_written_with_a_fraction_or_exponent_is_refused_by_both(value):
    """JSON Schema calls 100.0 an integer; the day's reader does not (an Int32 column), so neither does the
    intake: the record is refused at the door, not quarantined after the sender was told it landed."""
    rec = record(input_tokens=value)
    _agree(rec)
    assert intake.check_record(rec)[0]["path"] == "input_tokens"


def test_non_objects_and_unhashable_values_are_rejected_not_raised():
    for value in ANY_JSON:
        _agree(record(method=value))
        assert intake.compiled_check()(value) is False


@pytest.mark.parametrize("year", ["0000", "0001", "1900", "2000", "2023", "2024"])
def test_date_time_days_of_every_month_are_the_reference_check(year):
    """is_date_time decides days 1-31 by comparing text: every month, leap years and not, agrees."""
    reference, _ = intake.reference_validator().format_checker.checkers["date-time"]
    for month in [f"{m:02d}" for m in range(14)]:
        for day in ["00", "01", "28", "29", "30", "31", "32", "99"]:
            value = f"{year}-{month}-{day}T12:00:00Z"
            assert compiled_schema.is_date_time(value) is bool(reference(value)), value
            # The one-regex path of the compiled check never accepts what the reference refuses.
            assert not compiled_schema._COMMON_DATE_TIME(value) or reference(value), value


def test_records_past_the_cached_shapes_get_the_general_check(monkeypatch):
    """Past SHAPES key lists, records are checked by the general check: the same answers."""
    monkeypatch.setattr(compiled_schema, "SHAPES", 0)
    check = compiled_schema.compile_check(SCHEMA, {"date-time": compiled_schema.is_date_time})
    assert check(record()) and not check(record(status_code=600)) and not check(record(timestamp="yesterday"))
    assert not check({k: v for k, v in record().items() if k != "model"}) and not check([])


def test_a_shape_check_answers_for_its_own_keys_only():
    """Each key set gets its check, tried first on the next record: records of other keys, the same keys in
    another order, or missing a required key are each judged by the check of their own keys."""
    check = compiled_schema.compile_check(SCHEMA, {"date-time": compiled_schema.is_date_time})
    good, no_model = record(), {k: v for k, v in record().items() if k != "model"}
    reordered = dict(reversed(list(record(status_code=201).items())))
    extra, bad_extra = {**record(), "surprise": 1}, {**record(model=5), "surprise": 1}  # extra keys: allowed
    for rec, valid in [(no_model, False), (good, True), (reordered, True), (extra, True), (bad_extra, False),
                       (good, True), (record(status_code=600), False), (no_model, False), (reordered, True)]:  # fmt: skip
        assert check(rec) is valid, rec


SMALL_SCHEMAS = [
    {"type": "object", "properties": {"n": {"type": ["integer", "null"], "exclusiveMinimum": 0, "maximum": 9}}},
    {"type": "object", "properties": {"n": {"type": "number", "minimum": 0.5, "exclusiveMaximum": 2}}},
    {"type": "object", "properties": {"s": {"type": ["string", "null"], "minLength": 1, "maxLength": 3}}},
    {"type": "object", "properties": {"s": {"type": "string", "minLength": 2}}, "required": ["s"]},
    {"type": "object", "properties": {"z": {"type": "null"}, "o": {"type": ["object", "null"],
                                      "additionalProperties": {"type": "integer"}}}},  # fmt: skip
    {"type": "object", "properties": {"o": {"type": "object", "additionalProperties": {"description": "any"},
                                      "properties": {"k": {"type": "string"}}}}},  # fmt: skip
    {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
    {"type": "object", "properties": {"e": {"type": ["string", "null"], "enum": ["a", "abcd"]}, "b": {"type": "boolean"}}},
    {"type": "object", "properties": {"c": {"const": "x"}, "n": {"type": ["number", "null"], "minimum": -1}}},
    {"type": "object", "properties": {"k": {"type": "string", "const": ""}, "z": {"type": ["null", "boolean"]}}},
    {"type": "object", "properties": {"i": {"type": ["integer", "null"], "minimum": -(2**63), "maximum": 2**63 - 1},
                                      "e": {"type": "string", "enum": ["", "x"], "maxLength": 0}}},  # fmt: skip
]
SMALL_VALUES = [*ANY_JSON, -0.5, 0.5, 2, 2.0, 9.0, 10, "", "abcd", {"k": "v"}, {"k": 1.0}, {"k": True},
                2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 1e300, "a", "x"]  # fmt: skip


@pytest.mark.parametrize("schema", SMALL_SCHEMAS)
def test_small_schemas_agree_with_the_reference_for_every_shape(schema):
    """Each keyword the compiler writes code for, alone or beside others, on objects of one, two or no keys
    (so on the check of each key set as well as the general one), values of every JSON type among them."""
    reference = records.strict_validator(schema, formats=False)
    names = [*schema["properties"], "other"]
    objects = [{}, *({name: value} for name in names for value in SMALL_VALUES)]
    objects += [{names[0]: value, "other": "x"} for value in SMALL_VALUES]
    objects += [{name: value for name in names} for value in SMALL_VALUES]  # every key: the fields checked in C
    for check in (compiled_schema.compile_check(schema, {}), _without_c(lambda: compiled_schema.compile_check(schema, {}))):
        for obj in objects:
            assert check(obj) is reference.is_valid(obj), (schema, obj)
