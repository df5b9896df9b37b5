"""The anchor contract on an Ethereum chain, through web3.py: deploy, anchor, fulfil, read.

``AnchorContract`` wraps one deployed ``QbusAnchor`` (qbus/verifier/contracts/) for one
signing account (the verifier's key, from the secrets provider; never from code). It
works the same against any JSON-RPC node (anvil, a real network) and against the
in-process py-evm chain (``eth-tester://NAME``), which lives as long as the process and
is shared by everything in it that names the same URL.

For the audit: ``read_batch(chain_config, contract, batch_id)`` gives an anchored batch
(root, count, block) straight from the contract.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from qbus.bus.config import ChainConfig
from qbus.bus.kv import read_value
from qbus.errors import MissingOptionalLibraryError, QbusError
from qbus.observability import metrics, tracing
from qbus.secrets import provider_from_config
from qbus.verifier.merkle import digest_bytes

log = logging.getLogger("qbus.chain")

ARTIFACT = Path(__file__).parent / "contracts" / "QbusAnchor.json"
"""The committed compiler output (ABI + bytecode); tests recompile and compare."""

ZERO_ADDRESS = "0x" + "00" * 20


_REQUEST_JOB_RE = re.compile(r"^c(\d{1,20})-([0-9a-f]{16})-r(\d{1,24})$")


def request_job_id(chain_id: int, contract: str, request_id: int) -> str:
    """The job id of a chain run request: ``c<chain id>-<contract's first 16 hex>-r<id>``.

    Derived, never random: a listener that sees a request twice (a restart, two copies)
    submits the same job, which the bus then runs once.
    """
    return f"c{chain_id}-{contract.lower().removeprefix('0x')[:16]}-r{request_id}"


def parse_request_job_id(job_id: str, chain_id: int, contract: str) -> int | None:
    """The request id when ``job_id`` is a request of this chain and contract, else None."""
    match = _REQUEST_JOB_RE.match(job_id)
    if match is None or int(match.group(1)) != chain_id:
        return None
    if match.group(2) != contract.lower().removeprefix("0x")[:16]:
        return None
    return int(match.group(3))


class ChainError(QbusError):
    """The chain cannot be reached, or a transaction failed or timed out."""

    code = "chain_error"


class ChainRevert(ChainError):
    """The contract refused a call.

    Attributes:
        reason: The contract's custom error name (``NotVerifier``, ``AlreadyFulfilled``,
            OpenZeppelin's ``OwnableUnauthorizedAccount`` …), or the revert data when it
            is not one of the contract's errors.
        error_args: The error's arguments, decoded (addresses checksummed); empty when
            the data could not be decoded.
    """

    code = "chain_revert"

    def __init__(self, message: str, *, reason: str, error_args: tuple[Any, ...] = ()):
        super().__init__(message)
        self.reason = reason
        self.error_args = error_args


@cache
def load_artifact() -> dict[str, Any]:
    """The compiled contract: ``abi``, ``bytecode``, ``compiler``."""
    return json.loads(ARTIFACT.read_text())


def _web3() -> Any:
    try:
        import web3
    except ImportError as exc:
        raise MissingOptionalLibraryError("web3", "chain", "Chain anchoring") from exc
    return web3


_TESTER_PROVIDERS: dict[str, Any] = {}
_WEB3S: dict[str, tuple[Any, Any]] = {}  # rpc url → (event loop, AsyncWeb3)


def make_web3(rpc_url: str) -> Any:
    """An ``AsyncWeb3`` for ``rpc_url`` (``http(s)://…`` or ``eth-tester://NAME``).

    One per URL and event loop: its HTTP session belongs to the loop. Close them with
    ``close_connections()`` before the loop ends.
    """
    web3 = _web3()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    cached = _WEB3S.get(rpc_url)
    if cached is not None and cached[0] is loop:
        return cached[1]
    if rpc_url.startswith("eth-tester://"):
        provider = _TESTER_PROVIDERS.get(rpc_url)
        if provider is None:
            try:
                from web3.providers.eth_tester import AsyncEthereumTesterProvider

                provider = AsyncEthereumTesterProvider()
            except ImportError as exc:
                raise MissingOptionalLibraryError(
                    "eth-tester[py-evm]", "chain", "The in-process chain"
                ) from exc
            _TESTER_PROVIDERS[rpc_url] = provider
        w3 = web3.AsyncWeb3(provider)
    else:
        w3 = web3.AsyncWeb3(web3.AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    _WEB3S[rpc_url] = (loop, w3)
    return w3


async def close_connections() -> None:
    """Close the HTTP sessions of this event loop's chain connections."""
    loop = asyncio.get_running_loop()
    for url, (owner, w3) in list(_WEB3S.items()):
        if owner is loop:
            del _WEB3S[url]
            disconnect = getattr(w3.provider, "disconnect", None)
            if disconnect is not None and not url.startswith("eth-tester://"):
                with contextlib.suppress(Exception):
                    await disconnect()


def account_from_key(key: str) -> Any:
    """The signing account of a hex private key."""
    try:
        from eth_account import Account
    except ImportError as exc:
        raise MissingOptionalLibraryError("eth-account", "chain", "Chain signing") from exc
    try:
        return Account.from_key(key.strip())
    except Exception as exc:  # the key itself must never be echoed
        raise ChainError(
            f"the verifier key is not a valid private key ({type(exc).__name__})"
        ) from None


def verifier_account(config: Any) -> Any:
    """The verifier's account, its key read from the configured secrets provider."""
    return account_from_key(provider_from_config(config).get(config.chain.key_secret))


def to_bytes32(value: bytes | str) -> bytes:
    """32 bytes from raw bytes, ``0x``-hex, or a ``sha256:`` result hash."""
    if isinstance(value, bytes):
        raw = value
    elif value.startswith("sha256:"):
        raw = digest_bytes(value)
    else:
        raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"not 32 bytes: {value!r}")
    return raw


def hex32(value: bytes) -> str:
    """``0x``-hex of bytes (a root, a tx hash)."""
    return "0x" + bytes(value).hex()


@dataclass(frozen=True)
class TxResult:
    """A mined transaction."""

    tx_hash: str
    block_number: int
    gas_used: int


@dataclass(frozen=True)
class AnchoredBatch:
    """A batch as the contract holds it, and (when looked up) the tx that anchored it."""

    batch_id: int
    root: bytes
    count: int
    block_number: int
    timestamp: int
    tx_hash: str | None = None


@dataclass(frozen=True)
class RunRequest:
    """A ``RunRequested`` log."""

    request_id: int
    requester: str
    qasm_hash: bytes
    uri: str
    shots: int
    qasm: str
    block_number: int
    log_index: int
    tx_hash: str


@dataclass(frozen=True)
class RequestState:
    """A request as the contract holds it (``getRequest``)."""

    requester: str
    qasm_hash: bytes
    shots: int
    block_number: int
    fulfilled: bool
    result_hash: bytes
    anchor_root: bytes
    uri: str


# One sender per key and chain in a process: nonces are taken one at a time.
_SEND_LOCKS: dict[tuple[str, str], asyncio.Lock] = {}


class AnchorContract:
    """One deployed QbusAnchor, seen through ``w3`` and signing as ``account``.

    Args:
        w3: An ``AsyncWeb3`` (``make_web3``).
        address: The contract's address.
        chain_id: The chain's id.
        account: The signing account (None: read-only).
        rpc_url: For logs and the per-key send lock.
        confirmations: Blocks on top of a transaction before it counts as done.
        poll_interval: Seconds between receipt polls.
        tx_timeout: Seconds to wait for a transaction to be mined.
    """

    def __init__(
        self,
        w3: Any,
        address: str,
        chain_id: int,
        account: Any = None,
        *,
        rpc_url: str = "",
        confirmations: int = 0,
        poll_interval: float = 0.2,
        tx_timeout: float = 120.0,
    ) -> None:
        self.w3 = w3
        self.address = w3.to_checksum_address(address)
        self.chain_id = chain_id
        self.account = account
        self.rpc_url = rpc_url
        self.confirmations = confirmations
        self.poll_interval = poll_interval
        self.tx_timeout = tx_timeout
        self.contract = w3.eth.contract(address=self.address, abi=load_artifact()["abi"])
        self._errors = _error_selectors(load_artifact()["abi"])

    # -- construction ---------------------------------------------------------------

    @classmethod
    async def connect(cls, chain: ChainConfig, address: str, account: Any = None) -> AnchorContract:
        """The contract at ``address`` on ``chain.rpc_url``.

        Raises:
            ChainError: The node cannot be reached or holds no code at ``address``.
        """
        w3 = make_web3(chain.rpc_url)
        chain_id = await _chain_id(w3, chain.rpc_url)
        code = await w3.eth.get_code(w3.to_checksum_address(address))
        if not code:
            raise ChainError(f"no contract at {address} on {chain.rpc_url} (chain {chain_id})")
        return cls(
            w3,
            address,
            chain_id,
            account,
            rpc_url=chain.rpc_url,
            confirmations=chain.confirmations,
            poll_interval=min(chain.poll_interval, 0.5),
            tx_timeout=chain.tx_timeout,
        )

    @classmethod
    async def deploy(cls, chain: ChainConfig, account: Any, verifier: str | None = None) -> str:
        """Deploy QbusAnchor owned by ``account``; ``verifier`` (default: the same
        account) gets the verifier role. Returns the address.

        On the in-process chain the account is funded from the chain's own rich account.
        """
        w3 = make_web3(chain.rpc_url)
        chain_id = await _chain_id(w3, chain.rpc_url)
        if chain.rpc_url.startswith("eth-tester://"):
            await fund_dev_account(w3, account.address)
        artifact = load_artifact()
        factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        # A handle on no contract yet: only its sending machinery is used.
        probe = cls(
            w3,
            ZERO_ADDRESS,
            chain_id,
            account,
            rpc_url=chain.rpc_url,
            confirmations=chain.confirmations,
            tx_timeout=chain.tx_timeout,
        )
        receipt = await probe._transact(
            factory.constructor(w3.to_checksum_address(verifier or account.address)),
            "deploy",
            want_receipt=True,
        )
        address = receipt["contractAddress"]
        log.info("deployed QbusAnchor at %s on chain %d", address, chain_id)
        return w3.to_checksum_address(address)

    def as_account(self, account: Any) -> AnchorContract:
        """The same contract, signing as ``account``."""
        return AnchorContract(
            self.w3,
            self.address,
            self.chain_id,
            account,
            rpc_url=self.rpc_url,
            confirmations=self.confirmations,
            poll_interval=self.poll_interval,
            tx_timeout=self.tx_timeout,
        )

    # -- anchors --------------------------------------------------------------------

    async def anchor(self, root: bytes, count: int) -> AnchoredBatch:
        """Anchor ``root`` of a batch of ``count`` leaves; one transaction.

        A root the contract already holds (a retry after a crash, or a batch of the very
        same results) is not anchored again: the existing batch is returned.
        """
        existing = await self.find_anchor(root)
        if existing is not None:
            return existing
        try:
            tx = await self._transact(self.contract.functions.anchor(root, count), "anchor")
        except ChainRevert as exc:
            if exc.reason != "RootAlreadyAnchored":
                raise
            found = await self.find_anchor(root)
            if found is None:  # pragma: no cover - the contract just said it has it
                raise
            return found
        batch_id = await self.contract.functions.batchOfRoot(root).call(
            block_identifier=tx.block_number
        )
        batch = await self.batch(batch_id)
        assert batch is not None
        return AnchoredBatch(
            batch_id, batch.root, batch.count, batch.block_number, batch.timestamp, tx.tx_hash
        )

    async def batch(self, batch_id: int) -> AnchoredBatch | None:
        """Batch ``batch_id`` as the contract holds it (None: no such batch)."""
        root, count, block, timestamp, _verifier = await self.contract.functions.getBatch(
            batch_id
        ).call()
        if count == 0:
            return None
        return AnchoredBatch(batch_id, bytes(root), count, block, timestamp)

    async def batch_root(self, batch_id: int) -> bytes | None:
        """The Merkle root anchored as ``batch_id`` (None: no such batch)."""
        batch = await self.batch(batch_id)
        return batch.root if batch else None

    async def find_anchor(self, root: bytes) -> AnchoredBatch | None:
        """The batch that anchored ``root``, with its transaction (None: not anchored)."""
        batch_id = await self.contract.functions.batchOfRoot(root).call()
        if batch_id == 0:
            return None
        batch = await self.batch(batch_id)
        assert batch is not None
        logs = await self.contract.events.Anchored.get_logs(
            from_block=batch.block_number,
            to_block=batch.block_number,
            argument_filters={"batchId": batch_id},
        )
        tx_hash = hex32(logs[0]["transactionHash"]) if logs else None
        return AnchoredBatch(
            batch_id, batch.root, batch.count, batch.block_number, batch.timestamp, tx_hash
        )

    async def verify_inclusion(
        self, batch_id: int, result_hash: str, proof: list[bytes], index: int
    ) -> bool:
        """The contract's own check that ``result_hash`` is leaf ``index`` of the batch."""
        return await self.contract.functions.verifyInclusion(
            batch_id, to_bytes32(result_hash), proof, index
        ).call()

    # -- ownership (OpenZeppelin Ownable2Step) ---------------------------------------

    async def owner(self) -> str:
        """The owner: the account that manages the verifier role."""
        return await self.contract.functions.owner().call()

    async def pending_owner(self) -> str | None:
        """The account a transfer waits on to accept (None: no transfer under way)."""
        pending = await self.contract.functions.pendingOwner().call()
        return None if int(pending, 16) == 0 else pending

    async def transfer_ownership(self, new_owner: str) -> TxResult:
        """Step 1 (owner only): name ``new_owner`` as the pending owner.

        The signing account stays the owner, with all its rights, until ``new_owner``
        calls ``accept_ownership``; naming another account replaces the pending one.

        Raises:
            ChainError: ``new_owner`` is not an address, or is the zero address (use
                ``cancel_ownership_transfer``).
            ChainRevert: The signing account is not the owner
                (``OwnableUnauthorizedAccount``).
        """
        address = self._checksum(new_owner)
        if int(address, 16) == 0:
            raise ChainError(
                "the new owner cannot be the zero address "
                "(to call off a transfer, cancel it instead)"
            )
        return await self._transact(
            self.contract.functions.transferOwnership(address), "transfer_ownership"
        )

    async def cancel_ownership_transfer(self) -> TxResult:
        """Owner only: call off a pending transfer (the pending owner becomes zero)."""
        return await self._transact(
            self.contract.functions.transferOwnership(ZERO_ADDRESS), "cancel_ownership_transfer"
        )

    async def accept_ownership(self) -> TxResult:
        """Step 2: the pending owner, signing, becomes the owner.

        Raises:
            ChainRevert: The signing account is not the pending owner
                (``OwnableUnauthorizedAccount``).
        """
        return await self._transact(self.contract.functions.acceptOwnership(), "accept_ownership")

    # -- roles ----------------------------------------------------------------------

    async def set_verifier(self, account: str, enabled: bool) -> TxResult:
        """Grant or revoke the verifier role (owner only)."""
        return await self._transact(
            self.contract.functions.setVerifier(self.w3.to_checksum_address(account), enabled),
            "set_verifier",
        )

    async def is_verifier(self, account: str) -> bool:
        return await self.contract.functions.isVerifier(self.w3.to_checksum_address(account)).call()

    # -- run requests ---------------------------------------------------------------

    async def request_run(
        self, qasm: str = "", *, qasm_hash: bytes = b"\0" * 32, uri: str = "", shots: int = 1024
    ) -> tuple[int, TxResult]:
        """Call ``requestRun``; returns the request id and the transaction."""
        tx = await self._transact(
            self.contract.functions.requestRun(qasm, qasm_hash, uri, shots), "request_run"
        )
        receipt = await self.w3.eth.get_transaction_receipt(tx.tx_hash)
        (event,) = self.contract.events.RunRequested().process_receipt(receipt)
        return int(event["args"]["requestId"]), tx

    async def run_requests(self, from_block: int, to_block: int) -> list[RunRequest]:
        """``RunRequested`` logs in the block range, in chain order."""
        logs = await self.contract.events.RunRequested.get_logs(
            from_block=from_block, to_block=to_block
        )
        out = [
            RunRequest(
                request_id=int(e["args"]["requestId"]),
                requester=e["args"]["requester"],
                qasm_hash=bytes(e["args"]["qasmHash"]),
                uri=e["args"]["uri"],
                shots=int(e["args"]["shots"]),
                qasm=e["args"]["qasm"],
                block_number=int(e["blockNumber"]),
                log_index=int(e["logIndex"]),
                tx_hash=hex32(e["transactionHash"]),
            )
            for e in logs
        ]
        return sorted(out, key=lambda r: (r.block_number, r.log_index))

    async def request(self, request_id: int) -> RequestState | None:
        """Request ``request_id`` as the contract holds it (None: no such request)."""
        r = await self.contract.functions.getRequest(request_id).call()
        if int(r[0], 16) == 0:
            return None
        return RequestState(
            requester=r[0],
            qasm_hash=bytes(r[1]),
            shots=int(r[2]),
            block_number=int(r[3]),
            fulfilled=bool(r[4]),
            result_hash=bytes(r[5]),
            anchor_root=bytes(r[6]),
            uri=r[7],
        )

    async def fulfill(self, request_id: int, result_hash: str, anchor_root: bytes) -> bool:
        """Fulfil a request once. Returns False when it was fulfilled already (a retry).

        Raises:
            ChainRevert: The contract refused for another reason (unknown request or root).
        """
        try:
            await self._transact(
                self.contract.functions.fulfill(request_id, to_bytes32(result_hash), anchor_root),
                "fulfill",
            )
        except ChainRevert as exc:
            if exc.reason == "AlreadyFulfilled":
                return False
            raise
        return True

    async def fulfilled_logs(self, from_block: int = 0) -> list[dict]:
        """``RunFulfilled`` logs since ``from_block``."""
        logs = await self.contract.events.RunFulfilled.get_logs(from_block=from_block)
        return [dict(e["args"]) | {"blockNumber": e["blockNumber"]} for e in logs]

    # -- transactions ---------------------------------------------------------------

    @tracing.traced_chain_tx
    async def _transact(self, fn: Any, method: str, *, want_receipt: bool = False) -> Any:
        if self.account is None:
            raise ChainError("no signing account: this contract handle is read-only")
        started = time.perf_counter()
        lock = _SEND_LOCKS.setdefault((self.rpc_url, self.account.address), asyncio.Lock())
        try:
            async with lock:
                nonce = await self.w3.eth.get_transaction_count(self.account.address, "pending")
                # build_transaction estimates gas, which runs the call: a revert shows
                # here, before anything is signed or sent.
                tx = await fn.build_transaction(
                    {"from": self.account.address, "nonce": nonce, "chainId": self.chain_id}
                )
                signed = self.account.sign_transaction(tx)
                tx_hash = await self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = await self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.tx_timeout, poll_latency=self.poll_interval
            )
            if receipt["status"] != 1:
                raise ChainRevert(f"{method} reverted in block {receipt['blockNumber']}", reason="")
            await self._await_confirmations(receipt["blockNumber"])
        except ChainError as exc:
            _observe_failure(method, exc.code, started)
            raise
        except Exception as exc:
            error = self._as_chain_error(exc, method)
            _observe_failure(method, error.code, started)
            raise error from exc
        metrics.CHAIN_TX_SECONDS.labels("ok").observe(time.perf_counter() - started)
        if want_receipt:
            return receipt
        return TxResult(
            hex32(receipt["transactionHash"]), receipt["blockNumber"], receipt["gasUsed"]
        )

    async def _await_confirmations(self, block: int) -> None:
        deadline = time.monotonic() + self.tx_timeout
        while self.confirmations and await self.w3.eth.block_number < block + self.confirmations:
            if time.monotonic() > deadline:
                raise ChainError(
                    f"block {block} did not get {self.confirmations} confirmations "
                    f"within {self.tx_timeout:.0f} s"
                )
            await asyncio.sleep(self.poll_interval)

    def _as_chain_error(self, exc: Exception, method: str) -> ChainError:
        data = _revert_data(exc)
        if data is None:
            return ChainError(f"{method} failed on {self.rpc_url}: {type(exc).__name__}: {exc}")
        known = self._errors.get(data[:4].hex())
        if known is None:
            name = data.hex() or "revert"
            return ChainRevert(f"contract refused {method}: {name}", reason=name)
        name, types = known
        args = self._decode_error_args(types, data[4:])
        explained = _explain_revert(name, args, method)
        message = f"contract refused {method}: {name}" + (f": {explained}" if explained else "")
        return ChainRevert(message, reason=name, error_args=args)

    def _decode_error_args(self, types: list[str], data: bytes) -> tuple[Any, ...]:
        try:
            values = self.w3.codec.decode(types, data)
        except Exception:  # malformed revert data: the name alone still says what failed
            return ()
        return tuple(
            self.w3.to_checksum_address(v) if t == "address" else v
            for t, v in zip(types, values, strict=True)
        )

    def _checksum(self, address: str) -> str:
        try:
            return self.w3.to_checksum_address(address)
        except (TypeError, ValueError):
            raise ChainError(f"not an Ethereum address: {address!r}") from None

    async def mine(self, blocks: int = 1) -> None:
        """Mine empty blocks (anvil and the in-process chain only): for confirmations."""
        await mine(self.w3, blocks)


async def mine(w3: Any, blocks: int = 1) -> None:
    """Mine ``blocks`` empty blocks on a development chain (anvil or in-process)."""
    provider = w3.provider
    tester = getattr(provider, "ethereum_tester", None)
    if tester is not None:
        tester.mine_blocks(blocks)
        return
    await provider.make_request("anvil_mine", [hex(blocks)])


async def fund_dev_account(w3: Any, address: str, wei: int = 10**21) -> None:
    """Give ``address`` ether from the in-process chain's pre-funded account."""
    if await w3.eth.get_balance(address) >= wei // 10:
        return
    rich = (await w3.eth.accounts)[0]
    tx = await w3.eth.send_transaction({"from": rich, "to": address, "value": wei})
    await w3.eth.wait_for_transaction_receipt(tx)


def _observe_failure(method: str, code: str, started: float) -> None:
    metrics.CHAIN_TX_SECONDS.labels("error").observe(time.perf_counter() - started)
    metrics.CHAIN_TX_FAILURES.labels(method, code).inc()


async def _chain_id(w3: Any, rpc_url: str) -> int:
    try:
        return int(await w3.eth.chain_id)
    except Exception as exc:
        raise ChainError(f"cannot reach the chain at {rpc_url}: {exc}") from exc


def _error_selectors(abi: list[dict]) -> dict[str, tuple[str, list[str]]]:
    """Selector (4 bytes, hex) → the custom error's name and argument types."""
    from eth_utils import keccak

    out = {}
    for item in abi:
        if item.get("type") == "error":
            types = [i["type"] for i in item["inputs"]]
            signature = f"{item['name']}({','.join(types)})"
            out[keccak(text=signature)[:4].hex()] = (item["name"], types)
    return out


def _explain_revert(name: str, args: tuple[Any, ...], method: str) -> str:
    """What a custom error means for the person who sent ``method`` ("": its name says it).

    OpenZeppelin's Ownable errors are generic: ``OwnableUnauthorizedAccount`` is both
    "not the owner" and, from ``acceptOwnership``, "not the pending owner".
    """
    who = args[0] if args else "the signing account"
    if name == "OwnableUnauthorizedAccount":
        if method == "accept_ownership":
            return (
                f"{who} is not the pending owner; only the account the owner named with "
                "transferOwnership can accept (see pending_owner in `qbus chain status`)"
            )
        return f"{who} is not the contract's owner; {method} needs the owner's key"
    if name == "OwnableInvalidOwner":
        return f"{who} cannot own the contract"
    if name == "NotVerifier":
        return f"{who} does not have the verifier role"
    if name == "RenounceDisabled":
        return "ownership cannot be renounced: nobody could manage the verifier role after"
    return ""


def _revert_data(exc: BaseException) -> bytes | None:
    """The revert data of a failed call, from web3's or eth-tester's exception."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, bytes):
        return data
    text = str(exc.args[0]) if exc.args else ""
    if "execution reverted" in text:
        rest = text.split("execution reverted", 1)[1].lstrip(": ")
        if rest.startswith(("b'", 'b"')):
            try:
                return ast.literal_eval(rest)
            except (ValueError, SyntaxError):
                return b""
        if rest.startswith("0x"):
            return bytes.fromhex(rest[2:].split()[0].rstrip(",'\""))
        return b""
    return None


async def read_batch(chain: ChainConfig, contract: str, batch_id: int) -> AnchoredBatch | None:
    """Batch ``batch_id`` of the contract at ``contract``: what the audit checks proofs
    against (read-only; no key needed).

    Raises:
        ChainError: The chain cannot be reached or holds no such contract.
    """
    handle = await AnchorContract.connect(chain, contract)
    return await handle.batch(batch_id)


async def open_contract(config: Any, kv: Any = None, account: Any = None) -> AnchorContract:
    """The anchor contract the configuration names, signing as the verifier.

    ``[chain] contract`` when set; otherwise the one this bus deployed before (KV key
    ``contract.<chain id>`` in ``kv``, when the chain still holds its code); otherwise a
    new deployment, recorded there for the bus's other processes.

    Args:
        config: The qbus ``Config``.
        kv: The chain KV bucket (None: no sharing, always deploy when not configured).
        account: Signing account (default: the verifier key from the secrets provider).
    """
    chain: ChainConfig = config.chain
    account = account if account is not None else verifier_account(config)
    if chain.rpc_url.startswith("eth-tester://"):
        await fund_dev_account(make_web3(chain.rpc_url), account.address)
    if chain.contract:
        return await AnchorContract.connect(chain, chain.contract, account)
    w3 = make_web3(chain.rpc_url)
    key = f"contract.{await _chain_id(w3, chain.rpc_url)}"
    if kv is not None:
        address = await _kv_text(kv, key)
        if address and await w3.eth.get_code(w3.to_checksum_address(address)):
            return await AnchorContract.connect(chain, address, account)
    address = await AnchorContract.deploy(chain, account)
    if kv is not None:
        await kv.put(key, address.encode())
    return await AnchorContract.connect(chain, address, account)


async def _kv_text(kv: Any, key: str) -> str | None:
    value = await read_value(kv, key)
    return value.decode() if value else None
