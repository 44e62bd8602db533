"""The configs of docs/forwarding.md load, and validate-config describes each forwarding destination
without printing a secret."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bifrost_pipeline.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs" / "forwarding.md"


def doc_exports() -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.S)
    return [yaml.safe_load(b)[0] for b in blocks if b.startswith("- name:")]


def test_each_documented_config_passes_validate_config(tmp_path, monkeypatch, capsys):
    exports = doc_exports()
    assert [e["destination"]["type"] for e in exports] == ["datadog_logs", "splunk_hec", "cloudwatch_logs"]
    config = tmp_path / "forwarding.yaml"
    config.write_text(yaml.safe_dump({"pipeline": {"start_date": "2026-01-01"}, "log_exports": {"exports": exports}}))
    monkeypatch.setenv("DD_API_KEY", "dd-secret-value-123")
    monkeypatch.setenv("SPLUNK_HEC_TOKEN", "hec-secret-value-456")
    assert main(["validate-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "destination: datadog_logs datadog logs https://http-intake.logs.datadoghq.eu (service llm-gateway)" in out
    assert "destination: splunk_hec splunk HEC https://splunk.example.com:8088 (index llm)" in out
    assert "destination: cloudwatch_logs cloudwatch logs /llm-gateway/requests (region eu-west-1)" in out
    assert "secret-value" not in out


def test_a_missing_secret_is_named_at_load(tmp_path, monkeypatch, capsys):
    config = tmp_path / "forwarding.yaml"
    config.write_text(yaml.safe_dump({"log_exports": {"exports": doc_exports()[:1]}}))
    monkeypatch.delenv("DD_API_KEY", raising=False)
    assert main(["validate-config", str(config)]) == 1
    assert "log_exports.exports[0].destination.config.api_key" in capsys.readouterr().err
