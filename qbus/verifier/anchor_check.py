"""Reading anchored roots back from the chain, for ``qbus audit verify``.

The audit compares every ResultAnchored's root with the root the contract holds for
that batch (``qbus.verifier.chain.read_batch``): a log forged consistently (counts,
result hash, proof and root all rewritten) still fails here, because nobody but the
verifier key can anchor a root, and an anchored root cannot be changed.
"""

from __future__ import annotations

from qbus.bus.config import ChainConfig
from qbus.schemas.events import ResultAnchored
from qbus.verifier.chain import AnchorContract, hex32
from qbus.verifier.log_audit import RootReader


def chain_root_reader(
    chain: ChainConfig, *, same_process: bool = False
) -> tuple[RootReader | None, str]:
    """A RootReader on the configured chain, or None and the reason there is none.

    Args:
        chain: The ``[chain]`` settings (its ``rpc_url``).
        same_process: The anchoring happened in this process, so an in-process
            ``eth-tester://`` chain is the one that holds the roots.

    Returns:
        The reader (one contract connection per contract address, reused), or None with
        a note for the report.
    """
    if chain.rpc_url.startswith("eth-tester://") and not same_process:
        return None, (
            f"the chain is {chain.rpc_url}, an in-process chain that lives only in the "
            "process that anchored; set [chain] rpc_url to a node (anvil, a network) to "
            "compare roots"
        )
    handles: dict[str, AnchorContract] = {}

    async def read(event: ResultAnchored) -> tuple[str, int] | None:
        handle = handles.get(event.contract.lower())
        if handle is None:
            handle = await AnchorContract.connect(chain, event.contract)
            handles[event.contract.lower()] = handle
        if handle.chain_id != event.chain_id:
            raise ConnectionError(
                f"{chain.rpc_url} is chain {handle.chain_id}, the anchors are on chain "
                f"{event.chain_id}"
            )
        batch = await handle.batch(event.batch_id)
        return None if batch is None else (hex32(batch.root), batch.count)

    return read, ""
