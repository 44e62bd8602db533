"""Alerts posted to webhooks: what one alert says, its JSON body (Slack-compatible or generic), and posting
it without ever holding up the caller for long or showing the webhook's URL (it is a credential).

No Dagster here: defs/alerts.py turns failed runs and failed checks into `Alert`s.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from bifrost_pipeline.config import Webhook

# Slack shows at most 3000 characters in a section block; a stack trace is read in the UI, not in chat.
MAX_ERROR_CHARS = 1500


@dataclass(frozen=True)
class FailedCheck:
    asset: str
    name: str
    severity: str  # ERROR or WARN
    description: str = ""


@dataclass(frozen=True)
class Alert:
    kind: str  # run_failure | check_failure | stale
    summary: str  # one line: what happened to what
    job: str
    run_id: str | None  # None for a stale export: no run failed, one did not happen
    url: str  # the run in the Dagster UI (the asset, for a stale export)
    assets: tuple[str, ...] = ()
    partition: str | None = None
    error: str = ""
    checks: tuple[FailedCheck, ...] = field(default_factory=tuple)


def truncate(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def json_body(alert: Alert) -> dict[str, Any]:
    """The generic body: one flat object, every field of the alert."""
    body = asdict(alert)
    body["assets"] = list(alert.assets)
    body["checks"] = [asdict(c) for c in alert.checks]
    return body


def _escape(text: str) -> str:
    """Slack's mrkdwn reads &, < and > as markup (links, mentions): an error message must show as written."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _lines(alert: Alert) -> list[str]:
    """The details, as Slack mrkdwn lines (values escaped)."""
    lines = []
    if alert.assets:
        lines.append(f"*Export/asset:* {_escape(', '.join(alert.assets))}")
    if alert.partition:
        lines.append(f"*Partition:* {_escape(alert.partition)}")
    lines.append(f"*Job:* {alert.job}")
    for c in alert.checks:
        lines.append(f"*Check failed ({c.severity}):* {c.asset} {c.name}: {_escape(truncate(c.description, 300))}")
    if alert.error:
        lines.append(f"*Error:* {_escape(truncate(alert.error))}")
    return lines


def slack_body(alert: Alert) -> dict[str, Any]:
    """Slack's incoming-webhook body: `text` (shown in notifications and by clients without blocks) and
    blocks with the details and a link to the run."""
    link = f"<{alert.url}|Open {'the run' if alert.run_id else 'the export'} in Dagster>"
    summary = _escape(alert.summary)
    text = "\n".join([f":rotating_light: {summary}", *_lines(alert), link])
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f":rotating_light: *{summary}*"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(_lines(alert))}},
            {"type": "section", "text": {"type": "mrkdwn", "text": link}},
        ],
    }


def body(alert: Alert, fmt: str) -> dict[str, Any]:
    return slack_body(alert) if fmt == "slack" else json_body(alert)


def _why(err: Exception, url: str) -> str:
    """A failed post's reason, without the URL (urllib puts it in some messages)."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    return f"{type(err).__name__}: {reason}".replace(url, "<webhook url>")


def post(webhook: Webhook, alert: Alert) -> str | None:
    """Post `alert` to `webhook`; None when it was accepted (2xx), else why not (never the URL)."""
    url = webhook.url.get_secret_value()
    data = json.dumps(body(alert, webhook.format)).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=webhook.timeout_s) as response:  # noqa: S310 (http(s) only, checked at load)
            response.read(1024)
    except Exception as err:  # noqa: BLE001 (any failure to post is reported, never raised into the sensor)
        return _why(err, url)
    return None


def send(webhooks: Iterable[Webhook], alert: Alert, log: logging.Logger | Any) -> int:
    """Post to every webhook; a failure is logged (webhook by position and format, not URL). Returns the
    number of webhooks that accepted the alert."""
    sent = 0
    for i, webhook in enumerate(webhooks):
        problem = post(webhook, alert)
        if problem is None:
            sent += 1
        else:
            log.warning(f"alerts.webhooks[{i}] ({webhook.format}): could not post the {alert.kind} alert: {problem}")
    return sent
