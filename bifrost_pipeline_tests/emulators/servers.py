"""Start a local server as a child process on a free loopback port, wait until it answers, stop it by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class Server:
    def __init__(self, name: str, proc: subprocess.Popen, port: int, log: Path):
        self.name, self.proc, self.port, self.log = name, proc, port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start_server(
    name: str,
    cmd: list[str],
    port: int,
    log_dir: Path,
    *,
    env: dict[str, str] | None = None,
    ready: Callable[[], bool] | None = None,
    timeout: float = 60.0,
) -> Server:
    """Run `cmd` in its own process group; wait until `ready()` (default: the port accepts connections)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    fh = open(log, "wb")
    proc = subprocess.Popen(
        cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
    )
    server = Server(name, proc, port, log)
    check = ready or (lambda: port_open(port))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if check():
                return server
        except Exception:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{name} did not become ready in {timeout:.0f}s:\n{log.read_text()[-3000:]}")
