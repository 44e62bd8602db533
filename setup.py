"""Compiles the proxy's hot modules with Cython (``bifrost_pipeline/proxy/native.py`` lists them and says why).

Everything else about the package is in pyproject.toml. The compiled modules are optional: without Cython or
a C compiler, or with BIFROST_NATIVE=0, the package installs and runs from source (slower, the same). Each
module built gets the SHA-256 of its source recorded beside it, by which ``native`` tells a stale one.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
native = runpy.run_path(str(ROOT / "bifrost_pipeline" / "proxy" / "native.py"))
PACKAGE_DIR = Path(*native["PACKAGE"].split("."))


def _sources() -> dict[str, Path]:
    return {f"{native['PACKAGE']}.{name}": PACKAGE_DIR / source for name, source in native["NATIVE_MODULES"].items()}


class BuildExtRecordingSources(build_ext):
    """build_ext that records, beside each module it built, the SHA-256 of the source it built it from, and
    that leaves a module it cannot compile to run from source (warning) instead of failing the install."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as err:  # no compiler, no Python headers: the source runs instead
            print(f"warning: {ext.name} not compiled, it runs from source ({err})", file=sys.stderr)
            return
        digest = native["source_sha256"](ROOT / _sources()[ext.name])
        _record(Path(self.get_ext_fullpath(ext.name))).write_text(digest + "\n")

    def copy_extensions_to_source(self):  # editable installs: the modules and their records, beside the sources
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            in_place, built = (Path(p) for p in self._get_inplace_equivalent(build_py, ext))
            if _record(built).exists():
                self.copy_file(str(_record(built)), str(_record(in_place)), level=self.verbose)


def _record(module_file: Path) -> Path:
    return module_file.with_name(module_file.name + native["SOURCE_HASH_SUFFIX"])


def _extensions() -> list:
    if os.environ.get("BIFROST_NATIVE", "1") == "0":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("warning: Cython is not installed; the proxy's modules run from source", file=sys.stderr)
        return []
    modules = [Extension(name, [str(source)], optional=True) for name, source in _sources().items()]
    return cythonize(
        modules,
        language_level=3,
        quiet=True,
        compiler_directives={
            # The .py modules compile as they run from source: annotations stay documentation, not C types
            # that would refuse a dict subclass or a bool where an int is annotated.
            "annotation_typing": False,
            "binding": True,
            "embedsignature": True,
        },
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExtRecordingSources})
