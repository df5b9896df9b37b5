#!/usr/bin/env bash
# Set up (if needed) and run the demo: a local nats-server, every stage as its own
# process, a Bell-state job to a verified result, then everything stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/qbus demo "$@"
