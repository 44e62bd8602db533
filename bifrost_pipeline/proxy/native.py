"""The proxy's compiled modules: which there are, and whether the ones built match their sources.

The intake's hot path (``/v1/traces``: reading a request's spans, mapping each to its record, checking it) is
compiled with Cython when the package is installed (``setup.py``): the ``.py`` modules below as they are,
``otlp_scan.pyx``, which reads spans straight from a request's bytes, and ``check_scalars.pyx``, which
checks a record's scalar fields for the checks ``compiled_schema`` writes (``/v1/logs`` too). Compiled,
``/v1/traces`` takes about 1.6x the spans per core (docs/benchmarks.md). Without a C compiler the install
builds none of them and everything runs from source, slower and the same (``test_native`` and
``test_compiled_schema`` check both ways agree).

A compiled module shadows its source, so one built before its source was edited would run the old code.
Each build records the SHA-256 of the source it compiled (and of its ``.pxd``) beside the module
(``<module>.so.source-sha256``);
at import, a module whose record does not match its source runs from source with a warning, and
``otlp_scan`` and ``check_scalars`` (which have no Python twin) are not used. ``BIFROST_NATIVE=0`` runs everything from source.

Only the standard library here: ``setup.py`` reads this file before anything is installed.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from pathlib import Path

PACKAGE = "bifrost_pipeline.proxy"
HERE = Path(__file__).resolve().parent
# module -> the source its compiled form is built from (in this package)
NATIVE_MODULES = {
    "otlp_scan": "otlp_scan.pyx",
    "check_scalars": "check_scalars.pyx",
    "otlp_wire": "otlp_wire.py",
    "otlp": "otlp.py",
    "intake": "intake.py",
    "record": "record.py",
    "pricing": "pricing.py",
}
SOURCE_HASH_SUFFIX = ".source-sha256"

log = logging.getLogger(__name__)


def source_sha256(path: Path) -> str:
    """Of the source and of the ``.pxd`` beside it (C declarations for the compiled form), if any."""
    digest = hashlib.sha256(path.read_bytes())
    declarations = path.with_suffix(".pxd")
    if path.suffix == ".py" and declarations.exists():
        digest.update(declarations.read_bytes())
    return digest.hexdigest()


def compiled_file(name: str, directory: Path = HERE) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = directory / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def state(name: str) -> str:
    """"compiled", or why the module runs from source: "disabled" (BIFROST_NATIVE=0), "not built", or
    "stale" (built from another version of its source)."""
    if os.environ.get("BIFROST_NATIVE", "1") == "0":
        return "disabled"
    built = compiled_file(name)
    if built is None:
        return "not built"
    source = HERE / NATIVE_MODULES[name]
    if not source.exists():
        return "compiled"  # an install without sources: the compiled module is all there is
    record = built.with_name(built.name + SOURCE_HASH_SUFFIX)
    try:
        recorded = record.read_text().strip()
    except OSError:
        return "stale"
    return "compiled" if recorded == source_sha256(source) else "stale"


def states() -> dict[str, str]:
    return {name: state(name) for name in NATIVE_MODULES}


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the ``.py`` source of the modules whose compiled form must not be used (ahead of the default
    finder, which prefers an extension module to a source file)."""

    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != PACKAGE or name not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, HERE / NATIVE_MODULES[name])


def install() -> dict[str, str]:
    """Run from source every ``.py`` module whose compiled form is stale or disabled; return the states."""
    found = states()
    use_source = {
        name for name, how in found.items() if how in ("stale", "disabled") and NATIVE_MODULES[name].endswith(".py")
    }
    for name in sorted(n for n, how in found.items() if how == "stale"):
        log.warning(
            "%s.%s: the compiled module was built from another version of %s; running the source (slower). "
            "Rebuild with `make install` (or pip install -e .)",
            PACKAGE, name, NATIVE_MODULES[name],
        )  # fmt: skip
    if use_source and not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder(use_source))
    return found
