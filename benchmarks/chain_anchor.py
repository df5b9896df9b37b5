"""Chain anchoring: one Merkle batch per transaction vs one transaction per result.

Starts a real anvil node (tools/chain), deploys QbusAnchor, then anchors N result hashes
twice, in the same run:

1. batched: trees of ``--batch`` results, one ``anchor`` transaction each (what the
   anchor stage does);
2. peer: every result anchored alone (a batch of one), one transaction per result.

Prints gas and wall time of each and their ratios, plus the time to build the trees.

    python benchmarks/chain_anchor.py --results 256 --batch 64
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time

from qbus.bus.config import ChainConfig
from qbus.verifier.anvil import AnvilNode
from qbus.verifier.chain import AnchorContract, account_from_key, close_connections
from qbus.verifier.merkle import build_tree, leaf_hash


def _hashes(n: int, tag: str) -> list[str]:
    return ["sha256:" + hashlib.sha256(f"{tag}-{i}".encode()).hexdigest() for i in range(n)]


async def _anchor_all(contract: AnchorContract, hashes: list[str], batch: int) -> tuple[int, float]:
    gas, started = 0, time.perf_counter()
    for i in range(0, len(hashes), batch):
        chunk = hashes[i : i + batch]
        tree = build_tree([leaf_hash(h) for h in chunk])
        anchored = await contract.anchor(tree.root, len(chunk))
        receipt = await contract.w3.eth.get_transaction_receipt(anchored.tx_hash)
        gas += receipt["gasUsed"]
    return gas, time.perf_counter() - started


async def main(results: int, batch: int) -> None:
    with AnvilNode() as node:
        chain = ChainConfig(rpc_url=node.url, poll_interval=0.05)
        account = account_from_key(node.dev_keys[0])
        address = await AnchorContract.deploy(chain, account)
        contract = await AnchorContract.connect(chain, address, account)
        try:
            started = time.perf_counter()
            for i in range(0, results, batch):
                build_tree([leaf_hash(h) for h in _hashes(batch, f"t{i}")])
            tree_s = time.perf_counter() - started
            gas_b, secs_b = await _anchor_all(contract, _hashes(results, "batched"), batch)
            gas_1, secs_1 = await _anchor_all(contract, _hashes(results, "single"), 1)
        finally:
            await close_connections()
    print(f"{results} results, anvil {node.url} (automine)")
    print(f"batched ({batch}/tx): {gas_b / results:9.0f} gas/result  {secs_b * 1e3:8.1f} ms total")
    print(f"one tx per result : {gas_1 / results:9.0f} gas/result  {secs_1 * 1e3:8.1f} ms total")
    print(f"ratio peer/batched: gas x{gas_1 / gas_b:.1f}, time x{secs_1 / secs_b:.1f}")
    print(f"Merkle trees in Python: {tree_s * 1e3:.1f} ms for {results} leaves")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(main(args.results, args.batch))
