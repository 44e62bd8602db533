"""Which provider serves a request, and what is sent to it."""

from __future__ import annotations

from dataclasses import dataclass

from .protocol import SECRET_HEADERS
from .routing import NO_POLICY, ProviderPolicy, policy_of


@dataclass(frozen=True)
class Target:
    name: str
    base_url: str  # up to and including the API version, e.g. https://api.openai.com/v1
    api_key: str | None
    timeout_s: float

    def url(self, path: str) -> str:
        # The client called /v1/<rest>; the provider's base URL already ends with its version.
        rest = path[3:] if path.startswith("/v1/") else path
        return self.base_url.rstrip("/") + rest


class Router:
    """Choose the provider from a ``provider/model`` prefix, else from the providers' ``models`` lists.

    With a single provider configured, every other model goes to it. With the mock upstream on
    (``--mock-upstream``), every request goes to the mock, keeping the provider name the client asked for.
    """

    def __init__(self, providers: dict, *, mock: Target | None = None):
        self.targets: dict[str, Target] = {}
        self.by_model: dict[str, str] = {}
        self.policies: dict[str, ProviderPolicy] = {}
        for name, p in providers.items():
            key = p.api_key.get_secret_value() if p.api_key is not None else None
            self.targets[name] = Target(name, p.base_url, key or None, p.timeout_s)
            self.policies[name] = policy_of(p)
            for m in p.models:
                self.by_model.setdefault(m, name)
        self.mock = mock

    def policy(self, provider: str) -> ProviderPolicy:
        """Keys, retries and fallbacks of ``provider`` (none for a name only the mock upstream knows)."""
        return self.policies.get(provider, NO_POLICY)

    def target(self, provider: str) -> Target | None:
        """Where a request for ``provider`` goes (the mock, when it is on), None for an unknown provider."""
        if self.mock is not None:
            return self.mock
        return self.targets.get(provider)

    def resolve(self, model: str) -> tuple[str, str, Target] | None:
        """(provider name, model name sent upstream, target), or None when no provider serves the model."""
        if "/" in model:
            prefix, rest = model.split("/", 1)
            if prefix in self.targets:
                return prefix, rest, self.mock or self.targets[prefix]
        name = self.by_model.get(model)
        if name is not None:
            return name, model, self.mock or self.targets[name]
        if self.mock is not None:
            if "/" in model:
                prefix, rest = model.split("/", 1)
                return prefix, rest, self.mock
            return "mock", model, self.mock
        if len(self.targets) == 1:
            name, target = next(iter(self.targets.items()))
            return name, model, target
        return None


HOP_BY_HOP = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "accept-encoding",
        "expect",
    }
)
RESPONSE_DROP = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "content-encoding",
        "set-cookie",
        "server",
        "date",
    }
)


def upstream_headers(headers: dict[str, str], target: Target, drop: frozenset[str]) -> dict[str, str]:
    """The client's headers minus hop-by-hop ones, its credentials and the proxy's own ``x-bf-*`` headers,
    plus the provider's key. The client's Authorization never reaches a provider."""
    out = {
        k: v
        for k, v in headers.items()
        if k not in HOP_BY_HOP and k not in SECRET_HEADERS and k not in drop and not k.startswith("x-bf-")
    }
    out["accept-encoding"] = "identity"  # the proxy reads usage from the body it passes on
    if target.api_key:
        out["authorization"] = f"Bearer {target.api_key}"
    return out


def response_headers(upstream: list[tuple[str, str]], request_id: str) -> list[tuple[bytes, bytes]]:
    out = []
    for k, v in upstream:
        lk = k.lower()
        if lk in RESPONSE_DROP:
            continue
        if lk == "x-request-id":
            lk = "x-upstream-request-id"
        out.append((lk.encode("latin-1"), v.encode("latin-1")))
    out.append((b"x-request-id", request_id.encode()))
    return out
