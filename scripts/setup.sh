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
