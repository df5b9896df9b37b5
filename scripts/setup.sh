#!/usr/bin/env bash
# Set up qbus on a fresh Debian machine with Python 3.11+: a virtual environment in .venv
# with qbus and every extra installed. Safe to run again: it only reinstalls when
# pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "qbus needs Python 3.11 or newer (none found on PATH)" >&2
    return 1
}

PY=$(pick_python)
EXTRAS=${QBUS_EXTRAS:-test}

if [ ! -x .venv/bin/python ]; then
    if ! "$PY" -m venv .venv 2>/dev/null; then
        # Debian's system Python ships venv separately.
        echo "installing python3-venv (needs root)…" >&2
        rm -rf .venv
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        else
            sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv >/dev/null
        fi
        "$PY" -m venv .venv
    fi
fi

stamp=.venv/.qbus-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$EXTRAS" ]; then
    echo "installing qbus[$EXTRAS] into .venv (first run takes a few minutes)…" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
    echo "$EXTRAS" >"$stamp"
fi

# The test-only engine plugin `flipper` (tests/plugins/qbus_flipper), a deliberately wrong
# engine that registers through the real qbus.engines entry point, as a third-party
# engine would; tests/test_crosscheck.py proves the cross-engine check catches it.
if [[ ",$EXTRAS," == *",test,"* ]] && ! .venv/bin/python -c 'import qbus_flipper' 2>/dev/null; then
    .venv/bin/python -m pip install -q -e tests/plugins/qbus_flipper
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
