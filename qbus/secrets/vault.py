"""OpenBao/Vault KV v2 secrets through ``hvac``, with token or AppRole auth.

Secret ``chain/verifier_key`` is read from ``<mount>/data/<path_prefix>/chain/verifier_key``,
field ``value``. Values are kept for ``cache_seconds`` (a few seconds) so that a busy stage
does not ask the server on every message, yet a rotated secret is seen soon after the
change without a restart. Every failure is a ``SecretError`` that says which server, which
path and what went wrong — never the value.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from qbus.bus.config import VaultConfig
from qbus.errors import MissingOptionalLibraryError
from qbus.secrets.base import SecretError


def _import_hvac() -> Any:
    try:
        import hvac
    except ImportError as exc:
        raise MissingOptionalLibraryError("hvac", "vault", "the Vault secrets provider") from exc
    return hvac


def _from_env_or_file(what: str, env_name: str, file: str | None) -> str:
    """A credential from a file (preferred: it can be rotated) or an environment variable."""
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError as exc:
            raise SecretError(f"cannot read the Vault {what} from {file}: {exc}") from exc
    value = os.environ.get(env_name)
    if not value:
        raise SecretError(
            f"no Vault {what}: set {env_name} or the [secrets.vault] "
            f"{'token_file' if what == 'token' else 'secret_id_file'} setting"
        )
    return value


class VaultSecrets:
    """Secrets from an OpenBao/Vault KV v2 mount.

    Args:
        config: Server, mount, path prefix and auth method.
        cache_seconds: How long a value is reused before it is read again.
    """

    name = "vault"

    def __init__(self, config: VaultConfig, *, cache_seconds: float = 5.0) -> None:
        self.config = config
        self.cache_seconds = cache_seconds
        self._hvac = _import_hvac()
        self._client: Any = None
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def path(self, key: str) -> str:
        """The KV path of secret ``key`` under the mount."""
        return "/".join(p for p in (self.config.path_prefix.strip("/"), key.strip("/")) if p)

    def get(self, key: str) -> str:
        """The value of secret ``key``, at most ``cache_seconds`` old.

        Raises:
            SecretError: The secret is missing, access is denied, or the server is down.
        """
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[1] < self.cache_seconds:
                return hit[0]
            value = self._read(key)
            self._cache[key] = (value, time.monotonic())
            return value

    def invalidate(self, key: str | None = None) -> None:
        """Forget cached values (one key, or all), so the next ``get`` asks the server."""
        with self._lock:
            if key is None:
                self._cache.clear()
            else:
                self._cache.pop(key, None)

    # -- internals ----------------------------------------------------------------------

    def _where(self, key: str) -> str:
        return f"{self.config.url} ({self.config.mount}/data/{self.path(key)})"

    def _login(self) -> Any:
        cfg = self.config
        client = self._hvac.Client(
            url=cfg.url,
            namespace=cfg.namespace,
            verify=cfg.ca_cert or True,
            timeout=cfg.timeout,
        )
        if cfg.auth == "token":
            client.token = _from_env_or_file("token", cfg.token_env, cfg.token_file)
        else:
            secret_id = _from_env_or_file(
                "AppRole secret id", cfg.secret_id_env, cfg.secret_id_file
            )
            client.auth.approle.login(role_id=cfg.role_id, secret_id=secret_id)
        return client

    def _read(self, key: str) -> str:
        hvac = self._hvac
        errors = hvac.exceptions
        import requests  # hvac's transport; its errors are how "server down" shows

        for attempt in range(2):
            try:
                if self._client is None:
                    self._client = self._login()
                response = self._client.secrets.kv.v2.read_secret_version(
                    path=self.path(key),
                    mount_point=self.config.mount,
                    raise_on_deleted_version=True,
                )
                break
            except errors.InvalidPath as exc:
                raise SecretError(
                    f"secret {key!r} not found in Vault at {self._where(key)}"
                ) from exc
            except (errors.Forbidden, errors.Unauthorized) as exc:
                # An AppRole token expires: log in again once before giving up.
                self._client = None
                if attempt == 0 and self.config.auth == "approle":
                    continue
                raise SecretError(
                    f"Vault at {self._where(key)} denied reading secret {key!r}: the "
                    f"{self.config.auth} credentials lack a policy with read on that path"
                ) from exc
            except errors.VaultDown as exc:
                self._client = None
                raise SecretError(
                    f"Vault at {self.config.url} is sealed or down; secret {key!r} "
                    "cannot be read until it is unsealed"
                ) from exc
            except requests.exceptions.RequestException as exc:
                self._client = None
                raise SecretError(
                    f"Vault at {self.config.url} is unreachable ({type(exc).__name__}); "
                    f"secret {key!r} cannot be read"
                ) from exc
            except errors.VaultError as exc:
                self._client = None
                raise SecretError(
                    f"Vault at {self._where(key)} failed to read secret {key!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        data = (response.get("data") or {}).get("data") or {}
        if self.config.field not in data:
            raise SecretError(
                f"secret {key!r} at {self._where(key)} has no field {self.config.field!r} "
                f"(it has: {', '.join(sorted(data)) or 'nothing'})"
            )
        return str(data[self.config.field])
