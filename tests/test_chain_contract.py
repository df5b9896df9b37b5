"""The QbusAnchor contract on a real anvil node: roles, anchors, run requests, fulfilment."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from qbus.bus.config import ChainConfig
from qbus.verifier.anvil import AnvilNode
from qbus.verifier.chain import (
    ARTIFACT,
    AnchorContract,
    ChainError,
    ChainRevert,
    account_from_key,
    fund_dev_account,
)
from qbus.verifier.merkle import build_tree, keccak256, leaf_hash
from tests.jobs import QASM2_BELL as BELL

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent


def result_hash(i: int) -> str:
    return "sha256:" + hashlib.sha256(f"result {i}".encode()).hexdigest()


def test_committed_artifact_is_what_the_pinned_solc_compiles():
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not installed: run `bash scripts/setup.sh`")
    for package in ("solc", "@openzeppelin/contracts"):
        if not (ROOT / "tools/chain/node_modules" / package).is_dir():
            pytest.fail(f"{package} is missing: run `npm ci --prefix tools/chain` (setup.sh)")
    out = subprocess.run(
        [node, str(ROOT / "qbus/verifier/contracts/compile.mjs")],
        capture_output=True,
        check=True,
        timeout=90,
    ).stdout
    assert out == ARTIFACT.read_bytes(), "run scripts/compile_contract.sh and commit the artifact"


async def test_only_the_verifier_role_anchors(anvil: AnvilNode, anchor_contract: AnchorContract):
    stranger = account_from_key(anvil.dev_keys[1])
    as_stranger = anchor_contract.as_account(stranger)
    tree = build_tree([leaf_hash(result_hash(i)) for i in range(5)])
    with pytest.raises(ChainRevert) as refused:
        await as_stranger.anchor(tree.root, 5)
    assert refused.value.reason == "NotVerifier"
    assert await anchor_contract.batch(1) is None
    # Only the owner manages the role.
    with pytest.raises(ChainRevert) as refused:
        await as_stranger.set_verifier(stranger.address, True)
    assert refused.value.reason == "OwnableUnauthorizedAccount"
    assert refused.value.error_args == (stranger.address,)
    assert "is not the contract's owner" in str(refused.value)
    await anchor_contract.set_verifier(stranger.address, True)
    batch = await as_stranger.anchor(tree.root, 5)
    assert (batch.batch_id, batch.root, batch.count) == (1, tree.root, 5)
    await anchor_contract.set_verifier(stranger.address, False)
    other = build_tree([leaf_hash(result_hash(9))])
    with pytest.raises(ChainRevert, match="NotVerifier"):
        await as_stranger.anchor(other.root, 1)


async def test_ownership_moves_in_two_steps(anvil: AnvilNode, anchor_contract: AnchorContract):
    old = anchor_contract  # the deployer: owner and verifier
    new = anchor_contract.as_account(account_from_key(anvil.dev_keys[1]))
    stranger = anchor_contract.as_account(account_from_key(anvil.dev_keys[2]))
    old_address, new_address = old.account.address, new.account.address
    assert (await old.owner(), await old.pending_owner()) == (old_address, None)

    await old.transfer_ownership(new_address)
    # Pending: nothing has moved yet, the old owner keeps its rights.
    assert (await old.owner(), await old.pending_owner()) == (old_address, new_address)
    with pytest.raises(ChainRevert) as refused:
        await new.set_verifier(new_address, True)
    assert refused.value.reason == "OwnableUnauthorizedAccount"
    await old.set_verifier(stranger.account.address, True)
    assert await old.is_verifier(stranger.account.address)

    # Only the pending owner can accept.
    with pytest.raises(ChainRevert, match="is not the pending owner") as refused:
        await stranger.accept_ownership()
    assert refused.value.error_args == (stranger.account.address,)
    assert await old.owner() == old_address

    await new.accept_ownership()
    assert (await old.owner(), await old.pending_owner()) == (new_address, None)
    # The old owner has lost every owner-only call; the new one has them.
    for call in (
        old.set_verifier(stranger.account.address, False),
        old.transfer_ownership(old_address),
        old.cancel_ownership_transfer(),
    ):
        with pytest.raises(ChainRevert, match="is not the contract's owner") as refused:
            await call
        assert refused.value.error_args == (old_address,)
    with pytest.raises(ChainRevert, match="is not the pending owner"):
        await old.accept_ownership()
    await new.set_verifier(stranger.account.address, False)
    assert not await new.is_verifier(stranger.account.address)
    assert await old.is_verifier(old_address)  # the verifier role is separate from ownership


async def test_ownership_transfer_can_be_called_off_and_not_renounced(
    anvil: AnvilNode, anchor_contract: AnchorContract
):
    owner = anchor_contract
    other = anchor_contract.as_account(account_from_key(anvil.dev_keys[1]))
    await owner.transfer_ownership(other.account.address)
    with pytest.raises(ChainRevert, match="is not the contract's owner"):
        await other.cancel_ownership_transfer()
    await owner.cancel_ownership_transfer()
    assert await owner.pending_owner() is None
    with pytest.raises(ChainRevert, match="is not the pending owner"):
        await other.accept_ownership()
    assert await owner.owner() == owner.account.address
    # The zero address would read as "cancel" on chain: refused before anything is sent.
    with pytest.raises(ChainError, match="zero address"):
        await owner.transfer_ownership("0x" + "00" * 20)
    with pytest.raises(ChainError, match="not an Ethereum address"):
        await owner.transfer_ownership("0x1234")
    # Renouncing would leave the verifier role unmanageable: refused, even to the owner.
    renounce = owner.contract.functions.renounceOwnership()
    with pytest.raises(ChainRevert, match="cannot be renounced") as refused:
        await owner._transact(renounce, "renounce_ownership")
    assert refused.value.reason == "RenounceDisabled"
    assert await owner.owner() == owner.account.address


async def test_anchor_is_once_per_root_and_batches_count_up(anchor_contract: AnchorContract):
    first = build_tree([leaf_hash(result_hash(i)) for i in range(3)])
    second = build_tree([leaf_hash(result_hash(i)) for i in range(3, 10)])
    a = await anchor_contract.anchor(first.root, 3)
    b = await anchor_contract.anchor(second.root, 7)
    assert (a.batch_id, b.batch_id) == (1, 2)
    assert a.tx_hash and b.tx_hash and a.tx_hash != b.tx_hash
    again = await anchor_contract.anchor(first.root, 3)  # a retry finds the batch
    assert again == await anchor_contract.find_anchor(first.root)
    assert again.batch_id == 1 and again.tx_hash == a.tx_hash
    assert await anchor_contract.contract.functions.batchCount().call() == 2
    assert await anchor_contract.batch_root(2) == second.root
    logs = await anchor_contract.contract.events.Anchored.get_logs(from_block=0)
    assert [(e["args"]["batchId"], e["args"]["count"]) for e in logs] == [(1, 3), (2, 7)]


@pytest.mark.parametrize("count", [1, 2, 3, 6, 13])
async def test_on_chain_inclusion_check_agrees_with_python(
    anchor_contract: AnchorContract, count: int
):
    hashes = [result_hash(100 * count + i) for i in range(count)]
    tree = build_tree([leaf_hash(h) for h in hashes])
    batch = await anchor_contract.anchor(tree.root, count)
    for i, h in enumerate(hashes):
        assert await anchor_contract.verify_inclusion(batch.batch_id, h, tree.proof(i), i)
    wrong = hashes[1 % count] if count > 1 else result_hash(-1)
    assert not await anchor_contract.verify_inclusion(batch.batch_id, wrong, tree.proof(0), 0)
    # A copy of the last leaf at position `count` is refused: the contract knows the count.
    last = count - 1
    if last % 2 == 0 and count > 1:
        proof = tree.proof(last)
        assert not await anchor_contract.verify_inclusion(
            batch.batch_id, hashes[last], proof, count
        )


async def test_run_requests_are_validated_stored_and_logged(
    anvil: AnvilNode, anchor_contract: AnchorContract
):
    requester = anchor_contract.as_account(account_from_key(anvil.dev_keys[2]))
    request_id, tx = await requester.request_run(BELL, shots=300)
    assert request_id == 1
    state = await anchor_contract.request(1)
    assert state is not None and state.qasm_hash == keccak256(BELL.encode())
    assert state.shots == 300 and not state.fulfilled
    digest = keccak256(b"program at a uri")
    second, _ = await requester.request_run(qasm_hash=digest, uri="https://x/p.qasm", shots=5)
    assert second == 2
    logs = await anchor_contract.run_requests(0, tx.block_number + 5)
    assert [(r.request_id, r.qasm, r.uri, r.shots) for r in logs] == [
        (1, BELL, "", 300),
        (2, "", "https://x/p.qasm", 5),
    ]
    assert logs[0].requester == requester.account.address
    for kwargs, reason in [
        ({"qasm": BELL, "shots": 0}, "ZeroShots"),
        ({"qasm": "", "shots": 10}, "NoProgram"),
        ({"qasm": "", "qasm_hash": digest, "shots": 10}, "NoProgram"),
        ({"qasm": BELL, "qasm_hash": digest, "shots": 10}, "QasmHashMismatch"),
    ]:
        with pytest.raises(ChainRevert) as refused:
            await requester.request_run(**kwargs)
        assert refused.value.reason == reason


async def test_fulfil_needs_the_role_an_anchored_root_and_happens_once(
    anvil: AnvilNode, anchor_contract: AnchorContract
):
    requester = anchor_contract.as_account(account_from_key(anvil.dev_keys[2]))
    request_id, _ = await requester.request_run(BELL, shots=100)
    rh = result_hash(1)
    tree = build_tree([leaf_hash(rh)])
    with pytest.raises(ChainRevert, match="UnknownRoot"):
        await anchor_contract.fulfill(request_id, rh, tree.root)
    await anchor_contract.anchor(tree.root, 1)
    with pytest.raises(ChainRevert, match="NotVerifier"):
        await requester.fulfill(request_id, rh, tree.root)
    with pytest.raises(ChainRevert, match="UnknownRequest"):
        await anchor_contract.fulfill(99, rh, tree.root)
    assert await anchor_contract.fulfill(request_id, rh, tree.root) is True
    assert await anchor_contract.fulfill(request_id, rh, tree.root) is False  # once only
    state = await anchor_contract.request(request_id)
    assert state.fulfilled and state.result_hash == bytes.fromhex(rh[7:])
    assert state.anchor_root == tree.root
    (fulfilled,) = await anchor_contract.fulfilled_logs()
    assert fulfilled["requestId"] == request_id and fulfilled["resultHash"] == state.result_hash


async def test_the_in_process_chain_runs_the_same_contract():
    # py-evm in this process: the embedded default, no node to start.
    chain = ChainConfig(rpc_url="eth-tester://test-contract")
    account = account_from_key("0x" + "11" * 32)  # a throwaway key, funded by the chain
    address = await AnchorContract.deploy(chain, account)
    contract = await AnchorContract.connect(chain, address, account)
    hashes = [result_hash(i) for i in range(5)]
    tree = build_tree([leaf_hash(h) for h in hashes])
    batch = await contract.anchor(tree.root, 5)
    assert batch.batch_id == 1 and batch.tx_hash
    assert await contract.verify_inclusion(1, hashes[3], tree.proof(3), 3)
    stranger = contract.as_account(account_from_key("0x" + "22" * 32))
    await fund_dev_account(contract.w3, stranger.account.address)
    with pytest.raises(ChainRevert) as refused:
        await stranger.anchor(b"\x05" * 32, 1)
    assert refused.value.reason == "NotVerifier"
    assert refused.value.error_args == (stranger.account.address,)
    # Two-step ownership behaves the same on py-evm.
    await contract.transfer_ownership(stranger.account.address)
    assert await contract.owner() == account.address
    await stranger.accept_ownership()
    assert (await contract.owner(), await contract.pending_owner()) == (
        stranger.account.address,
        None,
    )
