"""The ``alerts`` section: where failures and stale exports are posted, and how late an export may be.

A webhook URL is a secret (a Slack incoming-webhook URL is its own credential): it is held as a
`SecretStr`, so neither a repr, a log line nor a config error ever shows it.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from bifrost_pipeline.config.base import Strict

WEBHOOK_FORMATS = ("slack", "json")


def _check_http_url(value: str, what: str) -> None:
    """Raise ValueError (without the URL itself: it may hold a token) unless `value` is an http(s) URL."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host for {what}")


class Webhook(Strict):
    # Write it as ${VAR} (e.g. "${SLACK_WEBHOOK_URL}"): the file then holds no secret.
    url: SecretStr
    # slack: {"text": ..., "blocks": [...]} (Slack incoming webhooks, Mattermost, Rocket.Chat, Teams
    # workflows); json: one flat object per alert, for your own receiver.
    format: Literal["slack", "json"] = "slack"
    # A receiver that does not answer must not hold up the sensor posting to it.
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 5.0

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        _check_http_url(v.get_secret_value(), "the webhook")
        return v


class AlertsConfig(Strict):
    webhooks: list[Webhook] = Field(default_factory=list)
    # Where the Dagster UI is reached from the alert's reader: links are <ui_base_url>/runs/<run_id>.
    ui_base_url: str = "http://127.0.0.1:3000"
    # An export is stale (its freshness check fails and alerts) when its latest window is still not
    # exported this long after its schedule time; covers the run and its retries.
    freshness_grace_minutes: Annotated[int, Field(ge=1, le=1439)] = 120

    @field_validator("ui_base_url")
    @classmethod
    def _ui(cls, v: str) -> str:
        _check_http_url(v, "the Dagster UI")
        return v.rstrip("/")
