"""The proxy's compiled modules (``proxy/native.py``): built by the install, current, used, and reading,
mapping and checking exactly as their sources do.

The rest of the suite runs on the compiled modules (the install builds them). Here the source of each
compiled ``.py`` module is loaded beside it and both are given the same generated spans and lines: the
mapping of a span to its record, the intake of NDJSON lines with hostile ones among them. A stale module
(its source edited after the build) runs from source, with a warning, in a process of its own.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

from bifrost_pipeline.proxy import intake, native, otlp, otlp_wire
from bifrost_pipeline.proxy.pricing import Pricing

from .test_otlp_wire import FIXTURES, values
from .test_otlp_wire import spans as generated_spans

REPO = Path(__file__).resolve().parents[2]
PROXY = REPO / "bifrost_pipeline" / "proxy"
NATIVE_WANTED = os.environ.get("BIFROST_NATIVE", "1") != "0"


def test_every_module_is_compiled_from_its_current_source():
    """What the install builds (setup.py) is there and current: the figures in docs/benchmarks.md are those
    of the compiled modules. BIFROST_NATIVE=0 runs the whole suite from source instead."""
    if not NATIVE_WANTED:
        pytest.skip("BIFROST_NATIVE=0: everything runs from source")
    assert native.states() == dict.fromkeys(native.NATIVE_MODULES, "compiled"), (
        "the proxy's compiled modules are missing or stale: run `make install`"
    )
    for name in native.NATIVE_MODULES:
        module = sys.modules.get(f"bifrost_pipeline.proxy.{name}") or importlib.import_module(
            f"bifrost_pipeline.proxy.{name}"
        )
        assert Path(module.__file__).suffix in (".so", ".pyd"), module.__file__
    assert otlp_wire._scan is not None


def _source_module(name: str):
    """The ``.py`` source of a compiled module, loaded beside it (its relative imports get the compiled ones)."""
    spec = importlib.util.spec_from_file_location(f"bifrost_pipeline.proxy._source_{name}", PROXY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "bifrost_pipeline.proxy"
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def source_otlp():
    return _source_module("otlp")


@pytest.fixture(scope="module")
def source_intake():
    return _source_module("intake")


def outcome(call, *args, **kwargs):
    try:
        return "value", call(*args, **kwargs)
    except Exception as err:
        return "raised", (type(err).__name__, str(err))


# Attribute names the mapping reads, and values of every kind for them, as emitters send them and not.
READ_NAMES = sorted(
    {name for names in otlp.READS.values() for name in names}
    | set(otlp.REQUEST_PARAM_ATTRIBUTES.values())
    | {"bifrost." + f for f in otlp.BIFROST_FIELDS}
    | {"gen_ai.tool.definitions", "metadata.usage_object", "litellm.call_id", "gen_ai.response.id", "service.name"}
)
texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "0", "12", "-3", "1e999", "nan", "true", "False", "chat", "openai/gpt-4o", "POST",
                     "<class 'openai.NotFoundError'>", '["stop"]', "[]", "{}", "[1,", '[{"type":"tool_call"}]',
                     '[{"role":"assistant","parts":[{"type":"tool_call","id":"c1","name":"f","arguments":{"a":1}}]}]',
                     "{'prompt_tokens': 5, 'completion_tokens_details': {'reasoning_tokens': 2}}",
                     "{'prompt_tokens': 1e999, 'completion_tokens': 123456789012345678901234567890}"]),
)  # fmt: skip
attribute_values = st.one_of(
    st.builds(lambda s: AnyValue(string_value=s), texts),
    st.builds(lambda i: AnyValue(int_value=i), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda d: AnyValue(double_value=d), st.floats()),
    st.builds(lambda b: AnyValue(bool_value=b), st.booleans()),
    st.builds(lambda vs: AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=v) for v in vs])), st.lists(texts, max_size=3)),
    values,
)
genai_attributes = st.lists(st.tuples(st.sampled_from(READ_NAMES), attribute_values), max_size=25)


@st.composite
def genai_requests(draw) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([KeyValue(key=k, value=v) for k, v in draw(genai_attributes)[:3]])
    for span in draw(st.lists(generated_spans(), min_size=1, max_size=3)):
        span.attributes.extend([KeyValue(key=k, value=v) for k, v in draw(genai_attributes)])
        span.name = draw(st.sampled_from([span.name, "chat gpt-4o", "gen_ai.embeddings", "litellm_request"]))
        rs.scope_spans.add().spans.append(span)
    return req.SerializeToString()


class StoppedClock(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=tz)


@pytest.fixture(autouse=True, scope="module")
def _restore_clock():
    yield
    otlp.datetime = datetime


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(genai_requests(), st.booleans())
def test_compiled_and_source_map_generated_spans_the_same(source_otlp, source_intake, body, content):
    """Span by span, and a request's batch as a whole (records, rejects and their reasons)."""
    for module in (otlp, source_otlp):
        module.datetime = StoppedClock  # a span without a start time is stamped with the time it arrives
    pricing = Pricing()
    spans = list(otlp_wire.decode_spans(body))
    for span in spans:
        compiled = outcome(otlp.span_to_record, span, customer_id="c", content=content, pricing=pricing)
        source = outcome(source_otlp.span_to_record, span, customer_id="c", content=content, pricing=pricing)
        assert compiled == source
    compiled_batch = intake.convert_spans(spans, customer_id="c", content=content, pricing=pricing)
    source_batch = source_intake.convert_spans(spans, customer_id="c", content=content, pricing=pricing)
    assert vars(compiled_batch) == vars(source_batch)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.traces.*")), ids=lambda p: p.name)
def test_compiled_and_source_read_recorded_emitters_the_same(source_otlp, source_intake, path):
    body = path.read_bytes()
    content_type = "application/json" if path.suffix == ".json" else "application/x-protobuf"
    pricing = Pricing()
    batches = []
    for module, intake_module in ((otlp, intake), (source_otlp, source_intake)):
        spans, _ = module.decode(body, content_type)
        batches.append(vars(intake_module.convert_spans(list(spans), customer_id="c", content=True, pricing=pricing)))
    assert batches[0] == batches[1]
    assert batches[0]["groups"] or batches[0]["skipped"]  # a second export of an emitter may hold no GenAI span


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=5,
)


@st.composite
def ndjson_bodies(draw) -> bytes:
    """Valid records with fields changed, removed or added, and lines that are not JSON at all."""
    lines = []
    for i in range(draw(st.integers(1, 6))):
        rec = {
            "schema_version": "1",
            "timestamp": draw(st.sampled_from(["2026-03-04T05:06:07Z", "2026-02-29T00:00:00Z", "2024-02-29T23:59:59.5+01:00", "x"])),
            "request_id": f"r{i}",
            "customer_id": "c",
            "provider": "openai",
            "model": "gpt-4o",
            "status": draw(st.sampled_from(["success", "error", "nope"])),
            "latency_ms": draw(st.one_of(st.integers(-5, 10**10), st.floats(), st.text(max_size=3))),
        }  # fmt: skip
        for key in draw(st.lists(st.sampled_from(sorted(rec)), max_size=2)):
            rec.pop(key, None)
        for key, value in draw(st.lists(st.tuples(st.sampled_from(["input_tokens", "cost_usd", "stream", "metadata", "zz"]), json_values), max_size=3)):
            rec[key] = value
        line = orjson.dumps(rec, option=orjson.OPT_NON_STR_KEYS)
        lines.append(draw(st.sampled_from([line, line[:-3], b"not json", b"", b"  " + line])))
    return b"\n".join(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ndjson_bodies(), st.booleans())
def test_compiled_and_source_take_ndjson_lines_the_same(source_intake, body, strip_content):
    assert outcome(intake.process_batch, body, strip_content=strip_content) == outcome(
        source_intake.process_batch, body, strip_content=strip_content
    )


# --- a stale module -----------------------------------------------------------------------------------------


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the package with its compiled modules, to edit a source in."""
    if native.states() != dict.fromkeys(native.NATIVE_MODULES, "compiled"):
        pytest.skip("needs the compiled modules (make install)")
    shutil.copytree(REPO / "bifrost_pipeline", tmp_path / "bifrost_pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    return tmp_path


def _run(root: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "BIFROST_PIPELINE_SCHEMAS": str(root / "schemas")}
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60)


def test_a_module_edited_after_the_build_runs_from_source_with_a_warning(package_copy):
    with open(package_copy / "bifrost_pipeline" / "proxy" / "otlp.py", "a") as fh:
        fh.write("\nEDITED = True\n")
    done = _run(
        package_copy,
        "from bifrost_pipeline.proxy import native, otlp, intake; "
        "print(native.state('otlp'), native.state('intake'), otlp.__file__.endswith('.py'), otlp.EDITED, "
        "intake.__file__.endswith('.py'))",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["stale", "compiled", "True", "True", "False"]
    assert "bifrost_pipeline.proxy.otlp: the compiled module was built from another version of otlp.py" in done.stderr


@pytest.mark.parametrize(
    ("source", "user"),
    [("otlp_scan.pyx", "otlp_wire._scan"), ("check_scalars.pyx", "compiled_schema._SCALARS")],
    ids=["scanner", "field checks"],
)
def test_a_pyx_module_edited_after_the_build_is_not_used(package_copy, source, user):
    """A .pyx module has no Python twin to run instead: the module that uses it goes without it."""
    with open(package_copy / "bifrost_pipeline" / "proxy" / source, "a") as fh:
        fh.write("\n# edited\n")
    module = user.split(".")[0]
    done = _run(package_copy, f"from bifrost_pipeline.proxy import {module}; print({user})")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"


def test_bifrost_native_0_runs_everything_from_source(package_copy):
    env_code = (
        "import os; os.environ['BIFROST_NATIVE'] = '0'\n"
        "from bifrost_pipeline.proxy import native, otlp, otlp_wire, record, compiled_schema\n"
        "print(set(native.states().values()), otlp.__file__.endswith('.py'), record.__file__.endswith('.py'), otlp_wire._scan, "
        "compiled_schema._SCALARS)"
    )
    done = _run(package_copy, env_code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["{'disabled'}", "True", "True", "None", "None"]
    assert "compiled module was built from another version" not in done.stderr
