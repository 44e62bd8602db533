"""Run the proxy on uvicorn (uvloop + httptools) with a graceful SIGTERM.

On SIGTERM uvicorn stops accepting connections and lets in-flight requests (streams included) finish for up
to ``proxy.shutdown_grace_s``; then the app's lifespan shutdown drains the landing queue and publishes every
open segment. Only then does the process exit.

With ``workers > 1`` the process binds the socket, forks that many workers that accept on it (each its own
app, landing writer and segments: segment names carry the worker's pid) and supervises them: SIGTERM or
SIGINT is passed on to every worker as SIGTERM (each drains as above), a worker that dies otherwise is
replaced (its successor's start publishes what it left, as recovery does for any dead pid), and the exit
status is the worst of the workers'. Metrics are shared through prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set up by the CLI before prometheus_client is imported).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable

from bifrost_pipeline.config import AppConfig

from .app import MOCK_PREFIX, ProxyApp

log = logging.getLogger("bifrost_pipeline.proxy")


_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory(top_pad: int = 64 << 20, mmap_threshold: int = 32 << 20) -> bool:
    """Have glibc's malloc keep ``top_pad`` bytes free at the top of the heap instead of handing freed memory
    back to the system at once, and take blocks below ``mmap_threshold`` (a batch's body) from the heap too.
    An intake batch allocates its lines (megabytes) and frees them once landed: handed back, the next batch
    takes a page fault for every page again (measured: a fifth of /v1/traces' time). Setting these turns off
    glibc's own adjustment of the threshold, hence both. False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TOP_PAD, top_pad))


def _install_uvloop() -> str:
    try:
        import uvloop  # noqa: F401

        return "uvloop"
    except ImportError:
        return "asyncio"


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that a graceful SIGTERM/SIGINT ends in a normal exit (status 0 when every
        record was published) instead of re-raising the signal once shut down."""

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server


def serve(
    app_config: AppConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    mock_upstream: bool = False,
    log_level: str = "info",
    workers: int = 1,
) -> int:
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host = host or app_config.proxy.host
    port = app_config.proxy.port if port is None else port
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    port = sock.getsockname()[1]
    print(f"bifrost-pipeline proxy listening on http://{host}:{port}", flush=True)
    run = functools.partial(_run_worker, app_config, sock, host, port, mock_upstream, log_level)
    if workers <= 1:
        return run()
    log.info("bifrost proxy: %d workers", workers)
    return _supervise(workers, run)


def _supervise(workers: int, run: Callable[[], int]) -> int:
    """Fork ``workers`` processes running ``run``; pass SIGTERM/SIGINT on; replace a worker that dies
    before a stop; return the worst exit status."""
    stopping = False
    pids: dict[int, int] = {}  # pid -> exit status, once it is known

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = run()
            except BaseException:
                log.exception("proxy worker %d failed", os.getpid())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids[pid] = -1

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid, status in pids.items():
            if status < 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)  # never SIGINT: a second SIGINT makes uvicorn cut streams

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(workers):
        fork()
    while any(status < 0 for status in pids.values()):
        pid, status = os.wait()
        code = os.waitstatus_to_exitcode(status)
        pids[pid] = code if code >= 0 else 1
        if not stopping:
            log.error("proxy worker %d ended (status %d) before a stop: starting another", pid, code)
            del pids[pid]
            fork()
    return max(pids.values())


def _run_worker(
    app_config: AppConfig, sock: socket.socket, host: str, port: int, mock_upstream: bool, log_level: str
) -> int:
    import uvicorn

    app = ProxyApp(app_config, mock_upstream=mock_upstream)
    if mock_upstream:
        local = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        app.use_mock_at(f"http://{local}:{port}{MOCK_PREFIX}/v1")
    # If the process leaves without a lifespan shutdown (second signal), still publish what was written.
    atexit.register(app.writer.close, 10.0)

    config = uvicorn.Config(
        app,
        loop=_install_uvloop(),
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=app_config.proxy.shutdown_grace_s,
        timeout_keep_alive=30,
        backlog=4096,
    )
    server = _server_class()(config)
    log.info(
        "bifrost proxy on http://%s:%d (landing: %s%s)",
        host,
        port,
        app_config.landing_dir,
        ", mock upstream" if mock_upstream else "",
    )
    if os.environ.get("BIFROST_PROXY_GC_FREEZE", "1") != "0":
        # Everything loaded so far lives as long as the process: keep it out of the collector's scans so
        # that a full collection under load stays short (it shows in the p99 otherwise).
        gc.collect()
        gc.freeze()
    keep_freed_memory()
    try:
        server.run(sockets=[sock])
    finally:
        app.writer.close(10.0)
    if app.writer.error is not None or app.writer.lost:
        return 1
    return 0 if server.started else 1
