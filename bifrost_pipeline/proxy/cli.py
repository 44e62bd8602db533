"""``bifrost-pipeline proxy``: the argparse sub-command (wired into the main CLI by ``add_proxy_parser``)."""

from __future__ import annotations

import argparse
import sys


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
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run_proxy)
    return p


def run_proxy(args: argparse.Namespace) -> int:
    from bifrost_pipeline.config import ConfigError, load_config

    from .server import serve

    try:
        app = load_config(args.config, with_exports=False)  # the proxy needs no export credentials
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    return serve(
        app, host=args.host, port=args.port, mock_upstream=args.mock_upstream, log_level=args.log_level
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bifrost-pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    add_proxy_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)
