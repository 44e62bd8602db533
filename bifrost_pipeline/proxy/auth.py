"""Virtual keys: who a request is billed to, what it may use, and how often (``proxy.virtual_keys``).

A client presents its key as ``Authorization: Bearer <key>`` (the OpenAI SDKs send their ``api_key`` so) or
``x-bf-vk: <key>``. Secrets are held only as SHA-256 digests: the presented key is hashed, the digest looked
up in a dict (its timing depends on the digest, which tells nothing of a secret) and then compared with
``hmac.compare_digest``. Neither a secret nor a presented key ever reaches a log line, a record or an error.

Limits are per proxy process (a token bucket per key): with N replicas a key gets up to N times its limit.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from dataclasses import dataclass, field

from .forward import Rejected

VK_HEADER = "x-bf-vk"


@dataclass(frozen=True, slots=True)
class VirtualKey:
    id: str
    name: str
    digest: bytes
    customer_id: str
    team_id: str | None
    providers: frozenset[str]  # empty: every provider
    models: frozenset[str]  # empty: every model
    per_minute: int | None


@dataclass(slots=True)
class Bucket:
    """A token bucket: ``tokens`` left at ``at`` (``time.monotonic()``)."""

    tokens: float
    at: float


def take_token(bucket: Bucket, per_minute: int, now: float) -> float:
    """Take one request from ``bucket`` (refilled at ``per_minute`` / 60 a second, holding ``per_minute``).

    Returns 0.0 when the request may go, else the seconds until one token is back (the bucket unchanged).
    """
    rate = per_minute / 60.0
    tokens = min(float(per_minute), bucket.tokens + (now - bucket.at) * rate)
    bucket.at = now
    if tokens >= 1.0:
        bucket.tokens = tokens - 1.0
        return 0.0
    bucket.tokens = tokens
    return (1.0 - tokens) / rate


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def presented_key(headers: dict[str, str]) -> tuple[str | None, bool]:
    """(the key the client presented, whether it came as ``x-bf-vk``)."""
    vk = headers.get(VK_HEADER)
    if vk:
        return vk.strip(), True
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None, False
    return None, False


@dataclass
class Gate:
    """Identifies the virtual key of a request and enforces what it may use and how often."""

    keys: dict[bytes, VirtualKey]
    required: bool
    buckets: dict[str, Bucket] = field(default_factory=dict)

    @classmethod
    def from_config(cls, proxy_config) -> Gate | None:
        """None when no virtual key is configured and none is required: the hot path skips the gate."""
        vks = proxy_config.virtual_keys
        if not vks and not proxy_config.require_virtual_key:
            return None
        keys = {}
        for vk in vks:
            d = digest(vk.secret.get_secret_value())
            keys[d] = VirtualKey(
                vk.id, vk.name or vk.id, d, vk.customer_id, vk.team_id,
                frozenset(vk.providers), frozenset(vk.models), vk.requests_per_minute,
            )
        return cls(keys, proxy_config.require_virtual_key)

    def identify(self, headers: dict[str, str]) -> VirtualKey | None:
        """The request's virtual key; None when it has none and none is required. Raises 401 ``Rejected``.

        Without ``require_virtual_key``, a bearer token that is no virtual key may be the client's own
        provider key (never forwarded either) and is ignored; an unknown ``x-bf-vk`` is always refused.
        """
        secret, explicit = presented_key(headers)
        if secret is None:
            if self.required:
                raise Rejected(401, "a virtual key is required: send it as Authorization: Bearer <key> or "
                               "x-bf-vk", "authentication_error", reason="missing_virtual_key")
            return None
        d = digest(secret)
        vk = self.keys.get(d)
        if vk is not None and hmac.compare_digest(vk.digest, d):
            return vk
        if self.required or explicit:
            raise Rejected(401, "the virtual key is not valid", "authentication_error", reason="invalid_virtual_key")
        return None

    def admit(self, vk: VirtualKey, now: float | None = None) -> None:
        """Count the request against the key's limit; raises 429 ``Rejected`` (with retry-after) over it."""
        if vk.per_minute is None:
            return
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(vk.id)
        if bucket is None:
            bucket = self.buckets[vk.id] = Bucket(float(vk.per_minute), now)
        wait = take_token(bucket, vk.per_minute, now)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise Rejected(
                429,
                f"virtual key {vk.id} is over its limit of {vk.per_minute} requests per minute; "
                f"retry in {seconds}s",
                "rate_limit_error",
                reason="rate_limited",
                headers=((b"retry-after", str(seconds).encode()),),
            )


def allows(vk: VirtualKey, provider: str, model: str, asked: str) -> bool:
    """Whether ``vk`` may use ``provider``'s ``model`` (``asked``: the model name as the client gave it)."""
    if vk.providers and provider not in vk.providers:
        return False
    if vk.models and not ({model, asked, f"{provider}/{model}"} & vk.models):
        return False
    return True


def refuse_model(vk: VirtualKey, provider: str, model: str) -> Rejected:
    return Rejected(
        403,
        f"virtual key {vk.id} may not use model {model!r} of provider {provider!r}",
        "permission_error",
        reason="model_not_allowed",
    )
