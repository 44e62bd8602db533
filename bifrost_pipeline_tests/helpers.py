"""Small builders shared by the tests."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bifrost_pipeline import landing
from bifrost_pipeline.config import AppConfig, parse_config

HASH_KEY = "test-hash-key"


def make_app(tmp_path: Path, exports: list[dict] | None = None, **sections: Any) -> AppConfig:
    raw = {
        "landing": {"path": "landing"},
        "pipeline": {"data_dir": "data", "start_date": "2024-01-01"},
        "log_exports": {"enabled": True, "exports": exports or []},
        **sections,
    }
    return parse_config(raw, env={"BIFROST_ANONYMIZE_KEY": HASH_KEY}, base_dir=tmp_path)


def record(**overrides: Any) -> dict:
    """A valid canonical record (timestamp 2024-01-15 10:30 UTC) with fields overridden."""
    base = {
        "schema_version": "1",
        "timestamp": "2024-01-15T10:30:00Z",
        "ended_at": "2024-01-15T10:30:01.250Z",
        "request_id": "req_1",
        "parent_request_id": None,
        "customer_id": "cust_a",
        "provider": "openai",
        "model": "gpt-4o",
        "endpoint": "/v1/chat/completions",
        "method": "POST",
        "request_type": "chat",
        "stream": False,
        "status": "success",
        "status_code": 200,
        "latency_ms": 1250,
        "input_tokens": 100,
        "output_tokens": 150,
        "total_tokens": 250,
        "cost_usd": 0.0045,
        "metadata": {"x-tenant-id": "acme"},
        "input_content": '[{"role": "user", "content": "hi"}]',
        "output_content": '[{"role": "assistant", "content": "hello"}]',
    }
    base.update(overrides)
    return base


def land(app: AppConfig, records: list[dict | bytes], when: datetime | None = None) -> Path:
    """Land records as one segment in the hour of `when` (default: the first record's timestamp)."""
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
    if when is None:
        first = next(r for r in records if isinstance(r, dict))
        when = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    path = landing.write_segment(app.landing_dir, lines, when, source="test")
    assert path is not None
    return path


def land_bytes(app: AppConfig, data: bytes, when: datetime) -> Path:
    """A published segment holding exactly `data` (no newline added: a test can cut the last line)."""
    path = landing.write_segment(app.landing_dir, [b"placeholder"], when, source="test")
    assert path is not None
    path.write_bytes(data)
    return path


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


DAY = date(2024, 1, 15)


def write_config(tmp_path: Path, exports: list[dict], monkeypatch) -> tuple[AppConfig, Path]:
    """A config file in tmp_path as the Dagster code location reads it (exports fail at once: no retries),
    with the test hash key in the environment; the loaded config and the file's path."""
    import yaml

    from bifrost_pipeline.config import load_config

    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", HASH_KEY)
    path = tmp_path / "bifrost_pipeline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "log_exports": {"exports": exports},
                "landing": {"path": "landing"},
                "pipeline": {"data_dir": "data", "start_date": "2024-01-01", "export_retries": 0},
            }
        )
    )
    return load_config(path), path
