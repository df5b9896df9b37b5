"""Bearer tokens → tenants, read from the secrets provider (docs/gateway.md, "Auth").

The gateway connects to NATS as a trusted client and applies, per request, the rules NATS
auth mode applies per connection (docs/security.md): tenant ``T`` submits as ``T`` (its
jobs go to ``qbus.submit.T``, whatever the payload says) and sees and controls only the
jobs whose tenant is ``T``. The operator's token, when configured, sees every job.

With no tenants and no operator token configured, auth is off: no token is needed and
every caller sees every job, as on an open NATS server (the default local setup).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from qbus.bus.auth import is_valid_tenant
from qbus.bus.config import Config
from qbus.errors import ConfigError
from qbus.gateway.problems import Problem
from qbus.secrets.providers import provider_from_config


@dataclass(frozen=True)
class Caller:
    """Who a request comes from.

    Attributes:
        tenant: The caller's tenant; None for a caller that sees every job (auth off,
            or the operator's token).
    """

    tenant: str | None

    def may_see(self, owner: str) -> bool:
        """Whether this caller may see a job whose tenant is ``owner`` ("" for none)."""
        return self.tenant is None or self.tenant == owner


ANYONE = Caller(tenant=None)


class Tokens:
    """The token of each tenant (and the operator's), read once when the gateway starts.

    Args:
        by_token: Token → tenant ("" for the operator's token).
    """

    def __init__(self, by_token: dict[str, str]) -> None:
        self._pairs = list(by_token.items())

    @property
    def enabled(self) -> bool:
        """Whether requests need a token."""
        return bool(self._pairs)

    @classmethod
    def from_config(cls, config: Config) -> Tokens:
        """The tokens ``[gateway]`` names, from the configured secrets provider.

        Raises:
            ConfigError: A tenant name that cannot be a tenant.
            SecretError: A named secret cannot be read.
        """
        gateway = config.gateway
        if not gateway.tenants and not gateway.admin_token_secret:
            return cls({})
        provider = provider_from_config(config)
        by_token: dict[str, str] = {}
        for tenant in gateway.tenants:
            if not is_valid_tenant(tenant):
                raise ConfigError(
                    f"[gateway] tenants: {tenant!r} is not a tenant name ([A-Za-z0-9_-], "
                    "1 to 32 characters)"
                )
            by_token[provider.get(gateway.token_prefix + tenant)] = tenant
        if gateway.admin_token_secret:
            by_token[provider.get(gateway.admin_token_secret)] = ""
        return cls(by_token)

    def caller(self, token: str | None) -> Caller:
        """The caller a token stands for.

        Raises:
            Problem: 401 ``unauthorized``: no token, or one no tenant has.
        """
        if not self.enabled:
            return ANYONE
        if not token:
            raise _unauthorized("this gateway needs a bearer token (Authorization: Bearer …)")
        found: str | None = None
        # Compared with every token in constant time: how long a wrong guess takes says
        # nothing about how close it was.
        for known, tenant in self._pairs:
            if hmac.compare_digest(known.encode(), token.encode()):
                found = tenant
        if found is None:
            raise _unauthorized("the bearer token is not one this gateway knows")
        return Caller(tenant=found or None)


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


def request_token(request: Request) -> str | None:
    """The token of a request: ``Authorization: Bearer <token>``, else ``?access_token=``
    (an ``EventSource`` in a browser cannot send headers)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query_params.get("access_token") or None


async def current_caller(request: Request) -> Caller:
    """FastAPI dependency: the request's caller (401 problem when its token is wrong)."""
    tokens: Tokens = request.app.state.tokens
    return tokens.caller(request_token(request))
