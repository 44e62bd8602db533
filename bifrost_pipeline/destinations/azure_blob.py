"""`azure_blob`: Azure Blob Storage (or Azurite) through azure-storage-blob.

Files above `max_single_put_mb` go up as blocks of `max_block_size_mb` read from disk (`max_concurrency`
at a time) and are committed with one Put Block List: the blob changes only at the commit. Retries:
azure-core's exponential retry policy (timeouts, 408/429/5xx, connection errors), `max_attempts` tries.

Credentials, first that is set: `connection_string`; `account_key` (with `account_name`); `sas_token`;
else DefaultAzureCredential (AZURE_* environment variables, workload identity, managed identity, az login).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from bifrost_pipeline.destinations.base import DestinationError, PrefixedConfig
from bifrost_pipeline.destinations.object_store import (
    ObjectStoreDestination,
    check_endpoint,
    check_name,
    short,
)

MB = 1024 * 1024


class AzureBlobConfig(PrefixedConfig):
    container: str
    account_name: str | None = None
    account_key: SecretStr | None = None
    sas_token: SecretStr | None = None
    connection_string: SecretStr | None = None
    # The blob service URL: https://ACCOUNT.blob.core.windows.net by default; Azurite's is
    # http://127.0.0.1:10000/devstoreaccount1. `endpoint` is accepted as another name for it.
    account_url: str | None = Field(None, validation_alias=AliasChoices("account_url", "endpoint"))
    max_concurrency: int = Field(4, ge=1, le=64)
    max_block_size_mb: int = Field(8, ge=1, le=4000)
    max_single_put_mb: int = Field(64, ge=1, le=5000)
    max_attempts: int = Field(4, ge=1, le=20)
    # The SDK's exponential backoff: wait retry_backoff_s + retry_backoff_base ** n before retry n (n >= 1).
    retry_backoff_s: float = Field(15, ge=0)
    retry_backoff_base: float = Field(3, ge=1)
    connection_timeout: float = Field(20, gt=0)
    read_timeout: float = Field(60, gt=0)

    @field_validator("container")
    @classmethod
    def _container(cls, v: str) -> str:
        v = check_name(v, "container")
        if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", v) and v != "$root":
            raise ValueError(
                f"container {v!r} is not a valid name: 3 to 63 lowercase letters, digits and single hyphens"
            )
        return v
    _url = field_validator("account_url")(classmethod(lambda cls, v: check_endpoint(v)))

    @field_validator("account_key", "sas_token", "connection_string", mode="before")
    @classmethod
    def _blank_is_unset(cls, v):
        return None if isinstance(v, str) and not v.strip() else v

    @model_validator(mode="after")
    def _where_and_how(self):
        if not (self.connection_string or self.account_name or self.account_url):
            raise ValueError("set account_name (or account_url, or connection_string)")
        given = [k for k in ("connection_string", "account_key", "sas_token") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"set one of connection_string, account_key, sas_token (got {', '.join(given)})")
        if self.account_key and not self.account_name:
            raise ValueError("account_key needs account_name")
        return self


class AzureBlobDestination(ObjectStoreDestination):
    kind = "azure_blob"
    scheme = "az"
    Config = AzureBlobConfig
    config: AzureBlobConfig

    @classmethod
    def location_key(cls, config, context) -> str:
        where = config.account_url or config.account_name or "connection-string"
        return f"azure_blob:{where}/{config.container}/{config.prefix}"

    def container_name(self) -> str:
        return self.config.container

    def uri(self, key: str) -> str:
        account = self.config.account_name or self._account_from_client()
        return f"az://{account + '/' if account else ''}{self.config.container}/{key}"

    def _account_from_client(self) -> str | None:
        client = self.__dict__.get("container")
        if client is not None:
            return getattr(client, "account_name", None)
        if self.config.connection_string:  # AccountName=... is not a secret
            for part in self.config.connection_string.get_secret_value().split(";"):
                name, _, value = part.partition("=")
                if name.strip().lower() == "accountname":
                    return value.strip()
        return None

    def endpoint(self) -> str | None:
        return self.config.account_url

    def secrets(self) -> list[SecretStr | str | None]:
        cfg = self.config
        out: list[SecretStr | str | None] = [cfg.account_key, cfg.sas_token, cfg.connection_string]
        if cfg.sas_token:
            out.append(cfg.sas_token.get_secret_value().lstrip("?"))
        if cfg.connection_string:
            for part in cfg.connection_string.get_secret_value().split(";"):
                name, _, value = part.partition("=")
                if name.strip().lower() in ("accountkey", "sharedaccesssignature"):
                    out.append(value)
        return out

    def _client_options(self) -> dict:
        from azure.storage.blob import ExponentialRetry

        cfg = self.config
        return {
            "max_block_size": cfg.max_block_size_mb * MB,
            "max_single_put_size": cfg.max_single_put_mb * MB,
            "retry_policy": ExponentialRetry(
                initial_backoff=cfg.retry_backoff_s,
                increment_base=cfg.retry_backoff_base,
                retry_total=cfg.max_attempts - 1,
                random_jitter_range=min(3, cfg.retry_backoff_s),
            ),
            "connection_timeout": cfg.connection_timeout,
            "read_timeout": cfg.read_timeout,
        }

    @cached_property
    def container(self):
        from azure.storage.blob import BlobServiceClient

        cfg = self.config
        with self.calls("creating the Azure Blob client"):
            if cfg.connection_string:
                service = BlobServiceClient.from_connection_string(
                    cfg.connection_string.get_secret_value(), **self._client_options()
                )
            else:
                url = cfg.account_url or f"https://{cfg.account_name}.blob.core.windows.net"
                if cfg.account_key:
                    credential = {"account_name": cfg.account_name, "account_key": cfg.account_key.get_secret_value()}
                elif cfg.sas_token:
                    from azure.core.credentials import AzureSasCredential

                    credential = AzureSasCredential(cfg.sas_token.get_secret_value().lstrip("?"))
                else:
                    from azure.identity import DefaultAzureCredential

                    credential = DefaultAzureCredential()
                service = BlobServiceClient(url, credential=credential, **self._client_options())
            return service.get_container_client(cfg.container)

    def put_file(self, local: Path, key: str) -> None:
        size = local.stat().st_size
        with self.calls(f"uploading {key}"), open(local, "rb") as fh:
            # Read from the file block by block; the blob changes only when the block list is committed.
            self.container.upload_blob(
                key, fh, length=size, overwrite=True, max_concurrency=self.config.max_concurrency
            )

    def put_bytes(self, data: bytes, key: str) -> None:
        from azure.storage.blob import ContentSettings

        with self.calls(f"writing {key}"):
            self.container.upload_blob(
                key, data, overwrite=True, content_settings=ContentSettings(content_type="application/json")
            )

    def read_bytes(self, key: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        with self.calls(f"reading {key}"):
            try:
                return self.container.download_blob(key).readall()
            except ResourceNotFoundError as err:
                if getattr(err, "error_code", None) == "ContainerNotFound":
                    raise
                return None

    def object_size(self, key: str) -> int | None:
        from azure.core.exceptions import ResourceNotFoundError

        with self.calls(f"reading the properties of {key}"):
            try:
                return int(self.container.get_blob_client(key).get_blob_properties().size)
            except ResourceNotFoundError as err:
                if getattr(err, "error_code", None) == "ContainerNotFound":
                    raise
                return None

    def delete(self, keys: Iterable[str]) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        for key in keys:
            with self.calls(f"removing stale blob {key}"):
                try:
                    self.container.delete_blob(key)
                except ResourceNotFoundError as err:
                    if getattr(err, "error_code", None) == "ContainerNotFound":
                        raise

    def translate(self, err: Exception, action: str) -> DestinationError:
        from azure.core import exceptions as ax

        cfg = self.config
        code = getattr(err, "error_code", None)
        code = str(getattr(code, "value", code) or "")  # a StorageErrorCode enum, or a plain string
        status = getattr(getattr(err, "response", None), "status_code", None) or getattr(err, "status_code", 0) or 0
        if type(err).__name__ == "CredentialUnavailableError" or (
            isinstance(err, ax.ClientAuthenticationError) and status == 0
        ):
            return self.error(
                f"{action}: no Azure credentials available. Set connection_string, account_key or sas_token, "
                "or make DefaultAzureCredential work (AZURE_* environment variables, workload identity, "
                f"managed identity, az login): {short(err, 200)}"
            )
        if code == "ContainerNotFound":
            return self.error(f"{action}: container {cfg.container!r} does not exist (create it, or fix `container`)")
        # A bad shared-key signature is AuthenticationFailed on Azure, AuthorizationFailure on Azurite.
        bad_signature = code == "AuthorizationFailure" and "failed to authenticate" in str(err)
        if bad_signature or isinstance(err, ax.ClientAuthenticationError) or code in (
            "AuthenticationFailed", "InvalidAuthenticationInfo", "NoAuthenticationInformation"
        ):
            return self.error(
                f"{action}: the credentials were rejected ({code or status}); check account_name and "
                "account_key, sas_token or connection_string"
            )
        if status == 403 or code.startswith("Authorization"):
            return self.error(
                f"{action}: access denied ({code or 403}). The identity needs the Storage Blob Data "
                "Contributor role (or a SAS with read, add, create, write, delete and list), and the "
                "account's network rules must admit this client"
            )
        if isinstance(err, ax.ServiceRequestError):
            where = cfg.account_url or (
                f"{cfg.account_name}.blob.core.windows.net" if cfg.account_name else "the blob endpoint"
            )
            return self.error(
                f"{action}: cannot reach {where} after {cfg.max_attempts} attempt(s): {short(err, 200)}",
                retryable=True,
            )
        if isinstance(err, ax.ServiceResponseError) or status in (408, 429) or status >= 500:
            return self.error(f"{action}: the store failed ({code or status}): {short(err, 200)}", retryable=True)
        if isinstance(err, ax.ResourceNotFoundError):
            return self.error(f"{action}: not found ({code or 404}): {short(err, 200)}")
        if isinstance(err, ax.AzureError):
            return self.error(f"{action} failed ({code or status}): {short(err, 200)}")
        return super().translate(err, action)
