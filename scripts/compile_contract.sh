#!/usr/bin/env bash
# Recompile the anchor contract with the pinned solc-js and rewrite its committed artifact
# (qbus/verifier/contracts/QbusAnchor.json). Needs node and tools/chain's packages
# (scripts/setup.sh installs them: npm ci --prefix tools/chain).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d tools/chain/node_modules/solc ] || npm ci --prefix tools/chain --no-audit --no-fund --loglevel=error
out=qbus/verifier/contracts/QbusAnchor.json
node qbus/verifier/contracts/compile.mjs >"$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
