"""The one interface every destination implements, and the shared file-store logic.

The export step stages every dataset of a partition as local files first (in the export's format, plus a
Parquet copy that warehouses load); a destination then ships that `PartitionOutput` with
`write_partition`. A new store is one module with a `Destination` subclass (and its `Config` model) and
one line in `destinations/__init__.py`; a warehouse subclasses `warehouse.Warehouse` (docs/warehouses.md).

Destinations never see the application's config: they get a `DestinationContext` (the export's name and the
few paths they resolve against), built from the config in one place (`config.destination_context`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import string
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

MANIFEST_NAME = "_manifest.json"
PREFIX_FIELDS = ("year", "month", "day", "hour", "export", "partition")


class DestinationError(RuntimeError):
    """A write failed for a reason the user can act on. Never carries a secret."""

    def __init__(self, export: str, store: str, message: str, *, retryable: bool = False):
        self.export, self.store, self.retryable = export, store, retryable
        super().__init__(f"export {export!r} -> {store}: {message}")


# Shorter values are not replaced: they would match ordinary words of a message and protect nothing anyway.
MIN_SECRET_LENGTH = 3
_SIGNED_PARAMS = re.compile(
    r"(?i)\b(sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|"
    r"x-goog-credential|accountkey|sharedaccesssignature|access_token)=[^&;\s'\"]+"
)
URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def scrub(text: str, secrets: Iterable[SecretStr | str | None]) -> str:
    """`text` without the given secret values, URL credentials or signature-like URL parameters.

    The one scrubber of every destination: a driver or client library may echo a password, a connection
    string or a signed URL back in its error.
    """
    for secret in secrets:
        value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if value and len(value) >= MIN_SECRET_LENGTH:
            text = text.replace(value, "***")
    return URL_USERINFO.sub("***@", _SIGNED_PARAMS.sub(lambda m: m.group(1) + "=***", text))


@dataclass(frozen=True)
class DestinationContext:
    """What a destination needs to know beyond its own config block."""

    export: str  # the export's name
    base_dir: Path  # relative paths of a destination's config (a key file, a DuckDB file) resolve here
    data_dir: Path  # the pipeline's data directory (`local` exports default under it)
    warehouse_path: Path  # the embedded DuckDB warehouse
    # Where a destination says what it is doing while it waits (a locked file, a slow store); the export
    # asset passes its run's logger, so these lines reach the run's log in the UI.
    log: logging.Logger = field(
        default_factory=lambda: logging.getLogger("bifrost_pipeline.destinations"), compare=False, repr=False
    )

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p


class DestinationConfig(BaseModel):
    # `schema` is a config key of several stores but a BaseModel attribute: declare such fields as
    # `schema_name: str = Field(..., alias="schema")`.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def none_if_empty(v: Any) -> Any:
    """A credentials block whose values are all empty means none: `${VAR}` set to "" on purpose falls back
    to the store's default credential chain."""
    return None if isinstance(v, dict) and not any(v.values()) else v


def check_prefix(value: str) -> str:
    """Reject unknown placeholders in a prefix template at config load."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as err:
        raise ValueError(f"invalid prefix template {value!r}: {err}") from None
    for name in names:
        if name not in PREFIX_FIELDS:
            raise ValueError(
                f"unknown placeholder {{{name}}} in prefix (known: "
                + ", ".join("{" + f + "}" for f in PREFIX_FIELDS)
                + ")"
            )
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"prefix must be relative and must not contain '..', got {value!r}")
    return value


class PrefixedConfig(DestinationConfig):
    prefix: str = "{export}/{partition}/"

    _check_prefix = field_validator("prefix")(classmethod(lambda cls, v: check_prefix(v)))


def render_prefix(template: str, *, export: str, partition_key: str, window_start: datetime) -> str:
    rendered = template.format(
        year=f"{window_start:%Y}",
        month=f"{window_start:%m}",
        day=f"{window_start:%d}",
        hour=f"{window_start:%H}",
        export=export,
        partition=partition_key,
    )
    rendered = re.sub(r"/+", "/", rendered).lstrip("/")
    return rendered if rendered.endswith("/") or not rendered else rendered + "/"


@dataclass(frozen=True)
class DatasetFile:
    """One dataset of one partition, staged locally."""

    dataset: str
    path: Path  # the file in the export's format
    file_name: str  # its name under the partition's prefix
    rows: int
    bytes: int
    sha256: str
    parquet_path: Path  # a Parquet copy (the same file when the format is parquet)
    columns: tuple[tuple[str, str], ...]  # (name, arrow type string), in order
    json_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartitionOutput:
    export: str
    partition_key: str
    window_start: datetime
    window_end: datetime
    format: str
    compression: str
    files: tuple[DatasetFile, ...]
    exported_at: datetime
    run_id: str

    def manifest(self, prefix: str = "") -> dict[str, Any]:
        return {
            "export": self.export,
            "partition": self.partition_key,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "format": self.format,
            "compression": self.compression,
            "exported_at": self.exported_at.isoformat(),
            "run_id": self.run_id,
            "prefix": prefix,
            "files": [
                {
                    "dataset": f.dataset,
                    "name": f.file_name,
                    "rows": f.rows,
                    "bytes": f.bytes,
                    "sha256": f.sha256,
                }
                for f in self.files
            ],
        }


@dataclass
class WriteResult:
    location: str  # where the partition now is (no secret in it)
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


class Destination(ABC):
    kind: ClassVar[str]
    Config: ClassVar[type[DestinationConfig]]
    # Warehouses share the run-concurrency limit of dagster.yaml (tag bifrost/warehouse); see warehouse.py.
    is_warehouse: ClassVar[bool] = False

    def __init__(self, config: DestinationConfig, context: DestinationContext):
        self.config = config
        self.context = context

    @property
    def export_name(self) -> str:
        return self.context.export

    @abstractmethod
    def write_partition(self, output: PartitionOutput) -> WriteResult:
        """Replace the partition's data at the destination with `output`, atomically for readers."""

    @abstractmethod
    def count_rows(self, output: PartitionOutput, result: WriteResult) -> dict[str, int]:
        """Rows of each dataset of this partition as the destination itself reports them, read back from it
        after `write_partition` (never taken from `output`'s staged files): what the export's completeness
        check compares with the rows selected from raw_logs. A dataset the store does not hold counts 0."""

    @abstractmethod
    def describe(self) -> str:
        """Where this destination writes, for the UI and logs; never a secret."""

    @classmethod
    def location_key(cls, config: DestinationConfig, context: DestinationContext) -> str | None:
        """Identifies where outputs land, to reject two exports that would overwrite each other."""
        return None

    def secrets(self) -> list[SecretStr | str | None]:
        """Values of this destination's config to keep out of every message (see `scrub`)."""
        return []

    def error(self, message: str, *, retryable: bool = False) -> DestinationError:
        return DestinationError(
            self.export_name, self.describe(), scrub(message, self.secrets()), retryable=retryable
        )

    def translate(self, err: Exception, action: str) -> DestinationError:
        """A client library's exception -> a `DestinationError` (stores map their error codes)."""
        return self.error(f"{action} failed: {type(err).__name__}: {err}")

    @contextmanager
    def calls(self, action: str) -> Iterator[None]:
        """Every exception of the store's client inside becomes a named, scrubbed `DestinationError`."""
        try:
            yield
        except DestinationError:
            raise
        except Exception as err:
            # `from None`: the client's exception may carry a signed URL or a key; its summary is in the message.
            raise self.translate(err, action) from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


class FileStoreDestination(Destination):
    """Shared logic of stores that hold files under a prefix (local directory, S3, GCS, Azure Blob).

    A partition is published as: every data file (each put atomically: temp name + rename, or a single
    object PUT), then the files of the previous manifest that this run did not write are removed, then the
    manifest is written last. A reader that trusts the manifest never sees a half-written partition.
    """

    config: PrefixedConfig

    @abstractmethod
    def put_file(self, local: Path, key: str) -> None:
        """Upload one local file to `key`, atomically (no partial object is ever visible)."""

    @abstractmethod
    def put_bytes(self, data: bytes, key: str) -> None: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes | None:
        """The object's content, or None when it does not exist."""

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> None: ...

    @abstractmethod
    def object_size(self, key: str) -> int | None:
        """The stored object's size in bytes from its metadata (not its content), or None when it is missing."""

    @abstractmethod
    def uri(self, key: str) -> str: ...

    def prefix_for(self, output: PartitionOutput) -> str:
        return render_prefix(
            self.config.prefix,
            export=output.export,
            partition_key=output.partition_key,
            window_start=output.window_start,
        )

    def write_partition(self, output: PartitionOutput) -> WriteResult:
        prefix = self.prefix_for(output)
        manifest_key = prefix + MANIFEST_NAME
        previous = self.read_bytes(manifest_key)
        old_names: set[str] = set()
        if previous:
            try:
                old_names = {f["name"] for f in json.loads(previous)["files"]}
            except (ValueError, KeyError, TypeError):
                old_names = set()
        written = []
        for f in output.files:
            key = prefix + f.file_name
            self.put_file(f.path, key)
            written.append(key)
        stale = sorted(prefix + n for n in old_names - {f.file_name for f in output.files})
        if stale:
            self.delete(stale)
        self.put_bytes(json.dumps(output.manifest(prefix), indent=2).encode(), manifest_key)
        return WriteResult(
            location=self.uri(prefix),
            written=[self.uri(k) for k in written] + [self.uri(manifest_key)],
            removed=[self.uri(k) for k in stale],
            rows={f.dataset: f.rows for f in output.files},
        )

    def count_rows(self, output: PartitionOutput, result: WriteResult) -> dict[str, int]:
        """The rows the partition's manifest, read back from the store, lists for each dataset; a dataset
        whose object is missing or not of the listed size counts 0 (its rows cannot be read as written)."""
        prefix = self.prefix_for(output)
        data = self.read_bytes(prefix + MANIFEST_NAME)
        if data is None:
            return {f.dataset: 0 for f in output.files}
        try:
            listed = json.loads(data)["files"]
            rows = {f["dataset"]: 0 for f in listed}
            for f in listed:
                if self.object_size(prefix + f["name"]) == f["bytes"]:
                    rows[f["dataset"]] = int(f["rows"])
        except (ValueError, KeyError, TypeError) as err:
            raise self.error(f"the manifest {self.uri(prefix + MANIFEST_NAME)} is unreadable: {err}") from None
        return rows
