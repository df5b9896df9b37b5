#!/usr/bin/env bash
# Regenerate requirements-lock.txt: the exact version (and sha256 of every file) of each
# package that qbus and all its extras install, resolved for Python 3.11+ on any
# platform. Run it after changing a dependency in pyproject.toml, then commit both files;
# the next `bash scripts/setup.sh` installs what it wrote. Locked versions stay where
# they are unless pyproject.toml's change needs them to move; `bash scripts/lock.sh
# --upgrade` moves every package to its newest release within pyproject.toml's bounds
# (run `bash scripts/upstream.sh` first to see whether the suite passes with them).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
make_venv .venv
exec .venv/bin/uv pip compile --quiet pyproject.toml --extra test \
    --universal --python-version 3.11 --generate-hashes \
    --custom-compile-command "bash scripts/lock.sh" \
    -o "$LOCK_FILE" "$@"
