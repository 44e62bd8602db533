"""The JSON Schema of the record compiled to one Python function that says valid or not, for the intake's
hot path (a few microseconds a record, where jsonschema takes about 150).

``compile_check(schema)`` writes straight-line code for the keywords the record's schema uses (type, enum,
const, minimum/maximum, minLength/maxLength, pattern, format, required, properties, additionalProperties,
items; annotations are skipped). A schema with any other keyword is compiled by fastjsonschema instead, so a
new keyword in ``schemas/`` is still checked, only more slowly. Either way it is a filter: a record it calls
invalid is explained (or, if the two ever disagree, accepted) by the reference, jsonschema (``intake``), and
``test_compiled_schema`` checks on a generated corpus that they agree.

Formats are checked with the functions jsonschema's format checker uses (date-time matched the way
rfc3339_validator does, without upper-casing each value first).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from typing import Any

import fastjsonschema

ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "examples", "default", "deprecated", "readOnly",
     "writeOnly"}
)
SUPPORTED = ANNOTATIONS | {
    "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
    "maxLength", "pattern", "format", "required", "properties", "additionalProperties", "items",
}  # fmt: skip
# A JSON type -> the classes of its decoded values (bool is not an int here: the test is on the exact class).
_CLASSES: dict[str, tuple[type, ...]] = {"string": (str,), "boolean": (bool,), "null": (type(None),),
    "object": (dict,), "array": (list,), "number": (int, float), "integer": (int,)}  # fmt: skip

# rfc3339_validator's pattern (what jsonschema's date-time check calls), case-insensitive instead of
# upper-casing every value first.
_RFC3339 = re.compile(
    r"^(\d{4})-(0[1-9]|1[0-2])-(\d{2})T(?:[01]\d|2[0123]):[0-5]\d:[0-5]\d(?:\.\d+)?"
    r"(?:Z|[+-](?:[01]\d|2[0123]):[0-5]\d)$",
    re.ASCII | re.IGNORECASE,
)


class Unsupported(Exception):
    """The schema uses a keyword this compiler does not write code for."""


def is_date_time(value: Any) -> bool:
    """The ``date-time`` format exactly as jsonschema checks it (with rfc3339_validator installed)."""
    if not isinstance(value, str):
        return True
    m = _RFC3339.match(value)
    if m is None:
        return False
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    return year != 0 and 1 <= day and (day <= 28 or day <= calendar.monthrange(year, month)[1])


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
    """A function ``check(value) -> bool`` equivalent to validating ``value`` against ``schema``."""
    try:
        return _Compiler(formats).compile(schema)
    except Unsupported:
        validate = fastjsonschema.compile(schema, formats=formats, use_default=False)
        invalid = fastjsonschema.JsonSchemaValueException

        def check(value: Any) -> bool:
            try:
                validate(value)
            except invalid:
                return False
            return True

        return check


class _Compiler:
    def __init__(self, formats: dict[str, Callable[[Any], bool]]):
        self.consts: dict[str, Any] = {"_MISSING": object()}
        self.formats = formats
        self.depth = 0

    def compile(self, schema: dict) -> Callable[[Any], bool]:
        # A required key is read with v0[...]: a missing one raises KeyError, caught once for the whole body.
        body = self.emit(schema, "v0", 2)
        source = "def check(v0):\n    try:\n" + "\n".join(body) + "\n    except KeyError:\n        return False\n"
        source += "    return True\n"
        namespace = dict(self.consts)
        exec(compile(source, "<compiled log_record schema>", "exec"), namespace)  # noqa: S102 (our own code)
        return namespace["check"]

    def const(self, value: Any) -> str:
        name = f"_C{len(self.consts)}"
        self.consts[name] = value
        return name

    def emit(self, schema: Any, var: str, ind: int) -> list[str]:
        """Lines that ``return False`` when ``var`` does not match ``schema``."""
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
        out = [pad + f"if not ({self.type_test(types, var)}):", pad + "    return False"] if types else []
        out += self.scalar_checks(schema, var, ind)
        if any(k in schema for k in ("properties", "required", "additionalProperties")):
            out += self.object_checks(schema, var, ind, bare=types == ["object"])
        if "items" in schema:
            item = self.fresh()
            inner = self.emit(schema["items"], item, ind + 2)
            if inner:
                out += [pad + f"if {var}.__class__ is list:", pad + f"    for {item} in {var}:", *inner]
        return out

    def fresh(self) -> str:
        self.depth += 1
        return f"v{self.depth}"

    def type_test(self, types: list[str], var: str) -> str:
        if not set(types) <= set(_CLASSES):
            raise Unsupported(f"type {types}")
        tests = []
        for cls in dict.fromkeys(c for t in types for c in _CLASSES[t]):
            tests.append(f"{var} is None" if cls is type(None) else f"{var}.__class__ is {cls.__name__}")
        if "integer" in types and "number" not in types:  # JSON Schema: 1.0 is an integer
            tests.append(f"({var}.__class__ is float and {var}.is_integer())")
        return " or ".join(tests)

    def scalar_checks(self, schema: dict, var: str, ind: int) -> list[str]:
        pad, out = "    " * ind, []
        if "enum" in schema or "const" in schema:
            allowed = schema["enum"] if "enum" in schema else [schema["const"]]
            if not all(isinstance(a, str) for a in allowed):
                raise Unsupported("enum or const of other values than strings")
            only_str = schema.get("type") in ("string", ["string"])  # then the type test ran: no class test here
            test = "" if only_str else f"{var}.__class__ is not str or "
            out += [pad + f"if {test}{var} not in {self.const(frozenset(allowed))}:"]
            out += [pad + "    return False"]
        num = f"{var}.__class__ in {self.const(frozenset({int, float}))}"
        for key, op in (("minimum", "<"), ("maximum", ">"), ("exclusiveMinimum", "<="), ("exclusiveMaximum", ">=")):
            if key in schema:
                out += [pad + f"if {num} and {var} {op} {schema[key]!r}:", pad + "    return False"]
        for key, op in (("minLength", "<"), ("maxLength", ">")):
            if key in schema:
                out += [pad + f"if {var}.__class__ is str and len({var}) {op} {schema[key]!r}:", pad + "    return False"]
        if "pattern" in schema:
            pattern = self.const(re.compile(schema["pattern"]))
            out += [pad + f"if {var}.__class__ is str and not {pattern}.search({var}):", pad + "    return False"]
        if "format" in schema and schema["format"] in self.formats:
            check = self.const(self.formats[schema["format"]])
            out += [pad + f"if {var}.__class__ is str and not {check}({var}):", pad + "    return False"]
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
            val = self.fresh()
            if name in required:
                out += [ipad + f"{val} = {var}[{name!r}]", *self.emit(sub, val, inner)]
                continue
            out += [ipad + f"{val} = {var}.get({name!r}, _MISSING)"]
            checks = self.emit(sub, val, inner + 1)
            if checks:
                out += [ipad + f"if {val} is not _MISSING:", *checks]
        for name in sorted(required - set(props)):
            out += [ipad + f"if {name!r} not in {var}:", ipad + "    return False"]
        extra = schema.get("additionalProperties", True)
        if extra is not True and extra != {}:
            key, val = self.fresh(), self.fresh()
            known = self.const(frozenset(props))
            checks = self.emit(extra, val, inner + 2)
            out += [ipad + f"for {key}, {val} in {var}.items():", ipad + f"    if {key} not in {known}:", *checks]
        if not bare and len(out) == 1:
            return []
        return out
