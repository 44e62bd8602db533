"""What the object-store destinations (s3, gcs, azure_blob) share on top of `FileStoreDestination`.

- Error messages name the store with the partition's rendered prefix (`s3://bucket/daily/2024/01/15/`).
- Every message is scrubbed of the configured secrets and of signature-like URL parameters, so nothing a
  client library echoes back (a signed URL, a connection string) reaches a log.
- Client exceptions are turned into `DestinationError`s by each store's `translate`, retryable or not.
"""

from __future__ import annotations

import re
from typing import ClassVar

from bifrost_pipeline.destinations.base import (
    URL_USERINFO,
    FileStoreDestination,
    PartitionOutput,
)


def check_name(value: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"{what} must not be empty")
    if "/" in value or "://" in value:
        raise ValueError(f"{what} must be a bare name (put folders in `prefix`), got {value!r}")
    return value


def check_endpoint(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"must be an http(s) URL such as http://127.0.0.1:9000, got {value!r}")
    return value


class ObjectStoreDestination(FileStoreDestination):
    scheme: ClassVar[str]  # s3, gs, az
    _prefix: str | None = None  # the rendered prefix of the partition being written

    def prefix_for(self, output: PartitionOutput) -> str:
        self._prefix = super().prefix_for(output)
        return self._prefix

    def container_name(self) -> str:
        raise NotImplementedError

    def endpoint(self) -> str | None:
        """A custom endpoint (emulator, S3-compatible store) to mention in messages, or None."""
        return None

    def uri(self, key: str) -> str:
        return f"{self.scheme}://{self.container_name()}/{key}"

    def describe(self) -> str:
        where = self.uri(self._prefix if self._prefix is not None else self.config.prefix)
        endpoint = self.endpoint()
        return f"{where} (endpoint {URL_USERINFO.sub('', endpoint)})" if endpoint else where




def short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
