"""Demo traffic: run the proxy in-process with the built-in mock upstream and send it a mix of requests.

Used by ``bifrost-pipeline demo``: no provider account is needed. The proxy runs on a free loopback port in
a background thread, gets ``n`` requests (chat, streamed chat, responses, embeddings and a few upstream
errors, from several customers and providers), then shuts down the way it does on SIGTERM, which publishes
every segment. Returns the number of records written.
"""

from __future__ import annotations

import random
import socket
import threading
import time

from bifrost_pipeline.config import AppConfig

MODELS = [
    ("openai/gpt-4o-mini", "chat"),
    ("openai/gpt-4o", "chat"),
    ("anthropic/claude-3-5-sonnet", "chat"),
    ("mistral/mistral-large", "chat"),
    ("openai/gpt-4.1", "responses"),
    ("openai/text-embedding-3-small", "embeddings"),
]
CUSTOMERS = ["cust_001", "cust_002", "cust_003", "cust_004"]
PROMPTS = [
    "Summarize the quarterly revenue report.",
    "Translate 'good morning' to French.",
    "Explain retries with exponential backoff.",
    "Draft a reply to a refund request.",
]


def send_demo_traffic(app: AppConfig, n: int, *, seed: int = 7, timeout_s: float = 60.0) -> int:
    import httpx
    import uvicorn

    from .app import MOCK_PREFIX, ProxyApp
    from .server import _server_class

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The demo's own traffic to the built-in mock carries no virtual key: the gate is off for it alone.
    demo_proxy = app.proxy.model_copy(update={"require_virtual_key": False, "virtual_keys": []})
    proxy = ProxyApp(app.model_copy(update={"proxy": demo_proxy}), mock_upstream=True)
    proxy.use_mock_at(f"http://127.0.0.1:{port}{MOCK_PREFIX}/v1")
    config = uvicorn.Config(
        proxy,
        loop="asyncio",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=app.proxy.shutdown_grace_s,
    )
    server = _server_class()(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="demo-proxy", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the demo proxy did not start")
        time.sleep(0.05)

    rng = random.Random(seed)
    customer_header = app.proxy.customer_header
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for i in range(n):
                model, kind = rng.choice(MODELS)
                headers = {
                    customer_header: rng.choice(CUSTOMERS),
                    "x-bf-lh-source": "demo",
                    "x-bf-lh-env": rng.choice(["production", "staging"]),
                }
                if i % 10 == 9:
                    headers["x-mock-status"] = rng.choice(["429", "500", "503"])
                prompt = rng.choice(PROMPTS)
                if kind == "chat":
                    body = {
                        "model": model,
                        "messages": [{"role": "user", "content": prompt}],
                        "stream": i % 3 == 0,
                    }
                    path = "/v1/chat/completions"
                elif kind == "responses":
                    body, path = {"model": model, "input": prompt}, "/v1/responses"
                else:
                    body, path = {"model": model, "input": [prompt]}, "/v1/embeddings"
                resp = client.post(path, json=body, headers=headers)
                resp.read()
    finally:
        server.should_exit = True
        thread.join(timeout_s)
    return proxy.writer.written
