"""Fixtures of the log server's tests: a landing zone and raw_logs with generated traffic, and a real server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date

import pytest
import uvicorn

from bifrost_pipeline import sample
from bifrost_pipeline.config import AppConfig
from bifrost_pipeline.validation import validate_day
from bifrost_pipeline_tests.helpers import make_app

RAW_DAY = date(2024, 1, 14)  # validated into raw_logs (its segments stay, older than the partition)
LIVE_DAY = date(2024, 1, 15)  # landed only
PER_DAY = 300
KEY = "test-logs-key-full"
NO_CONTENT_KEY = "test-logs-key-meta"
AUTH = {"authorization": f"Bearer {KEY}"}


def logs_app(tmp_path, **logs) -> AppConfig:
    keys = [{"key": KEY, "name": "full"}, {"key": NO_CONTENT_KEY, "name": "meta", "content": False}]
    return make_app(tmp_path, logs={"api_keys": keys, **logs})


@pytest.fixture(scope="module")
def landed(tmp_path_factory) -> tuple[AppConfig, list[dict]]:
    """An app with a raw day and a landed-only day, and every record they hold (the expected answers).

    Shared by a module's tests: they only read it."""
    app = logs_app(tmp_path_factory.mktemp("landed"))
    sample.land_day(app.landing_dir, RAW_DAY, PER_DAY)
    validate_day(app, RAW_DAY)
    sample.land_day(app.landing_dir, LIVE_DAY, PER_DAY)
    expected = [*sample.generate_day(RAW_DAY, PER_DAY), *sample.generate_day(LIVE_DAY, PER_DAY)]
    return app, expected


@contextlib.contextmanager
def serve(asgi) -> Iterator[str]:
    """Run `asgi` under uvicorn on a free loopback port; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the log server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
