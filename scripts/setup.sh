#!/usr/bin/env bash
# Set up qbus on a fresh Debian machine with Python 3.11+: a virtual environment in .venv
# with qbus and every extra installed at the locked versions (requirements-lock.txt).
# Safe to run again: it only reinstalls when the lock, pyproject.toml or QBUS_EXTRAS changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
EXTRAS=${QBUS_EXTRAS:-test}

make_venv .venv

# Install exactly the lock (requirements-lock.txt, written by scripts/lock.sh): the same
# versions, checked against the lock's sha256 hashes, on any machine and any day. With
# the default extras (test, which includes all) the venv then holds exactly what the
# lock names; a narrower QBUS_EXTRAS (e.g. qiskit) installs that subset at the locked
# versions. Re-run only when the lock, pyproject.toml or the extras changed.
stamp=.venv/.qbus-installed
want="$(cat "$LOCK_FILE" pyproject.toml | sha256sum | cut -c1-16) $EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing qbus[$EXTRAS] from $LOCK_FILE into .venv (first run takes a few minutes)…" >&2
    if [ "$EXTRAS" = test ]; then
        .venv/bin/uv pip sync -q --python .venv/bin/python "$LOCK_FILE"
    else
        .venv/bin/uv pip install -q --python .venv/bin/python --constraint "$LOCK_FILE" \
            ".[$EXTRAS]"
    fi
    # qbus itself, editable; its dependencies are already there from the lock.
    .venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
    echo "$want" >"$stamp"
fi

# Any-language client examples (clients/node, clients/go), which the test suite runs
# against the bus: Node.js/npm and Go with nats.go from Debian's packages when missing
# (only as root or with password-less sudo), then the Node client's packages from its
# committed lock file. Failures here only warn: the client tests then say what is missing.
client_apt_install() {
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo apt-get update -qq &&
            sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        return 1
    fi
}
client_pkgs=()
command -v node >/dev/null 2>&1 || client_pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || client_pkgs+=(npm)
command -v go >/dev/null 2>&1 || client_pkgs+=(golang-go)
# curl: the README's HTTP recipe, which tests/test_gateway_openapi.py runs as written.
command -v curl >/dev/null 2>&1 || client_pkgs+=(curl)
[ -d /usr/share/gocode/src/github.com/nats-io/nats.go ] ||
    client_pkgs+=(golang-github-nats-io-go-nats-dev)
if [ ${#client_pkgs[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${client_pkgs[*]} for the client examples…" >&2
    client_apt_install "${client_pkgs[@]}" ||
        echo "warning: could not install ${client_pkgs[*]} (not root?)" >&2
fi
node_dir=clients/node
if command -v npm >/dev/null 2>&1 &&
    { [ ! -f "$node_dir/node_modules/.package-lock.json" ] ||
        [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; }; then
    npm ci --prefix "$node_dir" --no-audit --no-fund --loglevel=error ||
        echo "warning: npm ci in $node_dir failed" >&2
fi

# Chain tools (docs/chain.md), pinned in tools/chain's lock file: solc-js recompiles the
# anchor contract (its artifact is committed and checked by a test) and
# @foundry-rs/anvil ships the anvil node binary for `qbus up --chain anvil` and the
# chain tests.
chain_dir=tools/chain
if command -v npm >/dev/null 2>&1 &&
    { [ ! -f "$chain_dir/node_modules/.package-lock.json" ] ||
        [ "$chain_dir/package-lock.json" -nt "$chain_dir/node_modules/.package-lock.json" ]; }; then
    npm ci --prefix "$chain_dir" --no-audit --no-fund --loglevel=error ||
        echo "warning: npm ci in $chain_dir failed (anvil and solc-js missing)" >&2
fi

# The deployment's checks (docs/deploy.md): pinned schema validators for the Kubernetes
# manifests (deploy/validate's lock file), Debian's prometheus (a real server scrapes a
# running bus in tests/test_prometheus.py; promtool checks the shipped files) and
# systemd's systemd-analyze (verifies the units). Their tests fail, naming what is
# missing, when these could not be installed.
validate_dir=deploy/validate
if command -v npm >/dev/null 2>&1 &&
    { [ ! -f "$validate_dir/node_modules/.package-lock.json" ] ||
        [ "$validate_dir/package-lock.json" -nt "$validate_dir/node_modules/.package-lock.json" ]; }; then
    npm ci --prefix "$validate_dir" --no-audit --no-fund --loglevel=error ||
        echo "warning: npm ci in $validate_dir failed (the manifest checks need it)" >&2
fi
deploy_pkgs=()
command -v prometheus >/dev/null 2>&1 || deploy_pkgs+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || deploy_pkgs+=(systemd)
if [ ${#deploy_pkgs[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${deploy_pkgs[*]} for the deployment checks…" >&2
    # Without recommends: prometheus recommends node-exporter and its disk tools, which
    # a test of the shipped config does not need.
    client_apt_install --no-install-recommends "${deploy_pkgs[@]}" ||
        echo "warning: could not install ${deploy_pkgs[*]} (not root?)" >&2
fi

# The web console's browser test (tests/test_console.py) drives Debian's chromium through
# Playwright (from the lock; no `playwright install`, no browser download): install it when
# missing. Failure only warns; the test then fails under CI naming what is missing.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the console's browser test…" >&2
    client_apt_install chromium ||
        echo "warning: could not install chromium (not root?)" >&2
fi

# The bwrap sandbox driver (docs/hypervisor.md) needs Debian's bubblewrap; its tests fail
# without it, so install it when we can, or say exactly how.
if ! command -v bwrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing bubblewrap (the bwrap sandbox driver)…" >&2
        apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null
    else
        echo "bubblewrap is missing: the bwrap sandbox driver and its tests need it;" \
            "install it with: sudo apt-get install -y bubblewrap  (then: qbus doctor)" >&2
    fi
fi
