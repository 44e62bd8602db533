"""`s3`: Amazon S3 or any S3-compatible store (MinIO, Ceph, R2, moto) through boto3.

Files go up with `upload_file` (a multipart upload above `multipart_threshold_mb`, read from disk part by
part, never whole in memory); an object, multipart or not, becomes visible only when complete. Retries:
botocore's "standard" mode (exponential backoff with jitter, throttling and 5xx and connection errors)
up to `max_attempts` per request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bifrost_pipeline.destinations.aws import AwsCredentials, aws_client
from bifrost_pipeline.destinations.base import DestinationError, PrefixedConfig, none_if_empty
from bifrost_pipeline.destinations.object_store import (
    ObjectStoreDestination,
    check_endpoint,
    check_name,
    short,
)

MB = 1024 * 1024


class S3Config(PrefixedConfig):
    bucket: str
    region: str | None = None
    endpoint_url: str | None = None  # S3-compatible stores and emulators, e.g. http://127.0.0.1:9000
    # Without credentials (or with empty ones) boto3's default chain applies: AWS_* environment
    # variables, ~/.aws, web identity (EKS), ECS task role, EC2 instance role.
    credentials: AwsCredentials | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    path_style: bool = False  # path-style addressing (many S3-compatible stores want it)
    multipart_threshold_mb: int = Field(64, ge=5)
    multipart_chunk_mb: int = Field(16, ge=5)
    max_concurrency: int = Field(8, ge=1, le=64)
    max_attempts: int = Field(5, ge=1, le=20)
    connect_timeout: float = Field(10, gt=0)
    read_timeout: float = Field(60, gt=0)

    _bucket = field_validator("bucket")(classmethod(lambda cls, v: check_name(v, "bucket")))
    _endpoint = field_validator("endpoint_url")(classmethod(lambda cls, v: check_endpoint(v)))

    _empty_credentials = field_validator("credentials", mode="before")(classmethod(lambda cls, v: none_if_empty(v)))

    @model_validator(mode="after")
    def _kms(self):
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("kms_key_id needs sse: aws:kms")
        return self


_CODE = re.compile(r"An error occurred \(([\w.]+)\)")
_RETRYABLE_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequestsException",
}


class S3Destination(ObjectStoreDestination):
    kind = "s3"
    scheme = "s3"
    Config = S3Config
    config: S3Config

    @classmethod
    def location_key(cls, config, context) -> str:
        return f"s3:{config.endpoint_url or 'aws'}/{config.bucket}/{config.prefix}"

    def container_name(self) -> str:
        return self.config.bucket

    def endpoint(self) -> str | None:
        return self.config.endpoint_url

    def secrets(self) -> list[SecretStr | str | None]:
        cr = self.config.credentials
        return [cr.secret_access_key, cr.session_token] if cr else []

    @cached_property
    def client(self):
        cfg = self.config
        with self.calls("creating the S3 client"):
            return aws_client(
                "s3",
                cfg,
                s3={"addressing_style": "path" if cfg.path_style else "auto"},
                max_pool_connections=max(10, cfg.max_concurrency),
            )

    def _extra_args(self) -> dict[str, str]:
        extra = {}
        if self.config.sse:
            extra["ServerSideEncryption"] = self.config.sse
        if self.config.kms_key_id:
            extra["SSEKMSKeyId"] = self.config.kms_key_id
        return extra

    def put_file(self, local: Path, key: str) -> None:
        from boto3.s3.transfer import TransferConfig

        cfg = self.config
        transfer = TransferConfig(
            multipart_threshold=cfg.multipart_threshold_mb * MB,
            multipart_chunksize=cfg.multipart_chunk_mb * MB,
            max_concurrency=cfg.max_concurrency,
        )
        with self.calls(f"uploading {key}"):
            self.client.upload_file(str(local), cfg.bucket, key, ExtraArgs=self._extra_args(), Config=transfer)

    def put_bytes(self, data: bytes, key: str) -> None:
        with self.calls(f"writing {key}"):
            self.client.put_object(
                Bucket=self.config.bucket, Key=key, Body=data, ContentType="application/json", **self._extra_args()
            )

    def read_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        with self.calls(f"reading {key}"):
            try:
                return self.client.get_object(Bucket=self.config.bucket, Key=key)["Body"].read()
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise

    def object_size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        with self.calls(f"reading the metadata of {key}"):
            try:
                return int(self.client.head_object(Bucket=self.config.bucket, Key=key)["ContentLength"])
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = keys[i : i + 1000]
            with self.calls(f"removing {len(batch)} stale object(s)"):
                reply = self.client.delete_objects(
                    Bucket=self.config.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            failed = [e for e in reply.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if failed:
                first = failed[0]
                raise self.error(
                    f"cannot remove stale object {first.get('Key')}: {first.get('Code')}: {first.get('Message')}",
                    retryable=first.get("Code") in _RETRYABLE_CODES,
                )

    def translate(self, err: Exception, action: str) -> DestinationError:
        from boto3.exceptions import S3UploadFailedError
        from botocore import exceptions as bx

        cfg = self.config
        if isinstance(err, bx.NoCredentialsError | bx.PartialCredentialsError):
            return self.error(
                f"{action}: no AWS credentials found. Set credentials.access_key_id and "
                "credentials.secret_access_key, or provide the default chain (AWS_* environment variables, "
                "~/.aws profile, web identity, ECS task role or EC2 instance role)"
            )
        if isinstance(err, bx.ProfileNotFound):
            return self.error(f"{action}: AWS profile {cfg.credentials.profile!r} not found in ~/.aws")
        if isinstance(err, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ConnectionClosedError):
            where = cfg.endpoint_url or f"the S3 endpoint of region {cfg.region or 'default'}"
            return self.error(
                f"{action}: cannot reach {where} after {cfg.max_attempts} attempt(s): {short(err)}",
                retryable=True,
            )
        if isinstance(err, bx.ReadTimeoutError):
            return self.error(f"{action}: the store did not answer in time: {short(err)}", retryable=True)
        if isinstance(err, bx.ClientError | S3UploadFailedError):
            if isinstance(err, bx.ClientError):
                code = err.response.get("Error", {}).get("Code", "")
                status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            else:
                m = _CODE.search(str(err))
                code, status = (m.group(1) if m else ""), 0
            return self._client_error(code, status, action, err)
        if isinstance(err, bx.BotoCoreError):
            return self.error(f"{action} failed: {short(err)}", retryable=True)
        return super().translate(err, action)

    def _client_error(self, code: str, status: int, action: str, err: Exception) -> DestinationError:
        cfg = self.config
        if code == "NoSuchBucket":
            return self.error(f"{action}: bucket {cfg.bucket!r} does not exist (create it, or fix `bucket`)")
        if code == "InvalidAccessKeyId":
            return self.error(
                f"{action}: the access key id is not known to the store (check credentials.access_key_id)"
            )
        if code == "SignatureDoesNotMatch":
            return self.error(
                f"{action}: the request signature does not match: the secret access key is wrong "
                "(check credentials.secret_access_key)"
            )
        if code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
            return self.error(f"{action}: the session token is expired or invalid ({code})")
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
            return self.error(
                f"{action}: bucket {cfg.bucket!r} is in another region than {cfg.region or 'the default'} "
                f"({code}): fix `region`"
            )
        if code.startswith("KMS."):
            return self.error(f"{action}: the KMS key cannot be used ({code}): check kms_key_id and its policy")
        if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
            return self.error(
                f"{action}: access denied ({code or 403}). The credentials need s3:PutObject, s3:GetObject, "
                "s3:DeleteObject and s3:ListBucket on the bucket"
                + (" and kms:GenerateDataKey/kms:Decrypt on the key" if cfg.sse == "aws:kms" else "")
            )
        if code in _RETRYABLE_CODES or status >= 500:
            return self.error(
                f"{action}: the store failed after {cfg.max_attempts} attempt(s): {code or status}: {short(err)}",
                retryable=True,
            )
        return self.error(f"{action} failed: {code or status}: {short(err)}")
