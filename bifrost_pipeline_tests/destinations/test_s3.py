"""The `s3` destination against moto_server (boto3 over HTTP, as against AWS)."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import boto3
import pytest

from bifrost_pipeline.config import ConfigError, parse_config
from bifrost_pipeline.destinations import destination_class
from bifrost_pipeline.destinations.s3 import S3Config, S3Destination
from bifrost_pipeline_tests.destinations import object_store_cases as cases
from bifrost_pipeline_tests.destinations.context import context
from bifrost_pipeline_tests.emulators.object_stores import MOTO_KEY, MOTO_REGION
from bifrost_pipeline_tests.emulators.servers import free_port

pytestmark = pytest.mark.usefixtures("no_cloud_metadata")
_names = itertools.count()


def raw_client(url: str, key: str = MOTO_KEY, secret: str = MOTO_KEY):
    return boto3.client(
        "s3", endpoint_url=url, region_name=MOTO_REGION, aws_access_key_id=key, aws_secret_access_key=secret
    )


def make(url: str, bucket: str, *, key: str = MOTO_KEY, secret: str = MOTO_KEY, **overrides) -> S3Destination:
    raw = {
        "bucket": bucket,
        "region": MOTO_REGION,
        "endpoint_url": url,
        "credentials": {"access_key_id": key, "secret_access_key": secret},
        **overrides,
    }
    return S3Destination(S3Config.model_validate(raw), context("e"))


@pytest.fixture
def store(moto_s3) -> cases.Store:
    s3 = raw_client(moto_s3.url)

    def new_bucket() -> str:
        name = f"bucket-{next(_names)}"
        s3.create_bucket(Bucket=name)
        return name

    def objects(bucket: str, under: str) -> dict[str, bytes]:
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=under).get("Contents", [])]
        return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}

    return cases.Store(
        "s3", "s3://{bucket}", lambda bucket, **kw: make(moto_s3.url, bucket, **kw), objects, new_bucket
    )


@pytest.mark.parametrize("fmt, codec", cases.FORMATS)
def test_every_format_and_compression_round_trips(store, tmp_path, fmt, codec):
    cases.check_round_trip(store, tmp_path, fmt, codec)


def test_rematerializing_leaves_only_the_new_run_and_the_manifest_last(store, tmp_path):
    cases.check_rematerialize(store, tmp_path)


def test_large_files_go_up_as_multipart_uploads(store, moto_s3, tmp_path):
    bucket = store.new_bucket()
    out = cases.big_file_output(tmp_path, 11 * 1024 * 1024)
    dest = store.make(bucket, prefix="big/", multipart_threshold_mb=5, multipart_chunk_mb=5, max_concurrency=2)
    dest.write_partition(out)
    head = raw_client(moto_s3.url).head_object(Bucket=bucket, Key="big/request_logs.parquet")
    assert head["ContentLength"] == out.files[0].bytes
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 1 MiB
    data = store.objects(bucket, "big/")["big/request_logs.parquet"]
    assert data == out.files[0].path.read_bytes()


@pytest.mark.parametrize("sse, kms", [("AES256", None), ("aws:kms", "alias/bifrost-exports")])
def test_server_side_encryption_applies_to_data_and_manifest(store, moto_s3, tmp_path, sse, kms):
    bucket = store.new_bucket()
    extra = {"sse": sse} | ({"kms_key_id": kms} if kms else {})
    store.make(bucket, prefix="enc/", **extra).write_partition(cases.output(tmp_path))
    s3 = raw_client(moto_s3.url)
    for key in ("enc/request_logs.parquet", "enc/_manifest.json"):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == sse
        if kms:
            assert head["SSEKMSKeyId"].endswith(kms.split("/")[-1])


def test_a_missing_bucket_is_named(store, tmp_path):
    dest = store.make("no-such-bucket", prefix=cases.PREFIX)
    message = cases.expect_error(
        dest,
        cases.output(tmp_path),
        "s3://no-such-bucket/e/2024/01/15/",
        "bucket 'no-such-bucket' does not exist",
    )
    assert "testing" not in message.replace("testing/", "")


def test_unknown_access_key(moto_s3_auth, tmp_path):
    dest = make(moto_s3_auth.server.url, moto_s3_auth.bucket, key="AKIAUNKNOWN000000000", secret="s3cr3t-unknown")
    message = cases.expect_error(
        dest, cases.output(tmp_path), "s3://auth-bucket/e/", "access key id is not known"
    )
    assert "s3cr3t-unknown" not in message


def test_wrong_secret_key(moto_s3_auth, tmp_path):
    key, secret = moto_s3_auth.good
    dest = make(moto_s3_auth.server.url, moto_s3_auth.bucket, key=key, secret="wrong-" + secret)
    message = cases.expect_error(dest, cases.output(tmp_path), "secret access key is wrong")
    assert secret not in message


def test_access_denied(moto_s3_auth, tmp_path):
    key, secret = moto_s3_auth.denied
    dest = make(moto_s3_auth.server.url, moto_s3_auth.bucket, key=key, secret=secret)
    message = cases.expect_error(dest, cases.output(tmp_path), "access denied", "s3:PutObject")
    assert secret not in message


def test_valid_credentials_pass_authentication(moto_s3_auth, tmp_path):
    key, secret = moto_s3_auth.good
    dest = make(moto_s3_auth.server.url, moto_s3_auth.bucket, key=key, secret=secret, prefix="ok/")
    result = dest.write_partition(cases.output(tmp_path))
    assert result.location == "s3://auth-bucket/ok/"
    listed = raw_client(moto_s3_auth.server.url, key, secret).list_objects_v2(Bucket="auth-bucket", Prefix="ok/")
    assert {o["Key"] for o in listed["Contents"]} == {
        "ok/request_logs.parquet", "ok/error_logs.parquet", "ok/_manifest.json"
    }


def test_an_unreachable_endpoint_is_retryable(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    dest = make(url, "b", max_attempts=2, connect_timeout=1)
    cases.expect_error(
        dest, cases.output(tmp_path), f"cannot reach {url} after 2 attempt(s)", f"(endpoint {url})", retryable=True
    )


def test_no_credentials_anywhere(monkeypatch, tmp_path, moto_s3):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    config = S3Config.model_validate({"bucket": "b", "region": MOTO_REGION, "endpoint_url": moto_s3.url})
    dest = S3Destination(config, context("e"))
    cases.expect_error(dest, cases.output(tmp_path), "no AWS credentials found", "instance role")


def test_default_chain_is_used_without_keys(monkeypatch, tmp_path, store, moto_s3):
    """An empty `credentials` (variables set to "") falls back to the environment's chain."""
    bucket = store.new_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", MOTO_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", MOTO_KEY)
    raw = {"bucket": bucket, "endpoint_url": moto_s3.url, "region": MOTO_REGION,
           "credentials": {"access_key_id": "", "secret_access_key": ""}}
    config = S3Config.model_validate(raw)
    assert config.credentials is None
    S3Destination(config, context("e")).write_partition(cases.output(tmp_path))
    assert "e/2024-01-15/_manifest.json" in store.objects(bucket, "")


def test_seed_keys_load_unchanged_and_secrets_stay_hidden():
    raw = {
        "log_exports": {
            "exports": [
                {
                    "name": "s3_seed",
                    "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
                    "destination": {
                        "type": "s3",
                        "config": {
                            "bucket": "bifrost-logs",
                            "region": "us-west-2",
                            "prefix": "logs/{year}/{month}/{day}/",
                            "credentials": {
                                "access_key_id": "${AWS_ACCESS_KEY_ID}",
                                "secret_access_key": "${AWS_SECRET_ACCESS_KEY}",
                            },
                        },
                    },
                    "data": {"format": "parquet"},
                }
            ]
        }
    }
    env = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "very-secret-value"}
    app = parse_config(raw, env=env)
    (export,) = app.exports
    assert destination_class(export.destination.type) is S3Destination
    cfg = export.destination.config
    assert (cfg.bucket, cfg.region, cfg.prefix) == ("bifrost-logs", "us-west-2", "logs/{year}/{month}/{day}/")
    assert cfg.credentials.secret_access_key.get_secret_value() == "very-secret-value"
    assert "very-secret-value" not in repr(app)
    dest = S3Destination(cfg, app.destination_context("s3_seed"))
    assert dest.describe() == "s3://bifrost-logs/logs/{year}/{month}/{day}/"


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"bucket": "b", "sse": "aws:kms2"}, "config.sse"),
        ({"bucket": "b", "kms_key_id": "k"}, "kms_key_id needs sse: aws:kms"),
        ({"bucket": "b", "credentials": {"access_key_id": "AKIA1"}}, "go together"),
        ({"bucket": "s3://b/x"}, "bare name"),
        ({"bucket": "b", "endpoint_url": "127.0.0.1:9000"}, "http(s) URL"),
        ({"bucket": "b", "prefix": "{yr}/"}, "unknown placeholder {yr}"),
        ({"bucket": "b", "acl": "public"}, "config.acl"),
    ],
)
def test_config_errors_name_the_key(config, expected):
    raw = {"log_exports": {"exports": [{
        "name": "e", "schedule": {"frequency": "daily", "time": "02:00"},
        "destination": {"type": "s3", "config": config},
    }]}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw, env={})
    text = "\n".join(err.value.problems)
    assert "log_exports.exports[0].destination.config" in text
    assert expected in text


def test_manifest_is_json_with_the_partition_facts(store, tmp_path):
    bucket = store.new_bucket()
    out = cases.output(tmp_path, "csv", "zstd", {"request_logs": 3})
    store.make(bucket, prefix="{partition}/").write_partition(out)
    manifest = json.loads(store.objects(bucket, "")["2024-01-15/_manifest.json"])
    assert manifest["export"] == "e" and manifest["partition"] == "2024-01-15"
    assert manifest["format"] == "csv" and manifest["compression"] == "zstd"
    assert manifest["files"][0]["rows"] == 3


# --- end to end: the seed's "daily_s3_export" against moto, through Dagster ----------------------------------


def test_the_seed_daily_s3_export_materializes_into_s3(moto_s3, tmp_path, monkeypatch):
    import io

    import dagster as dg
    import polars as pl
    import yaml

    from bifrost_pipeline.config import load_config
    from bifrost_pipeline.definitions import build_definitions
    from bifrost_pipeline.defs.raw import RAW_JOB
    from bifrost_pipeline_tests.helpers import HASH_KEY, land, record

    seed = json.loads((Path(__file__).parents[1] / "data" / "seed_complete_example.json").read_text())
    (entry,) = [e for e in seed["log_exports"]["exports"] if e["name"] == "daily_s3_export"]
    entry["destination"]["config"]["endpoint_url"] = moto_s3.url  # the only key added to the seed's entry
    path = tmp_path / "bifrost_pipeline.yaml"
    path.write_text(yaml.safe_dump({
        "log_exports": {"enabled": True, "exports": [entry]},
        "landing": {"path": "landing"},
        "pipeline": {"data_dir": "data", "start_date": "2024-01-01", "export_retries": 0},
    }))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", MOTO_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "moto-secret-value")
    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", HASH_KEY)
    s3 = boto3.client("s3", endpoint_url=moto_s3.url, region_name="us-west-2",
                      aws_access_key_id=MOTO_KEY, aws_secret_access_key=MOTO_KEY)
    s3.create_bucket(Bucket="bifrost-logs-prod", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})

    app = load_config(path)
    codes = [200, 200, 201, 400, 404, 429, 500, 503, 200, 401]  # 201, 429 and 503 are filtered out
    rows = [
        record(request_id=f"r{i}", timestamp=f"2024-01-15T{i + 1:02d}:10:00Z", status_code=c,
               status="success" if c < 400 else "error", **({"error_type": "upstream_error"} if c >= 400 else {}))
        for i, c in enumerate(codes)
    ]
    land(app, rows)
    defs = build_definitions(app, str(path))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def(RAW_JOB).execute_in_process(partition_key="2024-01-15", instance=instance).success
    result = defs.resolve_job_def("export_daily_s3_export_job").execute_in_process(
        partition_key="2024-01-15", instance=instance
    )
    assert result.success

    prefix = "daily-exports/2024/01/15/"
    listed = s3.list_objects_v2(Bucket="bifrost-logs-prod", Prefix="")["Contents"]
    assert {o["Key"] for o in listed} == {
        prefix + n for n in ("request_logs.parquet", "response_logs.parquet", "error_logs.parquet", "_manifest.json")
    }
    manifest = json.loads(s3.get_object(Bucket="bifrost-logs-prod", Key=prefix + "_manifest.json")["Body"].read())
    assert manifest["export"] == "daily_s3_export" and manifest["format"] == "parquet"
    assert manifest["compression"] == "gzip"
    kept = {f"r{i}" for i, c in enumerate(codes) if c in (200, 400, 401, 403, 404, 500)}
    for f in manifest["files"]:
        data = s3.get_object(Bucket="bifrost-logs-prod", Key=prefix + f["name"])["Body"].read()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f["bytes"], f["sha256"])
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(io.BytesIO(data)).metadata
        assert meta.row_group(0).column(0).compression == "GZIP"
        frame = pl.read_parquet(io.BytesIO(data))
        assert frame.height == f["rows"]
        if f["dataset"] == "request_logs":
            assert set(frame["request_id"]) == kept
        if f["dataset"] == "error_logs":
            assert set(frame["request_id"]) == {f"r{i}" for i, c in enumerate(codes) if c in (400, 401, 404, 500)}
    meta = result.asset_materializations_for_node("export_daily_s3_export")[0].metadata
    assert "s3://bifrost-logs-prod/daily-exports/2024/01/15/" in json.dumps({k: str(v.value) for k, v in meta.items()})
    assert "moto-secret-value" not in str(result.all_events)


def test_the_docs_example_loads():
    cfg = cases.check_doc_example("s3", {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "doc-secret"})
    assert cfg.sse == "aws:kms" and cfg.kms_key_id == "alias/bifrost-exports"


def test_a_large_file_is_never_held_whole_in_memory(store, tmp_path):
    dest = store.make(store.new_bucket(), prefix="mem/", multipart_threshold_mb=5, multipart_chunk_mb=5, max_concurrency=2)
    cases.check_upload_streams(dest, tmp_path, size_mb=48, limit_mb=24)


def test_a_failing_store_is_retried_with_backoff_then_flagged_retryable(busy_store, tmp_path):
    dest = make(busy_store.url, "b", max_attempts=3)
    cases.expect_error(dest, cases.output(tmp_path), "the store failed after 3 attempt(s)", retryable=True)
    assert busy_store.requests == 3


def test_run_export_publishes_through_the_core(store, moto_s3, tmp_path):
    bucket = store.new_bucket()
    destination = {"type": "s3", "config": {
        "bucket": bucket, "region": MOTO_REGION, "endpoint_url": moto_s3.url, "prefix": "core/{year}/{month}/{day}/",
        "credentials": {"access_key_id": MOTO_KEY, "secret_access_key": MOTO_KEY},
    }}
    cases.check_run_export(store, tmp_path, destination)


def test_a_denied_upload_is_named_and_nothing_is_published(moto_s3_auth, tmp_path):
    """Read and list allowed, write denied: the first upload fails (through the transfer manager) and no
    manifest is written."""
    key, secret = moto_s3_auth.reader
    dest = make(moto_s3_auth.server.url, moto_s3_auth.bucket, key=key, secret=secret, prefix="ro/")
    message = cases.expect_error(dest, cases.output(tmp_path), "uploading ro/request_logs.parquet: access denied")
    assert secret not in message
    good = raw_client(moto_s3_auth.server.url, *moto_s3_auth.good)
    assert "Contents" not in good.list_objects_v2(Bucket=moto_s3_auth.bucket, Prefix="ro/")


def test_count_rows_reads_the_manifest_and_object_sizes_back(store, tmp_path):
    cases.check_count_rows(store.make(store.new_bucket(), prefix=cases.PREFIX), tmp_path)
