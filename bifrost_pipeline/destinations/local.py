"""`local`: a directory on this machine (the embedded default)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from bifrost_pipeline.destinations.base import DestinationContext, FileStoreDestination, PrefixedConfig


class LocalConfig(PrefixedConfig):
    path: str = "exports"  # relative paths are resolved from the pipeline's data_dir


class LocalDestination(FileStoreDestination):
    kind = "local"
    Config = LocalConfig
    config: LocalConfig

    @staticmethod
    def root_of(config: LocalConfig, context: DestinationContext) -> Path:
        p = Path(config.path).expanduser()
        return p if p.is_absolute() else context.data_dir / p

    @property
    def root(self) -> Path:
        return self.root_of(self.config, self.context)

    @classmethod
    def location_key(cls, config, context) -> str:
        return f"local:{cls.root_of(config, context).resolve()}/{config.prefix}"

    def describe(self) -> str:
        return str(self.root)

    def uri(self, key: str) -> str:
        return str(self.root / key)

    def _target(self, key: str) -> Path:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def put_file(self, local: Path, key: str) -> None:
        target = self._target(key)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            # A rename is atomic only within one filesystem: copy to a temp name beside the target first.
            shutil.copyfile(local, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise self.error(f"cannot write {target}: {err.strerror or err}") from None

    def put_bytes(self, data: bytes, key: str) -> None:
        target = self._target(key)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def read_bytes(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def object_size(self, key: str) -> int | None:
        try:
            return (self.root / key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            (self.root / key).unlink(missing_ok=True)
