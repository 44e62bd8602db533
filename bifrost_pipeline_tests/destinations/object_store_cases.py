"""Hand-built partitions in every format x compression, and the checks every object store must pass.

Each store's test module gives a `Store` (how to build its destination, list and read its objects, make a
bucket); the checks here compare what landed with what the local destination writes for the same output.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from bifrost_pipeline.destinations.base import DatasetFile, Destination, DestinationError, PartitionOutput
from bifrost_pipeline.destinations.local import LocalDestination
from bifrost_pipeline_tests.destinations.context import context
from bifrost_pipeline_tests.helpers import make_app

FORMATS = (
    [("parquet", c) for c in ("none", "gzip", "zstd", "snappy")]
    + [("json", c) for c in ("none", "gzip", "zstd")]
    + [("csv", c) for c in ("none", "gzip", "zstd")]
)
EXTENSIONS = {"parquet": "parquet", "json": "ndjson", "csv": "csv"}
SUFFIXES = {"none": "", "gzip": ".gz", "zstd": ".zst", "snappy": ""}
PREFIX = "{export}/{year}/{month}/{day}/"
DAY = "2024-01-15"


def frame(dataset: str, n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": [f"2024-01-15T{i % 24:02d}:00:00.000000Z" for i in range(n)],
            "request_id": [f"{dataset}_{i}" for i in range(n)],
            "provider": ["openai" if i % 3 else "anthropic" for i in range(n)],
            "status_code": [500 if i % 7 == 0 else 200 for i in range(n)],
            "latency_ms": [10 * i for i in range(n)],
            "cost_usd": [round(0.001 * i, 6) for i in range(n)],
        }
    )


def compress(data: bytes, codec: str) -> bytes:
    if codec == "gzip":
        return gzip.compress(data, mtime=0)
    if codec == "zstd":
        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, "zstd") as out:
            out.write(data)
        return sink.getvalue().to_pybytes()
    return data


def decompress(data: bytes, codec: str) -> bytes:
    if codec == "gzip":
        return gzip.decompress(data)
    if codec == "zstd":
        return pa.input_stream(pa.py_buffer(data), compression="zstd").read()
    return data


def read_back(data: bytes, fmt: str, codec: str) -> pl.DataFrame:
    if fmt == "parquet":
        return pl.read_parquet(io.BytesIO(data))
    raw = io.BytesIO(decompress(data, codec))
    return pl.read_ndjson(raw) if fmt == "json" else pl.read_csv(raw)


def stage(df: pl.DataFrame, dataset: str, fmt: str, codec: str, work: Path) -> DatasetFile:
    work.mkdir(parents=True, exist_ok=True)
    name = f"{dataset}.{EXTENSIONS[fmt]}{SUFFIXES[codec] if fmt != 'parquet' else ''}"
    path = work / name
    parquet = work / f".{dataset}.load.parquet"
    df.write_parquet(parquet)
    if fmt == "parquet":
        df.write_parquet(path, compression="uncompressed" if codec == "none" else codec)
    else:
        buf = io.BytesIO()
        df.write_ndjson(buf) if fmt == "json" else df.write_csv(buf)
        path.write_bytes(compress(buf.getvalue(), codec))
    data = path.read_bytes()
    return DatasetFile(
        dataset=dataset,
        path=path,
        file_name=name,
        rows=df.height,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        parquet_path=parquet if fmt != "parquet" else path,
        columns=tuple((n, str(t)) for n, t in df.schema.items()),
    )


def output(
    work: Path,
    fmt: str = "parquet",
    codec: str = "zstd",
    datasets: dict[str, int] | None = None,
    *,
    export: str = "e",
    day: str = DAY,
    run_id: str | None = None,
) -> PartitionOutput:
    datasets = datasets or {"request_logs": 25, "error_logs": 4}
    run_id = run_id or uuid.uuid4().hex[:8]
    files = [stage(frame(d, n), d, fmt, codec, work / run_id) for d, n in datasets.items()]
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return PartitionOutput(
        export=export,
        partition_key=day,
        window_start=start,
        window_end=start + timedelta(days=1),
        format=fmt,
        compression=codec,
        files=tuple(files),
        exported_at=datetime(2024, 1, 16, 2, 0, tzinfo=UTC),
        run_id=run_id,
    )


def big_file_output(work: Path, size: int, name: str = "request_logs.parquet") -> PartitionOutput:
    """One incompressible file of `size` bytes (the content is not read as Parquet: upload paths only)."""
    import os

    work.mkdir(parents=True, exist_ok=True)
    path = work / name
    with open(path, "wb") as fh:
        fh.write(os.urandom(size))
    data = path.read_bytes()
    f = DatasetFile("request_logs", path, name, 1, size, hashlib.sha256(data).hexdigest(), path, ())
    start = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
    return PartitionOutput("big", DAY, start, start + timedelta(days=1), "parquet", "none", (f,), start, "run-big")


@dataclass
class Store:
    """What a test module tells the shared checks about its store."""

    name: str  # s3, gcs, azure_blob
    uri_scheme: str  # s3://bucket, gs://bucket, az://account/container
    make: Callable[..., Destination]  # make(bucket, prefix=..., **config overrides)
    objects: Callable[[str, str], dict[str, bytes]]  # objects(bucket, under) -> {key: content}
    new_bucket: Callable[[], str]  # creates an empty bucket/container, returns its name

    def uri(self, bucket: str) -> str:
        return self.uri_scheme.format(bucket=bucket)


def local_copy(tmp_path: Path, out: PartitionOutput) -> tuple[dict[str, bytes], dict]:
    """What the local destination writes for `out`: {relative key: bytes}, and its manifest."""
    config = LocalDestination.Config(path=str(tmp_path / "local-out"), prefix=PREFIX)
    result = LocalDestination(config, context(out.export, tmp_path / "local-app")).write_partition(out)
    root = Path(result.location)
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return files, json.loads(files["_manifest.json"])


# --- the checks ----------------------------------------------------------------------------------------------


DOCS = Path(__file__).resolve().parents[2] / "docs" / "destinations-object-stores.md"


def doc_example(kind: str) -> dict:
    """The config example of docs/destinations-object-stores.md marked `<!-- example: KIND -->`."""
    import re

    import yaml

    match = re.search(rf"<!-- example: {kind} -->\s*```yaml\n(.*?)```", DOCS.read_text(), re.S)
    assert match, f"no example for {kind} in {DOCS}"
    return yaml.safe_load(match.group(1))


def check_doc_example(kind: str, env: dict[str, str]) -> Any:
    from bifrost_pipeline.config import parse_config

    app = parse_config(doc_example(kind), env=env)
    (export,) = app.exports
    assert export.destination.type == kind
    return export.destination.config


def check_round_trip(store: Store, tmp_path: Path, fmt: str, codec: str) -> None:
    bucket = store.new_bucket()
    out = output(tmp_path / "stage", fmt, codec)
    dest = store.make(bucket, prefix=PREFIX)
    result = dest.write_partition(out)

    prefix = "e/2024/01/15/"  # the rendered template
    assert result.location == store.uri(bucket) + "/" + prefix
    landed = store.objects(bucket, "")
    assert set(landed) == {prefix + f.file_name for f in out.files} | {prefix + "_manifest.json"}
    assert result.written == [store.uri(bucket) + "/" + k for k in [prefix + f.file_name for f in out.files]] + [
        store.uri(bucket) + "/" + prefix + "_manifest.json"
    ]

    local, local_manifest = local_copy(tmp_path, out)
    manifest = json.loads(landed[prefix + "_manifest.json"])
    assert {k: v for k, v in manifest.items() if k != "prefix"} == {
        k: v for k, v in local_manifest.items() if k != "prefix"
    }
    assert manifest["prefix"] == prefix
    for f in out.files:
        data = landed[prefix + f.file_name]
        assert data == local[f.file_name]  # byte for byte what the local destination wrote
        entry = next(e for e in manifest["files"] if e["name"] == f.file_name)
        assert entry == {
            "dataset": f.dataset,
            "name": f.file_name,
            "rows": f.rows,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        back = read_back(data, fmt, codec)
        expected = frame(f.dataset, f.rows)
        assert back.height == f.rows
        assert back["request_id"].to_list() == expected["request_id"].to_list()
        assert back["latency_ms"].to_list() == expected["latency_ms"].to_list()


def check_rematerialize(store: Store, tmp_path: Path) -> None:
    bucket = store.new_bucket()
    dest = store.make(bucket, prefix="exports/{export}/{partition}/")
    first = output(tmp_path / "s1", "json", "gzip", {"request_logs": 10, "error_logs": 3, "response_logs": 5})
    other_day = output(tmp_path / "s0", "json", "gzip", {"request_logs": 2}, day="2024-01-14")
    dest.write_partition(other_day)
    dest.write_partition(first)
    before = store.objects(bucket, "exports/e/2024-01-15/")
    assert len(before) == 4

    second = output(tmp_path / "s2", "json", "gzip", {"request_logs": 7})
    calls = _record_calls(dest)
    result = dest.write_partition(second)

    after = store.objects(bucket, "exports/e/2024-01-15/")
    assert set(after) == {"exports/e/2024-01-15/request_logs.ndjson.gz", "exports/e/2024-01-15/_manifest.json"}
    manifest = json.loads(after["exports/e/2024-01-15/_manifest.json"])
    assert manifest["run_id"] == second.run_id
    assert [(f["name"], f["rows"]) for f in manifest["files"]] == [("request_logs.ndjson.gz", 7)]
    assert read_back(after["exports/e/2024-01-15/request_logs.ndjson.gz"], "json", "gzip").height == 7
    assert sorted(result.removed) == [
        store.uri(bucket) + "/exports/e/2024-01-15/error_logs.ndjson.gz",
        store.uri(bucket) + "/exports/e/2024-01-15/response_logs.ndjson.gz",
    ]
    # The other partition is untouched.
    assert set(store.objects(bucket, "exports/e/2024-01-14/")) == {
        "exports/e/2024-01-14/request_logs.ndjson.gz",
        "exports/e/2024-01-14/_manifest.json",
    }
    # Order: data first, then the stale objects go, then the manifest, last.
    assert [c[0] for c in calls] == ["read_bytes", "put_file", "delete", "put_bytes"]
    assert calls[-1][1].endswith("_manifest.json")


def _record_calls(dest: Destination) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []
    for name in ("read_bytes", "put_file", "delete", "put_bytes"):
        original = getattr(dest, name)

        def spy(*args, _name=name, _original=original):
            key = args[1] if _name in ("put_file", "put_bytes") else args[0]
            calls.append((_name, key))
            return _original(*args)

        setattr(dest, name, spy)
    return calls


def expect_error(dest: Destination, out: PartitionOutput, *fragments: str, retryable: bool = False) -> str:
    with pytest.raises(DestinationError) as caught:
        dest.write_partition(out)
    message = str(caught.value)
    assert message.startswith(f"export {out.export!r} -> "), message
    for fragment in fragments:
        assert fragment in message, message
    assert caught.value.retryable is retryable, message
    return message


def check_upload_streams(dest: Destination, tmp_path: Path, size_mb: int, limit_mb: int) -> None:
    """Publishing a `size_mb` file allocates at most `limit_mb` in Python at any time: it is read from disk
    part by part, never whole."""
    import tracemalloc

    out = big_file_output(tmp_path, size_mb * 1024 * 1024)
    tracemalloc.start()
    try:
        dest.write_partition(out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit_mb * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a {size_mb} MiB file"



def check_run_export(store: Store, tmp_path: Path, destination: dict) -> None:
    """The pipeline core's run_export, configured with `destination`, publishes into the store."""
    from bifrost_pipeline import validation
    from bifrost_pipeline.exports import run_export
    from bifrost_pipeline_tests.helpers import DAY as RAW_DAY
    from bifrost_pipeline_tests.helpers import land, record, utc

    bucket = destination["config"].get("bucket") or destination["config"].get("container")
    entry = {
        "name": "core_export",
        "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
        "destination": destination,
        "data": {"format": "csv", "compression": "gzip", "include": ["request_logs", "error_logs"]},
    }
    app = make_app(tmp_path, [entry])
    rows = [record(request_id=f"r{i}", timestamp=f"2024-01-15T{i:02d}:30:00Z", status_code=500 if i == 3 else 200,
                   status="error" if i == 3 else "success") for i in range(6)]
    land(app, rows, when=utc(2024, 1, 15, 0))
    validation.validate_day(app, RAW_DAY)
    run = run_export(app, app.exports[0], "2024-01-15")
    prefix = "core/2024/01/15/"
    landed = store.objects(bucket, prefix)
    assert set(landed) == {prefix + n for n in ("request_logs.csv.gz", "error_logs.csv.gz", "_manifest.json")}
    assert run.written.location == store.uri(bucket) + "/" + prefix
    back = read_back(landed[prefix + "request_logs.csv.gz"], "csv", "gzip")
    assert sorted(back["request_id"].to_list()) == [f"r{i}" for i in range(6)]
    assert read_back(landed[prefix + "error_logs.csv.gz"], "csv", "gzip")["request_id"].to_list() == ["r3"]
    manifest = json.loads(landed[prefix + "_manifest.json"])
    assert [(f["name"], f["rows"]) for f in manifest["files"]] == [("request_logs.csv.gz", 6), ("error_logs.csv.gz", 1)]


def check_count_rows(dest: Destination, tmp_path: Path) -> None:
    """`count_rows` reads the manifest back from the store and trusts a dataset's rows only while its object
    is there with the listed size: a deleted or truncated object counts 0, a missing manifest counts 0."""
    out = output(tmp_path / "count", "parquet", "zstd", {"request_logs": 25, "error_logs": 4, "response_logs": 6})
    written = dest.write_partition(out)
    assert dest.count_rows(out, written) == {"request_logs": 25, "error_logs": 4, "response_logs": 6}
    prefix = dest.prefix_for(out)
    dest.delete([prefix + "error_logs.parquet"])
    dest.put_bytes(b"cut short", prefix + "response_logs.parquet")
    assert dest.count_rows(out, written) == {"request_logs": 25, "error_logs": 0, "response_logs": 0}
    dest.delete([prefix + "_manifest.json"])
    assert dest.count_rows(out, written) == {"request_logs": 0, "error_logs": 0, "response_logs": 0}
