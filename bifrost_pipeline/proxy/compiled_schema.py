"""The JSON Schema of the record compiled to one Python function that says valid or not, for the intake's
hot path (a few microseconds a record, where jsonschema takes about 150).

``compile_check(schema)`` writes straight-line code for the keywords the record's schema uses (type, enum,
const, minimum/maximum, minLength/maxLength, pattern, format, required, properties, additionalProperties,
items; annotations are skipped), and for an object schema one more function per set of keys it meets,
which reads all of those keys in one call (``_by_shape``). A schema with any other keyword is checked by the
reference itself (jsonschema), so a new keyword in ``schemas/`` is still checked, only more slowly. Either way
it is a filter: a record it calls invalid is explained (or, if the two ever disagree, accepted) by the
reference (``records.strict_validator``, used by ``intake``), and ``test_compiled_schema`` checks on a
generated corpus that they agree.

Formats are checked with the functions jsonschema's format checker uses (date-time matched the way
rfc3339_validator does, without upper-casing each value first).
"""

from __future__ import annotations

import calendar
import operator
import re
from collections.abc import Callable
from typing import Any

from bifrost_pipeline import records

ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "examples", "default", "deprecated", "readOnly",
     "writeOnly"}
)
SUPPORTED = ANNOTATIONS | {
    "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
    "maxLength", "pattern", "format", "required", "properties", "additionalProperties", "items",
}  # fmt: skip
# A JSON type -> the classes of its decoded values (bool is not an int here: the test is on the exact class).
# An integer is an int, not a float such as 1.0 (which JSON Schema allows): as the reference validator
# (records.json_schema_validator) says, an integer column takes an integer written as one.
_CLASSES: dict[str, tuple[type, ...]] = {"string": (str,), "boolean": (bool,), "null": (type(None),),
    "object": (dict,), "array": (list,), "number": (int, float), "integer": (int,)}  # fmt: skip

# rfc3339_validator's pattern (what jsonschema's date-time check calls), case-insensitive instead of
# upper-casing every value first.
_RFC3339 = re.compile(
    r"^\d{4}-(?:0[1-9]|1[0-2])-\d{2}T(?:[01]\d|2[0123]):[0-5]\d:[0-5]\d(?:\.\d+)?"
    r"(?:Z|[+-](?:[01]\d|2[0123]):[0-5]\d)$",
    re.ASCII | re.IGNORECASE,
)
# The date-times every calendar accepts (all but February 29th and year 0000), in one call: a date-time it
# refuses is decided by is_date_time. Days 29-31 are a tenth of all days, and of every run on one of them.
_COMMON_DATE_TIME = re.compile(
    r"(?!0000)\d{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    r"T(?:[01]\d|2[0123]):[0-5]\d:[0-5]\d(?:\.\d+)?(?:Z|[+-](?:[01]\d|2[0123]):[0-5]\d)",
    re.ASCII | re.IGNORECASE,
).fullmatch


def _allows_null(schema: Any) -> bool:
    """Whether null passes every keyword of ``schema`` (the other keywords test only values of their type)."""
    if not isinstance(schema, dict):
        return schema is True
    types = schema.get("type", ())
    return ("null" in types if isinstance(types, list) else types == "null") and not {"enum", "const"} & set(schema)


_MONTHS_OF_31_DAYS = frozenset({"01", "03", "05", "07", "08", "10", "12"})


def _load_scalars() -> Any:
    """check_scalars, when it is compiled from the check_scalars.pyx beside this (``native``), else None."""
    from . import native

    if native.state("check_scalars") != "compiled":
        return None
    from . import check_scalars

    return check_scalars


_SCALARS = _load_scalars()
_SCALAR_KEYWORDS = frozenset({"type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                              "minLength", "maxLength"})  # fmt: skip
_SCALAR_TYPES = frozenset({"string", "boolean", "integer", "number", "null"})


def _scalar_field(schema: Any) -> Any:
    """The ``check_scalars.Field`` of a property schema that asks only what it checks (a type of scalars,
    a string enum, bounds, lengths), else None (the property is checked by generated code)."""
    if _SCALARS is None or not isinstance(schema, dict) or "type" not in schema:
        return None
    if not {k for k in schema if k not in ANNOTATIONS and not k.startswith("x-")} <= _SCALAR_KEYWORDS:
        return None
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if not types or not all(isinstance(t, str) and t in _SCALAR_TYPES for t in types):
        return None
    allowed = schema["enum"] if "enum" in schema else [schema["const"]] if "const" in schema else None
    if allowed is not None and not all(isinstance(a, str) for a in allowed):
        return None
    bits = _SCALARS.CLASS_BITS
    classes = 0
    for cls in {c for t in types for c in _CLASSES[t]} - {type(None)}:  # null: as value_checks lets it pass
        classes |= bits[cls]
    if _allows_null(schema):
        classes |= bits[type(None)]
    return _SCALARS.Field(
        classes, allowed, schema.get("minimum"), schema.get("maximum"), schema.get("exclusiveMinimum"),
        schema.get("exclusiveMaximum"), schema.get("minLength"), schema.get("maxLength"),
    )  # fmt: skip


class Unsupported(Exception):
    """The schema uses a keyword this compiler does not write code for."""


def is_date_time(value: Any) -> bool:
    """The ``date-time`` format exactly as jsonschema checks it (with rfc3339_validator installed)."""
    if not isinstance(value, str):
        return True
    if _RFC3339.match(value) is None:
        return False
    # The pattern put ASCII digits at these places: compared as text, without making numbers of them.
    year, month, day = value[:4], value[5:7], value[8:10]
    if year == "0000" or day == "00":
        return False
    if day <= "28":
        return True
    if day <= "30":
        return month != "02" or (day == "29" and calendar.isleap(int(year)))
    return day == "31" and month in _MONTHS_OF_31_DAYS


def _as_format(check: Callable[[Any], bool], raises: Any) -> Callable[[Any], bool]:
    """A jsonschema format check as a plain predicate (False instead of the exception it may raise)."""

    caught: tuple[type[BaseException], ...] = raises if isinstance(raises, tuple) else (raises,)

    def checked(value: Any) -> bool:
        try:
            return bool(check(value))
        except caught:
            return False

    return checked


def format_checks(schema: dict, checkers: dict[str, tuple[Callable, Any]]) -> dict[str, Callable[[Any], bool]]:
    """The predicates of the formats ``schema`` uses, from jsonschema's format checker's ``checkers``."""
    used = _formats_used(schema)
    out = {name: _as_format(*checkers[name]) for name in used if name in checkers}
    if "date-time" in out:
        out["date-time"] = is_date_time
    return out


def _formats_used(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["format"]} if isinstance(node.get("format"), str) else set()
        return found.union(*(_formats_used(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_formats_used(v) for v in node))
    return set()


def compile_check(schema: dict, formats: dict[str, Callable[[Any], bool]]) -> Callable[[Any], bool]:
    """A function ``check(value) -> bool`` equivalent to validating ``value`` against ``schema`` with
    ``records.strict_validator`` (which is the check itself for a schema with a keyword not compiled here)."""
    try:
        general = _Compiler(formats).compile(schema)
    except Unsupported:
        return records.strict_validator(schema).is_valid
    shaped = {k for k in schema if k not in ANNOTATIONS and not k.startswith("x-")}
    if schema.get("type") == "object" and shaped <= {"type", "properties", "required", "additionalProperties"}:
        return _by_shape(schema, formats, general)
    return general


SHAPES = 512  # key sets with a check of their own; records of other key sets get the general check


def _by_shape(schema: dict, formats: dict[str, Callable[[Any], bool]], general: Callable[[Any], bool]):
    """The check of an object schema specialized to each set of keys it meets (``_Compiler.compile_shape``).

    A sender writes every record with the same keys, and a check of those keys alone reads them all at once,
    with no test for an absent one: a quarter to a half less work than the general check, which also asks for
    every property the record does not have. A shape's check answers None for a record of other keys, so the last
    shape's check is tried first and the record's keys are listed only when it changes. The first ``SHAPES``
    key sets get their own check.
    """
    checks: dict[tuple, Callable[[dict], bool | None]] = {}
    last: list[Callable[[dict], bool | None]] = [lambda value: None]  # the next record's shape, most often

    def check(value: Any) -> bool:
        if value.__class__ is not dict:
            return False
        verdict = last[0](value)
        if verdict is None:
            shape = tuple(value)
            shaped = checks.get(shape)
            if shaped is None:
                if len(checks) >= SHAPES:
                    return general(value)
                shaped = checks[shape] = _Compiler(formats).compile_shape(schema, shape)
            last[0] = shaped
            verdict = shaped(value)
        return verdict

    return check


class _Compiler:
    def __init__(self, formats: dict[str, Callable[[Any], bool]]):
        self.consts: dict[str, Any] = {"_MISSING": object()}  # an absent key (.get(name, _MISSING))
        self.formats = formats
        self.depth = 0

    def compile(self, schema: dict) -> Callable[[Any], bool]:
        # A required key is read with v0[...]: a missing one raises KeyError, caught once for the whole body.
        return self.function(["    try:", *self.emit(schema, "v0", 2), "    except KeyError:", "        return False"])

    def compile_shape(self, schema: dict, shape: tuple) -> Callable[[dict], bool | None]:
        """The check of the dicts whose keys are those of ``shape`` (an object schema: properties, required,
        additionalProperties): None for a dict of other keys."""
        names = [self.fresh() for _ in shape]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        schemas = [props[name] if name in props else extra for name in shape]
        # The fields check_scalars checks in one call (of a tuple: itemgetter of several keys); None: written here.
        in_c = [_scalar_field(s) for s in schemas] if len(shape) > 1 else [None] * len(shape)
        c_checks = any(f is not None for f in in_c)
        # As many keys, every one of them present: the same keys (in any order, as they are read by name).
        body = [f"    if len(v0) != {len(shape)}:", "        return None"]
        if shape:  # itemgetter of one key gives its value, of several a tuple: one assignment reads both
            read = self.const(operator.itemgetter(*shape))
            target = ", ".join(names) + (" = values" if c_checks else "")
            body += ["    try:", f"        {target} = {read}(v0)", "    except KeyError:", "        return None"]
        if not set(schema.get("required", ())) <= set(shape):
            return self.function([*body, "    return False"])
        if c_checks:
            body += [f"    if not {self.const(_SCALARS.scalars_ok)}(values, {self.const(tuple(in_c))}):",
                     "        return False"]  # fmt: skip
        for sub, var, field in zip(schemas, names, in_c, strict=True):
            if field is None:
                body += self.value_checks(sub, var, 1)
        return self.function(body)

    def function(self, body: list[str]) -> Callable[[Any], bool]:
        source = "\n".join(["def check(v0):", *body, "    return True", ""])
        namespace = dict(self.consts)
        exec(compile(source, "<compiled log_record schema>", "exec"), namespace)  # noqa: S102 (our own code)
        return namespace["check"]

    def const(self, value: Any) -> str:
        name = f"_C{len(self.consts)}"
        self.consts[name] = value
        return name

    def emit(self, schema: Any, var: str, ind: int, *, not_null: bool = False) -> list[str]:
        """Lines that ``return False`` when ``var`` does not match ``schema`` (``not_null``: ``var`` is known
        not to be None)."""
        if schema is True or schema == {}:
            return []
        if schema is False:
            return ["    " * ind + "return False"]
        unknown = set(schema) - SUPPORTED - {k for k in schema if k.startswith("x-")}
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        types = schema.get("type")
        if isinstance(types, str):
            types = [types]
        pad = "    " * ind
        out = [pad + f"if not ({self.type_test(types, var, not_null)}):", pad + "    return False"] if types else []
        # What the value's class can be past the type test: a check of one kind of value needs no class test.
        classes = {c for t in types for c in _CLASSES[t]} if types else None
        if classes is not None and not_null:
            classes.discard(type(None))
        out += self.scalar_checks(schema, var, ind, classes)
        if any(k in schema for k in ("properties", "required", "additionalProperties")):
            out += self.object_checks(schema, var, ind, bare=types == ["object"])
        if "items" in schema:
            item = self.fresh()
            inner = self.emit(schema["items"], item, ind + 2)
            if inner:
                out += [pad + f"if {var}.__class__ is list:", pad + f"    for {item} in {var}:", *inner]
        return out

    def property_checks(self, schema: Any, obj: str, key: str, ind: int, *, present: bool) -> list[str]:
        """Lines that read ``obj[key]`` into a fresh variable and check it (``key``: an expression). If not
        ``present``, an absent key passes."""
        val = self.fresh()
        checks = self.value_checks(schema, val, ind)
        if not checks:
            return []
        pad = "    " * ind
        if present:
            return [pad + f"{val} = {obj}[{key}]", *checks]
        if _allows_null(schema):  # absent and null both pass: one test for the two
            return [pad + f"{val} = {obj}.get({key})", *checks]
        return [pad + f"{val} = {obj}.get({key}, _MISSING)", pad + f"if {val} is not _MISSING:",
                *("    " + line for line in checks)]  # fmt: skip

    def value_checks(self, schema: Any, val: str, ind: int) -> list[str]:
        """Lines that check the value in ``val``: a null is not checked further where the schema allows it."""
        if not _allows_null(schema):
            return self.emit(schema, val, ind)
        checks = self.emit(schema, val, ind + 1, not_null=True)
        return ["    " * ind + f"if {val} is not None:", *checks] if checks else []

    def fresh(self) -> str:
        self.depth += 1
        return f"v{self.depth}"

    def type_test(self, types: list[str], var: str, not_null: bool) -> str:
        """A test that ``var`` is of one of ``types`` (``not_null``: it is known not to be None)."""
        if not set(types) <= set(_CLASSES):
            raise Unsupported(f"type {types}")
        tests = []
        for cls in dict.fromkeys(c for t in types for c in _CLASSES[t]):
            if cls is not type(None):
                tests.append(f"{var}.__class__ is {cls.__name__}")
            elif not not_null:
                tests.append(f"{var} is None")
        return " or ".join(tests) or "False"

    def scalar_checks(self, schema: dict, var: str, ind: int, classes: set[type] | None) -> list[str]:
        """Checks of a string's or a number's value; ``classes``: what ``var``'s class is known to be among."""
        pad, out = "    " * ind, []
        is_str = "" if classes and classes <= {str} else f"{var}.__class__ is str and "
        is_num = "" if classes and classes <= {int, float} else f"{var}.__class__ in {self.const(frozenset({int, float}))} and "
        if "enum" in schema or "const" in schema:
            allowed = schema["enum"] if "enum" in schema else [schema["const"]]
            if not all(isinstance(a, str) for a in allowed):
                raise Unsupported("enum or const of other values than strings")
            test = "" if is_str == "" else f"{var}.__class__ is not str or "  # unhashable values never reach `in`
            out += [pad + f"if {test}{var} not in {self.const(frozenset(allowed))}:", pad + "    return False"]
        # The bounds in one test (a NaN, which passes them all in JSON Schema, fails it: only slower).
        bounds = [f"{var} {op} {schema[key]!r}" for key, op in (("minimum", ">="), ("maximum", "<="),
                  ("exclusiveMinimum", ">"), ("exclusiveMaximum", "<")) if key in schema]  # fmt: skip
        if bounds:
            out += [pad + f"if {is_num}not ({' and '.join(bounds)}):", pad + "    return False"]
        if schema.get("minLength") == 1 and is_str == "":  # the common "not empty", without a call to len
            out += [pad + f"if not {var}:", pad + "    return False"]
        elif "minLength" in schema:
            out += [pad + f"if {is_str}len({var}) < {schema['minLength']!r}:", pad + "    return False"]
        if "maxLength" in schema:
            out += [pad + f"if {is_str}len({var}) > {schema['maxLength']!r}:", pad + "    return False"]
        if "pattern" in schema:
            pattern = self.const(re.compile(schema["pattern"]))
            out += [pad + f"if {is_str}not {pattern}.search({var}):", pad + "    return False"]
        if "format" in schema and schema["format"] in self.formats:
            check = self.const(self.formats[schema["format"]])
            test = f"{check}({var})"
            if self.formats[schema["format"]] is is_date_time:  # most decided by one regex, without a call
                test = f"({self.const(_COMMON_DATE_TIME)}({var}) or {test})"
            out += [pad + f"if {is_str}not {test}:", pad + "    return False"]
        return out

    def object_checks(self, schema: dict, var: str, ind: int, *, bare: bool) -> list[str]:
        """Checks of an object's keys; ``bare``: ``var`` is known to be a dict (no class test needed)."""
        pad = "    " * ind
        out: list[str] = [] if bare else [pad + f"if {var}.__class__ is dict:"]
        inner = ind if bare else ind + 1
        ipad = "    " * inner
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        for name, sub in props.items():
            out += self.property_checks(sub, var, repr(name), inner, present=name in required)
        for name in sorted(required - set(props)):
            out += [ipad + f"if {name!r} not in {var}:", ipad + "    return False"]
        extra = schema.get("additionalProperties", True)
        key, val = self.fresh(), self.fresh()
        checks = self.emit(extra, val, inner + 2)
        if checks and not props:  # every value is an additional one
            out += [ipad + f"for {val} in {var}.values():", *(line[4:] for line in checks)]
        elif checks:
            known = self.const(frozenset(props))
            out += [ipad + f"for {key}, {val} in {var}.items():", ipad + f"    if {key} not in {known}:", *checks]
        if not bare and len(out) == 1:
            return []
        return out
