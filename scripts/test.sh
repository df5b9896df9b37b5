#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: lint, then pytest against real
# nats-server processes. Under CI=true slow soak/benchmark tests run their short form.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check qbus tests benchmarks deploy
.venv/bin/ruff format --check qbus tests benchmarks deploy
# Every declared dependency imported, every import declared (pyproject.toml [tool.deptry]).
.venv/bin/deptry .
# The layer order of docs/architecture.md (pyproject.toml [tool.importlinter]).
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest "$@"
