"""`gcs`: Google Cloud Storage through google-cloud-storage.

Files above 8 MiB go up as a resumable upload in `chunk_size_mb` chunks read from disk (smaller ones in
one request); an object becomes visible only when its upload is finalized. Uploads are retried with
exponential backoff (google-api-core's retry: 429, 5xx, connection errors) for up to `retry_deadline`
seconds: re-sending the same bytes to the same name is idempotent here.

Credentials: `credentials.service_account_key` (the key's JSON text, or a path to the key file), else
Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity, the metadata server).
With `endpoint_url` (an emulator such as gcp-storage-emulator) and no key, requests are anonymous.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from bifrost_pipeline.destinations.base import (
    DestinationConfig,
    DestinationError,
    PrefixedConfig,
    none_if_empty,
)
from bifrost_pipeline.destinations.object_store import (
    ObjectStoreDestination,
    check_endpoint,
    check_name,
    short,
)

SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
MB = 1024 * 1024


class GCSCredentials(DestinationConfig):
    service_account_key: SecretStr | None = None  # the key's JSON text, or a path to the key file

    @field_validator("service_account_key")
    @classmethod
    def _key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value().strip():
            return None
        text = v.get_secret_value().strip()
        if text.startswith("{"):
            # The message never repeats the key.
            try:
                info = json.loads(text)
            except ValueError:
                raise ValueError("service_account_key looks like JSON but does not parse") from None
            missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
            if missing:
                raise ValueError(
                    "service_account_key is not a service-account key (missing " + ", ".join(missing) + ")"
                )
        return SecretStr(text)


class GCSConfig(PrefixedConfig):
    bucket: str
    project: str | None = None  # only for the request's billing project; the key's project otherwise
    endpoint_url: str | None = None  # emulators, e.g. http://127.0.0.1:9023
    credentials: GCSCredentials | None = None
    chunk_size_mb: int = Field(16, ge=1, le=1024)  # resumable upload chunk (a multiple of 256 KiB)
    retry_deadline: float = Field(120, gt=0)  # seconds of retries per request
    timeout: float = Field(60, gt=0)  # seconds per HTTP request

    _bucket = field_validator("bucket")(classmethod(lambda cls, v: check_name(v, "bucket")))
    _endpoint = field_validator("endpoint_url")(classmethod(lambda cls, v: check_endpoint(v)))

    _empty_credentials = field_validator("credentials", mode="before")(classmethod(lambda cls, v: none_if_empty(v)))


class GCSDestination(ObjectStoreDestination):
    kind = "gcs"
    scheme = "gs"
    Config = GCSConfig
    config: GCSConfig

    @classmethod
    def location_key(cls, config, context) -> str:
        return f"gcs:{config.endpoint_url or 'google'}/{config.bucket}/{config.prefix}"

    def container_name(self) -> str:
        return self.config.bucket

    def endpoint(self) -> str | None:
        return self.config.endpoint_url

    def secrets(self) -> list[SecretStr | str | None]:
        cr = self.config.credentials
        if not cr or not cr.service_account_key:
            return []
        text = cr.service_account_key.get_secret_value()
        out: list[SecretStr | str | None] = [text]
        if text.startswith("{"):
            info = json.loads(text)
            out += [info.get("private_key"), info.get("private_key_id")]
        return out

    def _credentials(self):
        cr = self.config.credentials
        if cr and cr.service_account_key:
            from google.oauth2 import service_account

            text = cr.service_account_key.get_secret_value()
            if text.startswith("{"):
                try:
                    return service_account.Credentials.from_service_account_info(json.loads(text), scopes=SCOPES)
                except ValueError:
                    raise self.error("credentials.service_account_key: the private key cannot be read") from None
            path = Path(text).expanduser()
            if not path.is_file():
                raise self.error(
                    "credentials.service_account_key is neither service-account JSON nor a readable key file"
                )
            try:
                return service_account.Credentials.from_service_account_file(str(path), scopes=SCOPES)
            except (ValueError, KeyError):
                raise self.error(f"credentials.service_account_key: {path} is not a service-account key file") from None
        if self.config.endpoint_url:
            from google.auth.credentials import AnonymousCredentials

            return AnonymousCredentials()
        return None  # Application Default Credentials, resolved by the client

    @cached_property
    def bucket(self):
        from google.cloud import storage

        credentials = self._credentials()
        options = {"api_endpoint": self.config.endpoint_url} if self.config.endpoint_url else None
        with self.calls("creating the GCS client"):
            project = self.config.project
            if project is None and credentials is not None:
                project = getattr(credentials, "project_id", None)
            client = storage.Client(project=project, credentials=credentials, client_options=options)
            return client.bucket(self.config.bucket)

    @property
    def retry(self):
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_deadline(self.config.retry_deadline)

    def put_file(self, local: Path, key: str) -> None:
        blob = self.bucket.blob(key, chunk_size=self.config.chunk_size_mb * MB)
        with self.calls(f"uploading {key}"):
            # Opened here and read chunk by chunk by the resumable upload.
            blob.upload_from_filename(
                str(local), content_type="application/octet-stream", retry=self.retry, timeout=self.config.timeout
            )

    def put_bytes(self, data: bytes, key: str) -> None:
        with self.calls(f"writing {key}"):
            self.bucket.blob(key).upload_from_string(
                data, content_type="application/json", retry=self.retry, timeout=self.config.timeout
            )

    def read_bytes(self, key: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        with self.calls(f"reading {key}"):
            try:
                return self.bucket.blob(key).download_as_bytes(retry=self.retry, timeout=self.config.timeout)
            except NotFound:
                # A missing bucket reads as 404 too; the first upload then names it.
                return None

    def object_size(self, key: str) -> int | None:
        with self.calls(f"reading the metadata of {key}"):
            blob = self.bucket.get_blob(key, retry=self.retry, timeout=self.config.timeout)
            return None if blob is None else int(blob.size)

    def delete(self, keys: Iterable[str]) -> None:
        from google.api_core.exceptions import NotFound

        for key in keys:
            with self.calls(f"removing stale object {key}"):
                try:
                    self.bucket.blob(key).delete(retry=self.retry, timeout=self.config.timeout)
                except NotFound:
                    pass

    def translate(self, err: Exception, action: str) -> DestinationError:
        import requests
        from google.api_core import exceptions as gx
        from google.auth import exceptions as ax

        cfg = self.config
        where = cfg.endpoint_url or "storage.googleapis.com"
        if isinstance(err, ax.DefaultCredentialsError):
            return self.error(
                f"{action}: no Google credentials found. Set credentials.service_account_key (the key's JSON "
                "or its file path), or provide Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, "
                "workload identity, the instance's service account)"
            )
        if isinstance(err, ax.RefreshError):
            return self.error(
                f"{action}: the credentials were rejected (no access token: {short(err, 160)}); "
                "check credentials.service_account_key",
                retryable=getattr(err, "retryable", False),
            )
        if isinstance(err, ax.TransportError):
            return self.error(f"{action}: cannot reach the token endpoint: {short(err)}", retryable=True)
        if isinstance(err, gx.NotFound):
            return self.error(f"{action}: bucket {cfg.bucket!r} does not exist (create it, or fix `bucket`)")
        if isinstance(err, gx.Unauthorized):
            return self.error(f"{action}: the credentials were rejected (401); check credentials.service_account_key")
        if isinstance(err, gx.Forbidden):
            return self.error(
                f"{action}: access denied (403). The service account needs storage.objects.create, "
                "storage.objects.get and storage.objects.delete on the bucket (roles/storage.objectUser)"
            )
        if isinstance(err, gx.RetryError):
            cause = err.cause
            if isinstance(cause, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
                return self.error(
                    f"{action}: cannot reach {where} (retried for {cfg.retry_deadline:g}s): {short(cause, 200)}",
                    retryable=True,
                )
            return self.error(
                f"{action}: still failing after {cfg.retry_deadline:g}s of retries: {short(cause or err)}",
                retryable=True,
            )
        if isinstance(err, gx.TooManyRequests | gx.ServerError):
            return self.error(f"{action}: the store failed: {short(err)}", retryable=True)
        if isinstance(err, gx.GoogleAPICallError):
            return self.error(f"{action} failed: {short(err)}")
        if isinstance(err, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
            return self.error(f"{action}: cannot reach {where}: {short(err, 200)}", retryable=True)
        return super().translate(err, action)
