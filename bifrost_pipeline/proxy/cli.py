"""``bifrost-pipeline proxy``: the argparse sub-command (wired into the main CLI by ``add_proxy_parser``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


def add_proxy_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "proxy",
        help="run the ingestion proxy (OpenAI-compatible logging proxy + /v1/logs and /v1/traces intake)",
        description="Run the ingestion proxy: an OpenAI-compatible logging proxy in front of the configured "
        "providers, with /v1/logs and /v1/traces intake, /metrics and /health. Records land in landing.path.",
    )
    p.add_argument(
        "--config",
        default=None,
        help="the config file (default: $BIFROST_PIPELINE_CONFIG, else ./bifrost_pipeline.yaml)",
    )
    p.add_argument("--host", default=None, help="address to listen on (default: proxy.host)")
    p.add_argument("--port", type=int, default=None, help="port to listen on (default: proxy.port)")
    p.add_argument(
        "--mock-upstream",
        action="store_true",
        help="send every request to the built-in OpenAI-compatible mock (no provider account needed)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes accepting on the same port, one per core to use (default: 1); metrics are "
        "summed over them through PROMETHEUS_MULTIPROC_DIR (a fresh temporary directory unless set)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run_proxy)
    return p


def run_proxy(args: argparse.Namespace) -> int:
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        with _multiprocess_metrics_dir():
            return _run(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from bifrost_pipeline.config import ConfigError, load_config

    from .server import serve

    try:
        app = load_config(args.config, with_exports=False)  # the proxy needs no export credentials
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    return serve(
        app,
        host=args.host,
        port=args.port,
        mock_upstream=args.mock_upstream,
        log_level=args.log_level,
        workers=args.workers,
    )


@contextlib.contextmanager
def _multiprocess_metrics_dir() -> Iterator[None]:
    """PROMETHEUS_MULTIPROC_DIR for the workers, emptied first (prometheus_client reads it when imported,
    and files of an earlier run would be summed with this one's); a temporary one, removed after, if unset."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory was set")
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="bifrost-proxy-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bifrost-pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    add_proxy_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)
