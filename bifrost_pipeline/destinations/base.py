"""The one interface every destination implements, and the shared file-store logic.

The export step stages every dataset of a partition as local files first (in the export's format, plus a
Parquet copy that warehouses load); a destination then ships that `PartitionOutput` with
`write_partition`. A new store is one module with a `Destination` subclass (and its `Config` model) and
one line in `destinations/__init__.py`.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

if TYPE_CHECKING:
    from bifrost_pipeline.config import AppConfig

MANIFEST_NAME = "_manifest.json"
PREFIX_FIELDS = ("year", "month", "day", "hour", "export", "partition")


class DestinationError(RuntimeError):
    """A write failed for a reason the user can act on. Never carries a secret."""

    def __init__(self, export: str, store: str, message: str, *, retryable: bool = False):
        self.export, self.store, self.retryable = export, store, retryable
        super().__init__(f"export {export!r} -> {store}: {message}")


class DestinationConfig(BaseModel):
    # `schema` is a config key of several stores but a BaseModel attribute: declare such fields as
    # `schema_name: str = Field(..., alias="schema")`.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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

    def __init__(self, config: DestinationConfig, *, export_name: str, app: AppConfig):
        self.config = config
        self.export_name = export_name
        self.app = app

    @abstractmethod
    def write_partition(self, output: PartitionOutput) -> WriteResult:
        """Replace the partition's data at the destination with `output`, atomically for readers."""

    @abstractmethod
    def describe(self) -> str:
        """Where this destination writes, for the UI and logs; never a secret."""

    @classmethod
    def location_key(cls, config: DestinationConfig, app: AppConfig) -> str | None:
        """Identifies where outputs land, to reject two exports that would overwrite each other."""
        return None

    def error(self, message: str, *, retryable: bool = False) -> DestinationError:
        return DestinationError(self.export_name, self.describe(), message, retryable=retryable)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


class TableDestination(Destination):
    """A warehouse: each dataset lands in a table named from `config.table` (default: the export's name)."""

    @property
    def table(self) -> str:
        return self.config.table or self.export_name

    @classmethod
    def location_key(cls, config, app) -> str | None:
        # Without `table` the table is the export's own name, which no other export has.
        return cls.table_location(config, app) if config.table else None

    @classmethod
    @abstractmethod
    def table_location(cls, config, app) -> str:
        """The configured table, fully qualified (server, database, schema), in the store's case rules."""


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


def table_for(table: str, dataset: str) -> str:
    """Warehouse table of a dataset: `table` holds request_logs, `table_<dataset>` every other dataset."""
    return table if dataset == "request_logs" else f"{table}_{dataset}"


PARTITION_COLUMN = "export_partition"  # added to warehouse tables: which export partition a row belongs to
