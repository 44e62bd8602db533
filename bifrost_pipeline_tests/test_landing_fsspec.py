"""The landing zone on an object store (S3 / GCS / Azure Blob through fsspec), against the emulators."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

import pytest

from bifrost_pipeline import landing
from bifrost_pipeline_tests.emulators.object_stores import MOTO_KEY, MOTO_REGION

pytestmark = pytest.mark.usefixtures("no_cloud_metadata")
_names = itertools.count()
DAY = date(2024, 1, 15)


@pytest.fixture(params=["s3", "gcs", "azure_blob"])
def zone(request):
    """(root URL, storage_options) of a fresh bucket/container on one store."""
    n = next(_names)
    if request.param == "s3":
        import boto3

        server = request.getfixturevalue("moto_s3")
        boto3.client("s3", endpoint_url=server.url, region_name=MOTO_REGION, aws_access_key_id=MOTO_KEY,
                     aws_secret_access_key=MOTO_KEY).create_bucket(Bucket=f"landing-{n}")
        opts = {"endpoint_url": server.url, "key": MOTO_KEY, "secret": MOTO_KEY,
                "client_kwargs": {"region_name": MOTO_REGION}}
        return f"s3://landing-{n}/zone", opts
    if request.param == "gcs":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        server = request.getfixturevalue("gcs_emulator")
        storage.Client(project="test", credentials=AnonymousCredentials(),
                       client_options={"api_endpoint": server.url}).create_bucket(f"landing-{n}")
        return f"gs://landing-{n}/zone", {"endpoint_url": server.url, "token": "anon", "project": "test"}
    from azure.storage.blob import BlobServiceClient

    azurite = request.getfixturevalue("azurite")
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(f"landing-{n}")
    return f"az://landing-{n}/zone", {"connection_string": azurite.connection_string}


def test_segments_listed_and_read_like_on_local_disk(zone, tmp_path):
    root, opts = zone
    local = tmp_path / "landing"
    first = landing.write_segment(local, [b'{"a": 1}', b'{"a": 2}'], datetime(2024, 1, 15, 13, 5, tzinfo=UTC))
    second = landing.write_segment(local, [b'{"a": 3}'], datetime(2024, 1, 15, 2, 0, tzinfo=UTC))
    other = landing.write_segment(local, [b'{"a": 4}'], datetime(2024, 1, 16, 0, 0, tzinfo=UTC))
    local_segments = landing.list_segments(local, DAY)

    assert landing.days(root, opts) == []
    written = landing.upload_segments(local, root, opts)
    assert len(written) == 3 and all(u.startswith(root.split("://")[0]) for u in written)
    assert not first.exists() and not other.exists()  # shipped, then removed locally

    import fsspec

    fs = fsspec.filesystem(root.split("://")[0], **opts)
    # What a reader must skip: a hidden (in-flight) name, another suffix, a file outside an hour folder.
    fs.pipe(f"{root.split('://')[1]}/date=2024-01-15/hour=13/.x.ndjson.part", b"partial")
    fs.pipe(f"{root.split('://')[1]}/date=2024-01-15/hour=13/notes.txt", b"x")
    fs.pipe(f"{root.split('://')[1]}/date=2024-01-15/stray.ndjson", b"x")

    assert landing.days(root, opts) == [date(2024, 1, 15), date(2024, 1, 16)]
    segments = landing.list_segments(root, DAY, opts)
    assert [(s.hour, s.path.name, s.size) for s in segments] == [
        (s.hour, s.path.name, s.size) for s in local_segments
    ]
    assert [s.hour for s in segments] == [2, 13]
    assert [s.relative_to(root) for s in segments] == [s.relative_to(local) for s in local_segments]
    assert all(s.url.startswith(root.split("/zone")[0]) and s.mtime > 1.7e9 for s in segments)
    with segments[1].open() as fh:
        assert fh.read() == b'{"a": 1}\n{"a": 2}\n'
    assert second.name == segments[0].path.name

    # A segment that lands later is seen by the next listing (no stale fsspec listing cache).
    landing.write_segment(local, [b'{"a": 5}'], datetime(2024, 1, 15, 23, 0, tzinfo=UTC))
    landing.upload_segments(local, root, opts)
    assert [s.hour for s in landing.list_segments(root, DAY, opts)] == [2, 13, 23]
    assert landing.list_segments(root, date(2024, 1, 17), opts) == []

    # Mirrored into a local zone, the day reads as any local day (same names, sizes, times).
    mirror = tmp_path / "mirror"
    remote = landing.list_segments(root, DAY, opts)
    mirrored = landing.mirror_day(root, DAY, mirror, opts)
    assert [(s.relative_to(mirror), s.size, round(s.mtime)) for s in mirrored] == [
        (s.relative_to(root), s.size, round(s.mtime)) for s in remote
    ]
    assert mirrored[1].path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    assert not list(mirror.rglob(".*"))  # no temporary file left behind
    inodes = [s.path.stat().st_ino for s in mirrored]
    assert landing.mirror_day(root, DAY, mirror, opts) == mirrored
    assert [s.path.stat().st_ino for s in mirrored] == inodes  # nothing fetched twice


def test_local_roots_keep_their_behaviour(tmp_path):
    path = landing.write_segment(tmp_path, [b'{"a": 1}'], datetime(2024, 1, 15, 1, tzinfo=UTC))
    (seg,) = landing.list_segments(tmp_path, DAY)
    assert seg.path == path and seg.url is None and seg.relative_to(tmp_path) == f"date=2024-01-15/hour=01/{path.name}"
    with seg.open() as fh:
        assert fh.read() == b'{"a": 1}\n'
    assert landing.days(str(tmp_path)) == [DAY]  # a plain string path is still a local path
    assert not landing.is_url(str(tmp_path)) and landing.is_url("s3://b/x") and landing.is_url("az://c/x")


def test_a_configured_remote_landing_zone_feeds_validation_and_the_sensor_state(zone, tmp_path):
    """landing.path as a URL: the proxy side uploads, the pipeline side mirrors and validates."""
    import json

    import polars as pl

    from bifrost_pipeline import validation
    from bifrost_pipeline.config import parse_config
    from bifrost_pipeline.defs.raw import landing_state
    from bifrost_pipeline_tests.helpers import record

    root, opts = zone
    proxy_side = parse_config(
        {"landing": {"path": root, "storage_options": opts, "local_path": "proxy_spool"}},
        env={}, base_dir=tmp_path,
    )
    pipeline_side = parse_config(
        {"landing": {"path": root, "storage_options": opts}, "pipeline": {"data_dir": "data"}},
        env={}, base_dir=tmp_path,
    )
    assert proxy_side.landing_dir == tmp_path / "proxy_spool"
    lines = [json.dumps(record(request_id=f"r{i}")).encode() for i in range(3)] + [b"{bad"]
    landing.write_segment(proxy_side.landing_dir, lines, datetime(2024, 1, 15, 10, tzinfo=UTC))
    landing.upload_segments(proxy_side.landing_dir, str(proxy_side.landing_root), opts)

    assert landing_state(pipeline_side, DAY).segments == 1  # the sensor sees the remote segment
    result = validation.validate_day(pipeline_side, DAY)
    assert (result.valid_rows, result.quarantined_rows) == (3, 1)
    assert pl.read_parquet(result.quarantine_path)["line"].to_list() == [4]
    # the recorded state equals the remote listing, so the sensor will not ask for this day again
    assert landing.LandingState(result.segments, result.newest_segment_mtime) == landing_state(pipeline_side, DAY)
