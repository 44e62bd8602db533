"""The `gcs` destination against gcp-storage-emulator (google-cloud-storage over HTTP, as against GCS)."""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from bifrost_pipeline.config import ConfigError, parse_config
from bifrost_pipeline.destinations import destination_class
from bifrost_pipeline.destinations.gcs import GCSConfig, GCSDestination
from bifrost_pipeline_tests.destinations import object_store_cases as cases
from bifrost_pipeline_tests.destinations.context import context
from bifrost_pipeline_tests.emulators.servers import free_port

pytestmark = pytest.mark.usefixtures("no_cloud_metadata")
_names = itertools.count()


def make(url: str | None, bucket: str, **overrides) -> GCSDestination:
    raw = {"bucket": bucket, "endpoint_url": url, **overrides}
    return GCSDestination(GCSConfig.model_validate(raw), context("e"))


def raw_client(url: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": url})


@pytest.fixture
def store(gcs_emulator) -> cases.Store:
    client = raw_client(gcs_emulator.url)

    def new_bucket() -> str:
        name = f"bucket-{next(_names)}"
        client.create_bucket(name)
        return name

    def objects(bucket: str, under: str) -> dict[str, bytes]:
        return {b.name: b.download_as_bytes() for b in client.list_blobs(bucket, prefix=under)}

    return cases.Store(
        "gcs", "gs://{bucket}", lambda bucket, **kw: make(gcs_emulator.url, bucket, **kw), objects, new_bucket
    )


@pytest.mark.parametrize("fmt, codec", cases.FORMATS)
def test_every_format_and_compression_round_trips(store, tmp_path, fmt, codec):
    cases.check_round_trip(store, tmp_path, fmt, codec)


def test_rematerializing_leaves_only_the_new_run_and_the_manifest_last(store, tmp_path):
    cases.check_rematerialize(store, tmp_path)


def test_large_files_go_up_as_resumable_uploads(store, tmp_path, monkeypatch):
    from google.cloud.storage import blob as blob_module

    chunks = []
    original = blob_module.Blob._do_resumable_upload

    def spy(self, *args, **kwargs):
        chunks.append(self.chunk_size)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(blob_module.Blob, "_do_resumable_upload", spy)
    bucket = store.new_bucket()
    out = cases.big_file_output(tmp_path, 9 * 1024 * 1024 + 123)  # above the 8 MiB single-request limit
    store.make(bucket, prefix="big/", chunk_size_mb=2).write_partition(out)
    assert chunks == [2 * 1024 * 1024]  # one resumable upload, in 2 MiB chunks
    assert store.objects(bucket, "big/")["big/request_logs.parquet"] == out.files[0].path.read_bytes()


def test_a_missing_bucket_is_named(store, tmp_path):
    cases.expect_error(
        store.make("no-such-bucket", prefix=cases.PREFIX),
        cases.output(tmp_path),
        "gs://no-such-bucket/e/2024/01/15/",
        "bucket 'no-such-bucket' does not exist",
    )


def _service_account_key(token_uri: str) -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "type": "service_account",
        "project_id": "bifrost-test",
        "private_key_id": "0123456789abcdef",
        "private_key": pem.decode(),
        "client_email": "exporter@bifrost-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }


@pytest.fixture
def rejecting_token_endpoint():
    """A loopback OAuth token endpoint that answers like Google's for a revoked or unknown key."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/token"
    server.shutdown()
    server.server_close()


def test_a_rejected_service_account_key(gcs_emulator, rejecting_token_endpoint, tmp_path):
    key = _service_account_key(rejecting_token_endpoint)
    dest = make(gcs_emulator.url, "any", credentials={"service_account_key": json.dumps(key)})
    message = cases.expect_error(dest, cases.output(tmp_path), "gs://any/", "credentials were rejected", "invalid_grant")
    assert "PRIVATE KEY" not in message and key["private_key"][40:80] not in message


def test_a_service_account_key_file_path_is_read(gcs_emulator, rejecting_token_endpoint, tmp_path):
    path = tmp_path / "key.json"
    path.write_text(json.dumps(_service_account_key(rejecting_token_endpoint)))
    dest = make(gcs_emulator.url, "any", credentials={"service_account_key": str(path)})
    cases.expect_error(dest, cases.output(tmp_path), "credentials were rejected")


def test_a_key_that_is_neither_json_nor_a_file(gcs_emulator, tmp_path):
    dest = make(gcs_emulator.url, "any", credentials={"service_account_key": "not-a-key-or-a-path"})
    message = cases.expect_error(dest, cases.output(tmp_path), "neither service-account JSON nor a readable key file")
    assert "not-a-key-or-a-path" not in message


def test_no_credentials_without_an_emulator(monkeypatch, tmp_path):
    """Without a key or an endpoint, Application Default Credentials apply; here there are none (and the
    metadata server is pointed at a closed loopback port), so the message says what to set."""
    import socket

    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("HOME", str(tmp_path))
    connected = []
    original = socket.socket.connect

    def connect(self, address):
        connected.append(address)
        return original(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    dest = make(None, "b")
    cases.expect_error(dest, cases.output(tmp_path), "no Google credentials found", "GOOGLE_APPLICATION_CREDENTIALS")
    assert not any("169.254.169.254" in str(a) or "metadata.google.internal" in str(a) for a in connected)


def test_an_unreachable_endpoint_is_retryable(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    dest = make(url, "b", retry_deadline=1, timeout=2)
    cases.expect_error(dest, cases.output(tmp_path), f"cannot reach {url}", retryable=True)


def test_seed_keys_load_unchanged_and_secrets_stay_hidden(tmp_path):
    key = json.dumps(_service_account_key("https://oauth2.googleapis.com/token"))
    raw = {"log_exports": {"exports": [{
        "name": "gcs_seed",
        "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
        "destination": {"type": "gcs", "config": {
            "bucket": "bifrost-logs",
            "prefix": "logs/{year}/{month}/{day}/",
            "credentials": {"service_account_key": "${GCP_SERVICE_ACCOUNT_KEY}"},
        }},
    }]}}
    app = parse_config(raw, env={"GCP_SERVICE_ACCOUNT_KEY": key})
    (export,) = app.exports
    assert destination_class("gcs") is GCSDestination
    cfg = export.destination.config
    assert cfg.credentials.service_account_key.get_secret_value() == key
    assert "PRIVATE KEY" not in repr(app)
    assert GCSDestination(cfg, app.destination_context("gcs_seed")).describe() == "gs://bifrost-logs/logs/{year}/{month}/{day}/"

    raw["log_exports"]["exports"][0]["destination"]["config"]["credentials"]["service_account_key"] = '{"private_key": "-----BEGIN x'
    with pytest.raises(ConfigError) as err:
        parse_config(raw, env={})
    (problem,) = err.value.problems
    assert problem.startswith("log_exports.exports[0].destination.config.credentials.service_account_key")
    assert "does not parse" in problem and "BEGIN" not in problem


def test_the_docs_example_loads():
    cfg = cases.check_doc_example("gcs", {"GCP_SERVICE_ACCOUNT_KEY": "/etc/bifrost/gcs-key.json"})
    assert cfg.credentials.service_account_key.get_secret_value() == "/etc/bifrost/gcs-key.json"


def test_a_large_file_is_never_held_whole_in_memory(store, tmp_path):
    dest = store.make(store.new_bucket(), prefix="mem/", chunk_size_mb=4)
    cases.check_upload_streams(dest, tmp_path, size_mb=48, limit_mb=24)


def test_a_failing_store_is_retried_with_backoff_then_flagged_retryable(busy_store, tmp_path):
    dest = make(busy_store.url, "b", retry_deadline=2)
    cases.expect_error(dest, cases.output(tmp_path), "still failing after 2s of retries", retryable=True)
    assert busy_store.requests >= 2


def test_run_export_publishes_through_the_core(store, gcs_emulator, tmp_path):
    bucket = store.new_bucket()
    destination = {"type": "gcs", "config": {"bucket": bucket, "endpoint_url": gcs_emulator.url, "prefix": "core/{year}/{month}/{day}/"}}
    cases.check_run_export(store, tmp_path, destination)


def test_count_rows_reads_the_manifest_and_object_sizes_back(store, tmp_path):
    cases.check_count_rows(store.make(store.new_bucket(), prefix=cases.PREFIX), tmp_path)
