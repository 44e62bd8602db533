"""The ``logs`` section: the log server (`bifrost-pipeline logs`): where it listens and who may read.

Every API key is a secret from the environment (``key: "${BIFROST_LOGS_API_KEY}"``), held as a `SecretStr`
so no repr, log line or config error shows it. A key that may not see content gets every record without its
content fields (the messages, the tool calls), as if content logging were off.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator

from bifrost_pipeline.config.base import Strict


class LogsApiKey(Strict):
    key: SecretStr
    name: str = "key"  # shown in the server's log instead of the key itself
    content: bool = True  # may this key read input/output content (still off when content logging is off)

    @field_validator("key")
    @classmethod
    def _not_empty(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 8:
            raise ValueError("an API key must be at least 8 characters")
        return v


class LogsConfig(Strict):
    # Loopback unless told otherwise: the logs hold prompts and answers.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8090
    # With no key the server refuses to start (every request would be 401).
    api_keys: list[LogsApiKey] = Field(default_factory=list)
    # How often the live stream looks for new lines in the landing zone (the proxy flushes every second).
    poll_interval_s: Annotated[float, Field(gt=0, le=5)] = 0.25
    # A live subscriber more than this many records behind is dropped (with a message) instead of holding memory.
    subscriber_queue: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # The largest page `limit` accepted.
    max_limit: Annotated[int, Field(ge=1, le=10_000)] = 1000
    duckdb_memory_limit: str = "1GB"
    duckdb_threads: Annotated[int, Field(ge=1, le=256)] | None = None  # default: DuckDB's (the cores)

    @model_validator(mode="before")
    @classmethod
    def _plain_keys(cls, data: Any) -> Any:
        """``api_keys: ["${KEY}"]`` is shorthand for ``[{key: "${KEY}"}]``."""
        if isinstance(data, dict) and isinstance(data.get("api_keys"), list):
            keys = [{"key": k, "name": f"key{i + 1}"} if isinstance(k, str) else k for i, k in enumerate(data["api_keys"])]
            data = {**data, "api_keys": keys}
        return data
