"""``qbus chain …``: deploy the anchor contract, hand over its ownership, follow requests.

The verifier's key comes from the secrets provider (``[chain] key_secret``; with the env
provider ``QBUS_SECRET_CHAIN_VERIFIER_KEY``). See docs/chain.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import msgspec

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.job_log import first_stored
from qbus.cli.context import config_of
from qbus.observability.metrics import serve_or_warn
from qbus.producers.chain_listener import ChainListener
from qbus.schemas.events import ResultAnchored
from qbus.secrets import SecretError, provider_from_config
from qbus.verifier.anvil import AnvilNode
from qbus.verifier.chain import (
    AnchorContract,
    account_from_key,
    close_connections,
    open_contract,
    read_batch,
    verifier_account,
)
from qbus.verifier.merkle import leaf_hash, verify_proof


@click.group()
def chain() -> None:
    """The Ethereum side: anchor contract, run requests, batches."""


@chain.command()
@click.option(
    "--verifier",
    default=None,
    help="Address given the verifier role (default: the deploying verifier key's).",
)
@click.pass_context
def deploy(ctx: click.Context, verifier: str | None) -> None:
    """Deploy QbusAnchor with the verifier key and print its address."""
    config = config_of(ctx)

    async def go() -> str:
        try:
            return await AnchorContract.deploy(config.chain, verifier_account(config), verifier)
        finally:
            await close_connections()

    address = asyncio.run(go())
    click.echo(address)
    click.echo(f"# use it with: export QBUS_CHAIN_CONTRACT={address}", err=True)


@chain.command()
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics on this port.")
@click.pass_context
def listen(ctx: click.Context, metrics_port: int | None) -> None:
    """Turn the contract's RunRequested logs into jobs until Ctrl-C."""
    logging.getLogger().setLevel(logging.INFO)
    config = config_of(ctx)
    serve_or_warn(metrics_port, config.observability.metrics_addr)
    asyncio.run(_listen(config))


async def _listen(config: Config) -> None:
    bus = await Bus.connect(config.bus, name="qbus-chain-listener")
    try:
        await bus.provision()
        kv = await bus.js.key_value(bus.config.kv_chain)
        contract = await open_contract(config, kv)
        listener = ChainListener(bus, config, contract)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, listener.stop)
        await listener.run()
    finally:
        await close_connections()
        await bus.close()


@chain.command()
@click.option("--contract", default=None, help="Contract address (default: [chain] contract).")
@click.option("--batch", "batch_id", type=int, default=None, help="Show this batch.")
@click.pass_context
def status(ctx: click.Context, contract: str | None, batch_id: int | None) -> None:
    """Print the contract's owner, batch and request counts (or one batch) as JSON.

    ``pending_owner`` is the account a started ownership transfer waits on (null: none).
    """
    config = config_of(ctx)
    address = _contract_address(config, contract)

    async def go() -> dict:
        try:
            handle = await AnchorContract.connect(config.chain, address)
            fns = handle.contract.functions
            out: dict = {
                "chain_id": handle.chain_id,
                "contract": handle.address,
                "owner": await handle.owner(),
                "pending_owner": await handle.pending_owner(),
                "batches": await fns.batchCount().call(),
                "requests": await fns.requestCount().call(),
            }
            if batch_id is not None:
                batch = await handle.batch(batch_id)
                out["batch"] = None
                if batch is not None:
                    out["batch"] = {
                        "batch_id": batch.batch_id,
                        "root": "0x" + batch.root.hex(),
                        "count": batch.count,
                        "block_number": batch.block_number,
                    }
            return out
        finally:
            await close_connections()

    click.echo(json.dumps(asyncio.run(go()), indent=2))


@chain.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--shots", type=int, default=1024, show_default=True)
@click.option(
    "--key-secret",
    default="chain/requester_key",
    show_default=True,
    help="Secret holding the requesting account's private key.",
)
@click.pass_context
def request(ctx: click.Context, path: str, shots: int, key_secret: str) -> None:
    """Call requestRun with the OpenQASM program in PATH (as a user's contract call would)."""
    config = config_of(ctx)
    if not config.chain.contract:
        raise click.ClickException("no contract: set [chain] contract or QBUS_CHAIN_CONTRACT")
    account = account_from_key(provider_from_config(config).get(key_secret))

    async def go() -> tuple[int, str]:
        try:
            handle = await AnchorContract.connect(config.chain, config.chain.contract, account)
            request_id, tx = await handle.request_run(Path(path).read_text(), shots=shots)
            return request_id, tx.tx_hash
        finally:
            await close_connections()

    request_id, tx_hash = asyncio.run(go())
    click.echo(json.dumps({"request_id": request_id, "tx_hash": tx_hash}))


_CONTRACT_OPTION = click.option(
    "--contract", default=None, help="Contract address (default: [chain] contract)."
)
_KEY_SECRET_OPTION = click.option(
    "--key-secret",
    default=None,
    help="Secret holding the signing account's private key (default: [chain] key_secret).",
)


@chain.command("transfer-ownership")
@click.argument("new_owner", required=False)
@click.option("--cancel", is_flag=True, help="Call off the pending transfer instead.")
@_CONTRACT_OPTION
@_KEY_SECRET_OPTION
@click.pass_context
def transfer_ownership(
    ctx: click.Context,
    new_owner: str | None,
    cancel: bool,
    contract: str | None,
    key_secret: str | None,
) -> None:
    """Step 1 of 2, signed by the owner: name NEW_OWNER as the pending owner.

    The owner keeps every right until NEW_OWNER runs `qbus chain accept-ownership`.
    """
    if cancel == (new_owner is not None):
        raise click.UsageError("give either NEW_OWNER or --cancel")
    config = config_of(ctx)
    address = _contract_address(config, contract)
    account = _signing_account(config, key_secret)

    async def go(handle: AnchorContract) -> str:
        if new_owner is None:
            return (await handle.cancel_ownership_transfer()).tx_hash
        return (await handle.transfer_ownership(new_owner)).tx_hash

    click.echo(json.dumps(asyncio.run(_ownership_call(config, address, account, go))))


@chain.command("accept-ownership")
@_CONTRACT_OPTION
@_KEY_SECRET_OPTION
@click.pass_context
def accept_ownership(ctx: click.Context, contract: str | None, key_secret: str | None) -> None:
    """Step 2 of 2, signed by the pending owner: become the contract's owner."""
    config = config_of(ctx)
    address = _contract_address(config, contract)
    account = _signing_account(config, key_secret)

    async def go(handle: AnchorContract) -> str:
        return (await handle.accept_ownership()).tx_hash

    click.echo(json.dumps(asyncio.run(_ownership_call(config, address, account, go))))


def _contract_address(config: Config, contract: str | None) -> str:
    address = contract or config.chain.contract
    if not address:
        raise click.ClickException("no contract: pass --contract or set [chain] contract")
    return address


def _signing_account(config: Config, key_secret: str | None) -> Any:
    return account_from_key(provider_from_config(config).get(key_secret or config.chain.key_secret))


async def _ownership_call(
    config: Config,
    address: str,
    account: Any,
    send: Callable[[AnchorContract], Awaitable[str]],
) -> dict[str, str | None]:
    """Send one ownership transaction; the owner and pending owner after it, as JSON."""
    try:
        handle = await AnchorContract.connect(config.chain, address, account)
        tx_hash = await send(handle)
        return {
            "owner": await handle.owner(),
            "pending_owner": await handle.pending_owner(),
            "tx_hash": tx_hash,
        }
    finally:
        await close_connections()


class ChainUp:
    """What ``qbus up --chain …`` adds: environment for the stages and two processes."""

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self.stages: list[tuple[str, list[str]]] = []
        self.summary = ""


@contextlib.contextmanager
def chain_for_up(chain_opt: str | None, config: Config, state_dir: Path):
    """For ``qbus up``: start anvil (``anvil``) or use a JSON-RPC URL, deploy the contract
    unless ``[chain] contract`` names one, and yield the stage processes and environment.

    With anvil and no verifier key configured, anvil's first development account signs
    (handed to the stages through ``QBUS_SECRET_CHAIN_VERIFIER_KEY``).
    """
    up = ChainUp()
    if not chain_opt:
        yield up
        return
    node = None
    try:
        if chain_opt == "anvil":
            node = AnvilNode(log_dir=state_dir / "anvil").start()
            rpc_url = node.url
        elif chain_opt.startswith(("http://", "https://")):
            rpc_url = chain_opt
        else:
            raise click.ClickException(
                f"--chain takes 'anvil' or an http(s) JSON-RPC URL, not {chain_opt!r} "
                "(the in-process eth-tester chain cannot be shared by separate processes)"
            )
        chain_cfg = msgspec.structs.replace(config.chain, rpc_url=rpc_url)
        try:
            key = provider_from_config(config).get(chain_cfg.key_secret)
        except SecretError:
            if node is None:
                raise
            key = node.dev_keys[0]
            up.env["QBUS_SECRET_CHAIN_VERIFIER_KEY"] = key
        address = chain_cfg.contract
        if not address:

            async def deploy() -> str:
                try:
                    return await AnchorContract.deploy(chain_cfg, account_from_key(key))
                finally:
                    await close_connections()

            address = asyncio.run(deploy())
        up.env["QBUS_CHAIN_RPC_URL"] = rpc_url
        up.env["QBUS_CHAIN_CONTRACT"] = address
        up.stages = [("anchor", ["stage", "anchor"]), ("chain-listen", ["chain", "listen"])]
        up.summary = (
            f"chain        {rpc_url}  contract {address}"
            + (f"  (anvil pid {node.pid})" if node else "")
            + f"\n             for `qbus chain …`: export QBUS_CHAIN_RPC_URL={rpc_url} "
            f"QBUS_CHAIN_CONTRACT={address}"
        )
        yield up
    finally:
        if node is not None:
            node.stop()


async def anchored_report(config: Config, job_id: str, timeout: float = 30.0) -> tuple[bool, str]:
    """Wait for a job's ResultAnchored and check its proof against the root on chain.

    Returns (ok, lines to print): for ``qbus demo --chain``.
    """
    async with await Bus.connect(config.bus, name="qbus-demo-anchor") as bus:
        try:
            event = await first_stored(bus, bus.subjects.anchored(job_id), timeout)
        except TimeoutError:  # nats-py's TimeoutError subclasses the builtin
            return False, f"no ResultAnchored for {job_id} within {timeout:.0f} s"
    assert isinstance(event, ResultAnchored)
    try:
        batch = await read_batch(config.chain, event.contract, event.batch_id)
    finally:
        await close_connections()
    proof = [bytes.fromhex(p.removeprefix("0x")) for p in event.proof]
    ok = batch is not None and verify_proof(
        leaf_hash(event.result_hash), proof, event.leaf_index, batch.root, count=batch.count
    )
    lines = (
        f"anchored: batch {event.batch_id} (leaf {event.leaf_index} of {event.batch_size}) "
        f"root {event.root}\n"
        f"          tx {event.tx_hash} in block {event.block_number}, chain {event.chain_id}, "
        f"contract {event.contract}\n"
        f"          inclusion proof ({len(proof)} hashes) "
        + ("verifies against the root read from the contract" if ok else "DOES NOT VERIFY")
    )
    return ok, lines
