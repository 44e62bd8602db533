"""Reading the config file: decoding, `${VAR}` substitution, checking, and reporting every problem at once.

Every problem is reported with its path (``log_exports.exports[1].schedule.day: ...``) and all problems
are reported at once. Secrets (``${VAR}`` values) never appear in a message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bifrost_pipeline.config.app import AppConfig
from bifrost_pipeline.config.exports import ExportConfig, LoadContext, LogExports

if TYPE_CHECKING:
    from bifrost_pipeline.destinations.base import Destination

DEFAULT_CONFIG_PATH = "bifrost_pipeline.yaml"
CONFIG_ENV = "BIFROST_PIPELINE_CONFIG"

# Placeholders filled when an export runs, not from the environment.
EXPORT_VARIABLES = ("EXPORT_TIMESTAMP", "EXPORT_VERSION", "EXPORT_NAME", "EXPORT_PARTITION")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The configuration is wrong; ``problems`` holds one ``path: message`` line per mistake."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + f"{len(problems)} problem(s) in the configuration:\n  " + "\n  ".join(problems))


# --- problems -------------------------------------------------------------------------------------------------


def format_path(loc: tuple | list) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _written_path(loc: tuple, document: Any) -> tuple:
    """`loc` as the user wrote it: without the member tags a discriminated union adds to pydantic's path.

    (`transformations[0].anonymize.key_env` is `transformations[0].key_env` in the file.)
    """
    out: list = []
    node = document
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # the tag of the union member this object was validated as
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def _pydantic_problems(err: ValidationError, document: Any = None, prefix: tuple = ()) -> list[str]:
    """One ``path: message`` line per error of `err`, raised validating `document` found at `prefix`."""
    problems = []
    for e in err.errors(include_url=False, include_input=False):
        loc = prefix + _written_path(tuple(e["loc"]), document)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
            # A model validator names the field in its message ("day: ..."); move it into the path.
            m = re.match(r"^([a-z_][a-z0-9_.\[\]]*): (.*)$", msg, re.S)
            if m:
                head = m.group(1)
                parts = [int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", head) if p]
                if loc and loc[-1] == parts[0]:
                    parts = parts[1:]
                loc, msg = loc + tuple(parts), m.group(2)
        problems.append(f"{format_path(loc)}: {msg}")
    return problems


# --- substitution ---------------------------------------------------------------------------------------------


def substitute_env(value: Any, path: tuple, env: Mapping[str, str], problems: list[str]) -> Any:
    """Replace ``${VAR}`` (and ``${VAR:-default}``) in every string from the environment."""
    if isinstance(value, dict):
        return {k: substitute_env(v, path + (k,), env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, path + (i,), env, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in EXPORT_VARIABLES:
            return m.group(0)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(f"{format_path(path)}: environment variable {name} is not set")
        return ""

    return _VAR.sub(repl, value)


# --- checking -------------------------------------------------------------------------------------------------


def _validate_export(raw: Any, path: tuple, context: LoadContext) -> tuple[ExportConfig | None, list[str]]:
    if not isinstance(raw, dict):
        return None, [f"{format_path(path)}: expected an object"]
    if raw.get("enabled", True) is False:
        return None, []  # a disabled entry loads nothing (and needs none of its variables)
    problems: list[str] = []
    raw = substitute_env(raw, path, context.env, problems)
    try:
        export = ExportConfig.model_validate(raw, context=context)
    except ValidationError as err:
        return None, problems + _pydantic_problems(err, raw, path)
    return (None, problems) if problems else (export, [])


def _validate_exports(exports_raw: list, context: LoadContext) -> tuple[list[ExportConfig], dict[str, int], list[str]]:
    """The enabled exports, the index of each in the file by name, and the problems of all entries."""
    exports: list[ExportConfig] = []
    index: dict[str, int] = {}
    problems: list[str] = []
    for i, entry in enumerate(exports_raw):
        path = ("log_exports", "exports", i)
        export, errs = _validate_export(entry, path, context)
        problems.extend(errs)
        if export is None:
            continue
        if export.name in index:
            problems.append(
                f"{format_path(path + ('name',))}: {export.name!r} is already the name of exports[{index[export.name]}]"
            )
            continue
        index[export.name] = i
        exports.append(export)
    return exports, index, problems


def _split_exports(raw: dict, env: Mapping[str, str], problems: list[str]) -> tuple[dict, list]:
    """The other sections with their ${VAR} filled in, and the raw export entries (each filled in on its own)."""
    sections = substitute_env({k: v for k, v in raw.items() if k != "log_exports"}, (), env, problems)
    log_exports = raw.get("log_exports")
    if log_exports is None:
        return sections, []
    if not isinstance(log_exports, dict):
        problems.append("log_exports: expected an object")
        return sections, []
    exports_raw = log_exports.get("exports") or []
    if not isinstance(exports_raw, list):
        problems.append("log_exports.exports: expected a list of exports")
        exports_raw = []
    sections["log_exports"] = {k: v for k, v in log_exports.items() if k != "exports"}
    return sections, exports_raw


def _exports_enabled(sections: dict) -> bool:
    try:
        return LogExports.model_validate(sections.get("log_exports") or {}).enabled
    except ValidationError:
        return True  # reported when the whole file is checked; the entries are still checked meanwhile


def parse_config(
    raw: Any,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    with_exports: bool = True,
    destinations: Mapping[str, type[Destination]] | None = None,
) -> AppConfig:
    """Check a decoded config document and return typed objects, or raise ConfigError listing every problem.

    with_exports=False skips `log_exports` (the proxy needs none of the exports' credentials).
    destinations: type -> Destination class, whose `Config` checks each export's destination config;
    default the destination registry, which imports a store's module only when an export uses it.
    """
    env = os.environ if env is None else env
    if destinations is None:
        from bifrost_pipeline.destinations import registry

        destinations = registry()
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): expected an object with log_exports, client, providers, ..."])
    problems: list[str] = []
    sections, exports_raw = _split_exports(raw, env, problems)
    exports: list[ExportConfig] = []
    index: dict[str, int] = {}
    export_problems: list[str] = []
    if with_exports and _exports_enabled(sections):
        exports, index, export_problems = _validate_exports(exports_raw, LoadContext(env, destinations))
    document = {**sections, "base_dir": (base_dir or Path.cwd()).resolve()}
    document["log_exports"] = {**document.get("log_exports", {}), "exports": exports}
    try:
        app = AppConfig.model_validate(document)
    except ValidationError as err:
        problems.extend(_pydantic_problems(err, document))
    problems.extend(export_problems)
    if problems:
        raise ConfigError(problems)
    problems = _shared_locations(app, index, destinations)
    if problems:
        raise ConfigError(problems)
    return app


def _shared_locations(app: AppConfig, index: dict[str, int], destinations: Mapping[str, type[Destination]]) -> list[str]:
    """Two exports that would write the same files or table would overwrite each other's partitions."""
    seen: dict[str, str] = {}
    problems = []
    for export in app.exports:
        key = destinations[export.destination.type].location_key(
            export.destination.config, app.destination_context(export.name)
        )
        if key is None:
            continue
        key = key.replace("{export}", export.name)
        if key in seen:
            problems.append(
                f"log_exports.exports[{index[export.name]}].destination: writes where exports[{index[seen[key]]}] "
                f"({seen[key]!r}) writes; give each export its own prefix (e.g. with {{export}}) or table"
            )
        else:
            seen[key] = export.name
    return problems


# --- reading the file -----------------------------------------------------------------------------------------


def decode(text: str, source: str) -> Any:
    """Decode JSON or YAML text; a syntax error names the file, line and column."""
    if source.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError([f"line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}"], source) from None
    import yaml

    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}invalid YAML: {getattr(err, 'problem', None) or err}"], source) from None


def config_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_config(
    path: str | os.PathLike | None = None,
    *,
    env: Mapping[str, str] | None = None,
    with_exports: bool = True,
    destinations: Mapping[str, type[Destination]] | None = None,
) -> AppConfig:
    """Load the config file (``path``, else $BIFROST_PIPELINE_CONFIG, else ./bifrost_pipeline.yaml)."""
    p = config_path(path)
    if not p.exists():
        raise ConfigError([f"no such file (set {CONFIG_ENV} or pass a path)"], str(p))
    raw = decode(p.read_text(), str(p))
    try:
        return parse_config(
            raw, env=env, base_dir=p.resolve().parent, with_exports=with_exports, destinations=destinations
        )
    except ConfigError as err:
        raise ConfigError(err.problems, str(p)) from None
