"""Session fixtures for the object-store destinations: local servers on loopback, each stopped by its PID.

- moto_server for S3 (and a second one with IAM authentication on, for the credential/permission tests),
- gcp-storage-emulator (in memory) for GCS,
- Azurite's blob service (scripts/emulators/azurite.sh installs it) for Azure Blob.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from bifrost_pipeline_tests.emulators.servers import Server, free_port, port_open, start_server

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
AZURITE_BIN = ROOT / ".emulators" / "azurite" / "node_modules" / ".bin" / "azurite-blob"

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
MOTO_REGION = "us-east-1"
MOTO_KEY = "testing"  # moto accepts any credentials unless IAM authentication is on


@pytest.fixture(scope="session")
def object_store_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("object-store-logs")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return reply.status < 500
    except urllib.error.HTTPError as err:
        return err.code < 500


def _moto(name: str, logs: Path, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    return start_server(
        name,
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        port,
        logs,
        env=env,
        ready=lambda: port_open(port) and _http_ok(f"http://127.0.0.1:{port}/moto-api/"),
    )


@pytest.fixture(scope="session")
def moto_s3(object_store_logs):
    server = _moto("moto-s3", object_store_logs)
    yield server
    server.stop()


@dataclass
class AuthMoto:
    server: Server
    bucket: str
    good: tuple[str, str]  # an access key pair with s3:* on the bucket
    denied: tuple[str, str]  # a valid access key pair without any permission
    reader: tuple[str, str]  # may read and list, not write


@pytest.fixture(scope="session")
def moto_s3_auth(object_store_logs):
    """moto with IAM authentication on after the first N requests, which create two users and a bucket."""
    import boto3

    setup_calls = 9  # exactly the calls below: every later request is authenticated
    server = _moto("moto-s3-auth", object_store_logs, env={"INITIAL_NO_AUTH_ACTION_COUNT": str(setup_calls)})
    kw = dict(endpoint_url=server.url, region_name=MOTO_REGION, aws_access_key_id=MOTO_KEY,
              aws_secret_access_key=MOTO_KEY)
    iam, s3 = boto3.client("iam", **kw), boto3.client("s3", **kw)
    bucket = "auth-bucket"
    s3.create_bucket(Bucket=bucket)  # 1
    iam.create_user(UserName="writer")  # 2
    iam.put_user_policy(  # 3
        UserName="writer",
        PolicyName="s3",
        PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}',
    )
    good = iam.create_access_key(UserName="writer")["AccessKey"]  # 4
    iam.create_user(UserName="nobody")  # 5
    denied = iam.create_access_key(UserName="nobody")["AccessKey"]  # 6
    iam.create_user(UserName="reader")  # 7
    iam.put_user_policy(  # 8
        UserName="reader",
        PolicyName="read",
        PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
        '"Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}',
    )
    reader = iam.create_access_key(UserName="reader")["AccessKey"]  # 9
    yield AuthMoto(
        server,
        bucket,
        (good["AccessKeyId"], good["SecretAccessKey"]),
        (denied["AccessKeyId"], denied["SecretAccessKey"]),
        (reader["AccessKeyId"], reader["SecretAccessKey"]),
    )
    server.stop()


@pytest.fixture(scope="session")
def gcs_emulator(object_store_logs):
    port = free_port()
    server = start_server(
        "gcp-storage-emulator",
        [str(VENV_BIN / "gcp-storage-emulator"), "start", "-H", "127.0.0.1", "--port", str(port), "--in-memory"],
        port,
        object_store_logs,
        ready=lambda: port_open(port) and _http_ok(f"http://127.0.0.1:{port}/storage/v1/b"),
    )
    yield server
    server.stop()


@pytest.fixture
def no_cloud_metadata(monkeypatch):
    """Nothing in a test may ask the cloud metadata server (169.254.169.254) for a token: point google-auth
    at a closed loopback port and keep ambient credentials out of the tests."""
    from google.auth.compute_engine import _metadata

    closed = "127.0.0.1:9"
    monkeypatch.setenv("GCE_METADATA_HOST", closed)
    monkeypatch.setenv("GCE_METADATA_IP", closed)
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    # google-auth reads these two when it is first imported: set them on the module too.
    monkeypatch.setattr(_metadata, "_GCE_METADATA_HOST", closed)
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@dataclass
class Azurite:
    server: Server

    @property
    def account_url(self) -> str:
        return f"{self.server.url}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.account_url};"
        )


@pytest.fixture(scope="session")
def azurite(object_store_logs, tmp_path_factory):
    if not AZURITE_BIN.exists():
        pytest.fail(f"{AZURITE_BIN} is missing: run scripts/emulators/azurite.sh (or scripts/install-emulators.sh)")
    port = free_port()
    server = start_server(
        "azurite",
        [
            str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
            "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent",
        ],
        port,
        object_store_logs,
        env={"PATH": os.environ.get("PATH", "")},
    )
    yield Azurite(server)
    server.stop()


class Busy:
    """A loopback HTTP server that answers every request 503 (as a throttled or failing store would),
    counting the requests: a client that retries with backoff sends more than one."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        busy = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                busy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.send_header("Retry-After", "0")
                self.end_headers()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def busy_store():
    busy = Busy()
    yield busy
    busy.close()
