#!/usr/bin/env bash
# Recompile the anchor contract with the pinned solc-js and rewrite its committed artifact
# (qbus/verifier/contracts/QbusAnchor.json). Needs node and tools/chain's packages, solc and
# the OpenZeppelin sources the contract imports (scripts/setup.sh installs them:
# npm ci --prefix tools/chain).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d tools/chain/node_modules/solc ] || [ ! -d tools/chain/node_modules/@openzeppelin/contracts ]; then
    npm ci --prefix tools/chain --no-audit --no-fund --loglevel=error
fi
out=qbus/verifier/contracts/QbusAnchor.json
node qbus/verifier/contracts/compile.mjs >"$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
