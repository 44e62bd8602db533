"""``bifrost-pipeline logs``: the argparse sub-command and the uvicorn server."""

from __future__ import annotations

import argparse
import sys


def add_logs_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "logs",
        help="serve the log API, the live stream and the log explorer page (default http://127.0.0.1:8090)",
        description="Serve GET /api/logs, /ws, /api/logs/stream and the log explorer page at / over the landed "
        "segments and the raw_logs partitions of the configured pipeline.",
    )
    p.add_argument("--config", help="config file (default: $BIFROST_PIPELINE_CONFIG or ./bifrost_pipeline.yaml)")
    p.add_argument("--host", default=None, help="address to listen on (default: logs.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port to listen on (default: logs.port, 8090)")
    p.set_defaults(func=run_logs)
    return p


def run_logs(args: argparse.Namespace) -> int:
    from bifrost_pipeline.config import ConfigError, load_config

    try:
        app = load_config(args.config, with_exports=False)  # the log server needs no export credentials
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    if not app.logs.api_keys:
        print("logs.api_keys is empty: every request would be refused; add a key, e.g. "
              'logs: {api_keys: ["${BIFROST_LOGS_API_KEY}"]}', file=sys.stderr)  # fmt: skip
        return 1
    try:
        import uvicorn

        from bifrost_pipeline.logserver.app import create_app
    except ImportError as err:
        print(f"the log server needs the proxy extra (pip install 'bifrost_pipeline[proxy]'): {err}", file=sys.stderr)
        return 1
    host = args.host or app.logs.host
    port = args.port or app.logs.port
    print(f"log explorer on http://{host}:{port}/ (landing {app.landing_dir}, raw_logs {app.raw_dir})", flush=True)
    # access_log off: an SSE client may carry its key in the query string.
    uvicorn.run(create_app(app), host=host, port=port, log_level="info", access_log=False, ws="websockets-sansio")
    return 0
