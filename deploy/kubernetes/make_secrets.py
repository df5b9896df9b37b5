"""Print the Secret and ConfigMap a qbus deployment needs, ready for ``kubectl apply -f -``.

    python deploy/kubernetes/make_secrets.py --dir ./qbus-keys [--tenant acme] \\
        [--verifier-key-file key.hex] | kubectl apply -f -

* Secret ``qbus-secrets``: a NATS password per user (``nats-<user>``: admin, every
  stage, every tenant) from ``qbus auth init``'s generator, and a signing key per stage
  (``signing-<stage>``); with ``--verifier-key-file``, the chain verifier's key
  (``chain-verifier_key``). The stage Deployments mount the items they need as the file
  secrets provider's ``nats/<user>``, ``signing/<stage>``; the NATS chart reads the
  passwords from it (helm/nats-values.yaml).
* ConfigMap ``qbus-public-keys``: the stages' public keys (``public.json``), the trusted
  set every stage and client checks signatures against.

The keys stay in ``--dir`` (mode 0600): running again keeps them (add a tenant without
logging anyone out); ``--rotate`` makes new passwords. Keep that directory as safe as the
cluster's Secrets, or put the values in Vault instead (docs/security.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from qbus.bus.auth import init_auth
from qbus.bus.signing import KEY_STAGES, generate_keys
from qbus.errors import QbusError

NAMESPACE = "qbus"
LABELS = {"app.kubernetes.io/part-of": "qbus"}


def manifests(
    directory: Path, tenants: list[str], verifier_key: str | None, rotate: bool
) -> list[dict]:
    """The Secret and the public-key ConfigMap, keeping the keys under ``directory``."""
    auth = init_auth(directory / "auth", tenants, rotate=rotate)
    public = generate_keys(directory / "signing-keys")
    data = {f"nats-{user}": auth.password(user) for user in auth.users}
    for stage in KEY_STAGES:
        data[f"signing-{stage}"] = (
            (directory / "signing-keys" / "signing" / stage).read_text().strip()
        )
    if verifier_key is not None:
        data["chain-verifier_key"] = verifier_key
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "qbus-secrets", "namespace": NAMESPACE, "labels": LABELS},
        "type": "Opaque",
        "stringData": data,
    }
    keys = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "qbus-public-keys", "namespace": NAMESPACE, "labels": LABELS},
        "data": {"public.json": json.dumps(json.loads(public.read_text()), indent=2) + "\n"},
    }
    return [secret, keys]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("qbus-keys"), help="where keys stay")
    parser.add_argument("--tenant", action="append", default=[], help="a tenant's NATS user")
    parser.add_argument("--verifier-key-file", type=Path, help="the chain verifier's key")
    parser.add_argument("--rotate", action="store_true", help="new NATS passwords")
    args = parser.parse_args(argv)
    try:
        key = args.verifier_key_file.read_text().strip() if args.verifier_key_file else None
        docs = manifests(args.dir.resolve(), args.tenant, key, args.rotate)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except QbusError as exc:  # a tenant name that cannot be a NATS user, no cryptography
        print(f"error: {exc} [{exc.code}]", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
