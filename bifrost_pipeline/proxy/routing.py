"""Retries, several keys per provider and fallbacks: the policy of each provider and the pure decisions.

``choose_key`` (weighted, skipping resting keys), ``backoff_s`` (exponential, or the provider's
``retry-after``, capped) and ``next_step`` (retry, fall back or answer) are pure functions, unit-tested on
their own; ``KeyPool`` keeps which keys rest; ``ProviderPolicy`` is what one provider's config says.
A provider configured with one key and no retries or fallbacks costs the hot path nothing here: its key is
already in the planned headers and the loop in ``proxied`` makes one attempt.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Literal

# Answers worth another try on the same provider; connection errors are too (``retryable`` below).
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Answers that blame the key, not the request: the key rests and the next attempt takes another one.
KEY_STATUSES = frozenset({401, 429})
# Answers after which a fallback is tried: the provider failed, or refused this key or model. A 400 or 422
# is the request's own fault and would fail the same everywhere: it is answered as it is.
FALLBACK_STATUSES = RETRY_STATUSES | frozenset({401, 403, 404})


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    value: str
    weight: float = 1.0


def choose_key(keys: tuple[Key, ...], resting_until: dict[str, float], now: float, draw: float) -> Key:
    """A key drawn by weight among those not resting (``draw`` uniform in [0, 1)).

    When every key rests, the one whose rest ends first: an attempt with it beats failing without one.
    """
    awake = [k for k in keys if resting_until.get(k.name, 0.0) <= now]
    if not awake:
        return min(keys, key=lambda k: resting_until.get(k.name, 0.0))
    point = draw * sum(k.weight for k in awake)
    for k in awake:
        point -= k.weight
        if point < 0:
            return k
    return awake[-1]  # draw * total rounded up to the total


def parse_retry_after(value: str | None, now_epoch: float | None = None) -> float | None:
    """Seconds to wait from a ``retry-after`` header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now_epoch is None else now_epoch))


def backoff_s(retry: int, base_s: float, cap_s: float, retry_after_s: float | None, jitter: float) -> float:
    """Wait before retry number ``retry`` (0 for the first): the provider's retry-after when it gave one,
    else ``base_s * 2**retry`` scaled by ``0.5 + jitter / 2`` (``jitter`` in [0, 1)); never over ``cap_s``."""
    if retry_after_s is not None:
        return min(retry_after_s, cap_s)
    return min(base_s * (2**retry) * (0.5 + jitter / 2), cap_s)


Step = Literal["retry", "fallback", "answer"]


def next_step(
    status: int | None,
    *,
    retries_left: int,
    fallbacks_left: int,
    timed_out: bool = False,
    other_key: bool = False,
) -> Step:
    """After a failed attempt (``status`` None: no answer, the connection failed): what to do next.

    A timeout is not retried on the same provider (it already cost the whole timeout) but falls back. A 401
    is retried only when another key of the provider is awake (``other_key``): the same key would fail again.
    """
    if timed_out:
        return "fallback" if fallbacks_left else "answer"
    retryable = status is None or status in RETRY_STATUSES or (other_key and status in KEY_STATUSES)
    if retryable and retries_left > 0:
        return "retry"
    if (retryable or status in FALLBACK_STATUSES) and fallbacks_left > 0:
        return "fallback"
    return "answer"


@dataclass
class KeyPool:
    """A provider's keys and which of them rest (after a 401 or 429) until when (``time.monotonic()``)."""

    keys: tuple[Key, ...]
    cooldown_s: float
    resting_until: dict[str, float] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def choose(self) -> Key:
        if len(self.keys) == 1:
            return self.keys[0]
        return choose_key(self.keys, self.resting_until, time.monotonic(), self.rng.random())

    def rest(self, key: Key, seconds: float | None = None) -> None:
        self.resting_until[key.name] = time.monotonic() + max(self.cooldown_s, seconds or 0.0)

    def has_awake_other_than(self, key: Key) -> bool:
        now = time.monotonic()
        return any(k.name != key.name and self.resting_until.get(k.name, 0.0) <= now for k in self.keys)


@dataclass(frozen=True)
class ProviderPolicy:
    """What one provider's config says about attempts: its keys, retries, backoff and fallbacks."""

    pool: KeyPool | None  # None: no key, or one key already in the planned headers
    key_name: str | None  # the one key's name when pool is None ("default" for api_key)
    max_retries: int = 0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 10.0
    fallbacks: tuple[tuple[str, str], ...] = ()  # (provider, model) in order

    @property
    def simple(self) -> bool:
        """One attempt at most, with the key already in the headers: the hot path takes no detour."""
        return self.pool is None and self.max_retries == 0 and not self.fallbacks


def policy_of(provider_config) -> ProviderPolicy:
    """The policy of a ``config.ProviderConfig``."""
    p = provider_config
    pool = None
    key_name = None
    if p.keys:
        keys = tuple(Key(k.name, k.value.get_secret_value(), k.weight) for k in p.keys)
        pool = KeyPool(keys, p.key_cooldown_s)
    elif p.api_key is not None and p.api_key.get_secret_value():
        key_name = "default"
    fallbacks = tuple(tuple(f.strip("/").split("/", 1)) for f in p.fallbacks)
    return ProviderPolicy(pool, key_name, p.max_retries, p.retry_backoff_s, p.retry_backoff_max_s, fallbacks)  # type: ignore[arg-type]


NO_POLICY = ProviderPolicy(None, None)
