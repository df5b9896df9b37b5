"""Anchor: batch verified results into Merkle trees and anchor each root on chain.

Reads ``qbus.result.*`` (JobCompleted; JobFailed/JobRejected have nothing to anchor and
are acked); writes ``qbus.anchored.<job>``: one ResultAnchored per job with its proof,
leaf index, transaction, block, chain id and contract. A job that came from a chain
``RunRequested`` (its id is ``request_job_id(…)``) is also fulfilled on chain, once.

A batch closes at ``[chain] batch_size`` results or ``batch_window`` seconds after its
first, and costs one ``anchor`` transaction. Nothing is acked until the transaction is
mined and every ResultAnchored is stored, so a crash means redelivery:

* the batch (root and ordered members) is written to the chain KV bucket before its
  transaction is sent; a restarted stage reloads such pending batches, finds the root on
  chain (the contract anchors a root once and maps it to its batch) or sends it again,
  and answers the redelivered results from the same tree: their proofs do not change;
* ResultAnchored ids are derived from the JobCompleted id, so republished copies are
  dropped by the server;
* held results are kept from redelivery with in-progress acks while they wait.

The verifier key is read through a ``CachedSecret`` before each anchor and each fulfil
transaction: a key rotated in the secrets store is used for the next batch (within the
secret's ttl plus the provider's cache), without a restart. While the store cannot give
the key the stage logs which secret and which store, keeps its batch (the same path as a
chain outage) and retries with backoff; started with the store down it waits the same way.

This is not a ``StageRunner`` stage: its unit of work is a batch of inputs settled by one
transaction, so it settles them itself, with the same rule (ack only after the outputs
are stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, NoKeysError

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.bus.kv import read_value
from qbus.bus.pull import PullConsumer
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.observability import metrics, tracing
from qbus.schemas.events import JobCompleted, ResultAnchored, answer
from qbus.secrets import provider_from_config
from qbus.secrets.base import SecretError
from qbus.secrets.cached import CachedSecret
from qbus.verifier.chain import (
    AnchorContract,
    AnchoredBatch,
    ChainError,
    ChainRevert,
    account_from_key,
    hex32,
    open_contract,
    parse_request_job_id,
)
from qbus.verifier.merkle import MerkleTree, build_tree, digest_bytes, leaf_hash

log = logging.getLogger("qbus.anchor")

PENDING_PREFIX = "pending."
PRODUCER = "qbus.anchor"


class Member(msgspec.Struct, frozen=True, array_like=True):
    """One result of a batch: the JobCompleted it answers and its result hash."""

    event_id: str
    job_id: str
    result_hash: str


class PendingBatch(msgspec.Struct, frozen=True, kw_only=True):
    """A batch whose root is (about to be) anchored: what a restart needs to finish it."""

    root: str
    created: float
    members: list[Member]


_pending_decoder = msgspec.json.Decoder(PendingBatch)


def plan_batch(results: list[JobCompleted]) -> tuple[PendingBatch, MerkleTree]:
    """The batch of ``results`` in their order, and its tree."""
    tree = build_tree([leaf_hash(r.result_hash) for r in results])
    members = [Member(r.event_id, r.job_id, r.result_hash) for r in results]
    return PendingBatch(root=hex32(tree.root), created=time.time(), members=members), tree


def anchored_events(
    batch: PendingBatch, tree: MerkleTree, anchored: AnchoredBatch, contract: AnchorContract
) -> list[ResultAnchored]:
    """One ResultAnchored per member, its id derived from the member's JobCompleted."""
    return [
        answer(
            m,
            ResultAnchored,
            PRODUCER,
            result_hash=m.result_hash,
            batch_id=anchored.batch_id,
            root=batch.root,
            proof=[hex32(p) for p in tree.proof(i)],
            leaf_index=i,
            batch_size=len(batch.members),
            tx_hash=anchored.tx_hash or "",
            block_number=anchored.block_number,
            chain_id=contract.chain_id,
            contract=contract.address,
        )
        for i, m in enumerate(batch.members)
    ]


@dataclass
class _Open:
    """A batch this process is finishing."""

    batch: PendingBatch
    tree: MerkleTree
    anchored: AnchoredBatch | None = None
    done: set[str] = field(default_factory=set)


class AnchorStage:
    """Anchors final results in Merkle batches (see the module docstring).

    Args:
        bus: Connected, provisioned bus.
        config: Settings (``[chain]``, secrets for the verifier key).
        contract: The contract to use, signing as its fixed account (default:
            ``open_contract(config, …)`` at start, signing with the verifier key read from
            the secrets store before each transaction, so a rotated key is picked up).
        durable: Durable consumer name.

    Attributes:
        verifier_key: The verifier key as the stage reads it (None with a given contract).
    """

    stage = "anchor"

    def __init__(
        self,
        bus: Bus,
        config: Config,
        *,
        contract: AnchorContract | None = None,
        durable: str = "anchor",
    ) -> None:
        self.bus = bus
        self.config = config
        self.chain = config.chain
        self.contract = contract
        self.durable = durable
        self._stopping = asyncio.Event()
        self._kv: Any = None
        self._consumer: PullConsumer | None = None
        self._held: list[tuple[Msg, JobCompleted]] = []
        self._first_at = 0.0
        self._unsettled: dict[str, Msg] = {}  # event id → latest delivery
        self._backlog: list[Msg] = []  # arrived while the chain was being retried
        self._open: dict[str, _Open] = {}  # root → batch being finished
        self._member_of: dict[str, str] = {}  # JobCompleted id → root
        self.anchored_batches = 0
        self.verifier_key: CachedSecret | None = None
        self._key_digest = b""  # of the key self.contract signs with; never the key

    def stop(self) -> None:
        """Finish the current batch, then return from ``run``."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume and anchor until ``stop()``."""
        await self.bus.ensure_consumer(self.durable, [self.bus.subjects.result()])
        self._kv = await self.bus.js.key_value(self.bus.config.kv_chain)
        if self.contract is None:
            if self.chain.rpc_url.startswith("eth-tester://"):
                log.warning(
                    "anchoring on the in-process chain %s: its roots live only in this "
                    "process; set [chain] rpc_url to a node to keep them (docs/chain.md)",
                    self.chain.rpc_url,
                )
            self.verifier_key = CachedSecret(
                provider_from_config(self.config),
                self.chain.key_secret,
                ttl=self.config.secrets.cache_seconds,
            )
            account = await self._first_account()
            if account is None:
                return  # stopped before the secrets store ever answered
            self.contract = await open_contract(self.config, self._kv, account=account)
        log.info(
            "anchor stage on chain %d, contract %s", self.contract.chain_id, self.contract.address
        )
        await self._recover()
        batch = max(self.chain.batch_size, 16)
        self._consumer = await PullConsumer(self.bus, self.durable, batch=batch).start()
        keepalive = asyncio.create_task(self._keepalive())
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                wait = 0.5
                if self._held:
                    wait = min(
                        wait, max(0.01, self._first_at + self.chain.batch_window - loop.time())
                    )
                if self._backlog:
                    msgs, self._backlog = self._backlog, []
                else:
                    msgs = await self._consumer.next_batch(timeout=wait)
                for msg in msgs:
                    await self._take(msg)
                while self._held and (
                    len(self._held) >= self.chain.batch_size
                    or loop.time() - self._first_at >= self.chain.batch_window
                ):
                    items = self._held[: self.chain.batch_size]
                    del self._held[: len(items)]
                    self._first_at = loop.time()
                    await self._anchor(items)
                    if self._stopping.is_set():
                        break
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            for msg in self._backlog:  # never looked at: another copy may take them now
                with contextlib.suppress(Exception):
                    await msg.nak()
            await self._consumer.stop()

    # -- intake ---------------------------------------------------------------------

    async def _take(self, msg: Msg) -> None:
        try:
            event = decode_event(msg.data)
        except UNDECODABLE as exc:
            log.error("anchor: dropping unreadable %s: %s", msg.subject, exc)
            await msg.term()
            return
        metrics.EVENTS_IN.labels(self.stage, _tag(event)).inc()
        if not isinstance(event, JobCompleted):
            await msg.ack()  # a failed or rejected job has no result to anchor
            return
        trust = self.bus.trust
        forged = trust and trust.problem(event, msg.subject, msg.data, msg.headers)
        if forged:
            # Anchoring a forged result would put it on chain beside the real ones.
            log.warning("anchor: not anchoring %s of job %s: %s", _tag(event), event.job_id, forged)
            await msg.ack()
            return
        try:
            digest_bytes(event.result_hash)
        except ValueError:
            # Not a qbus result hash (a foreign producer's event): it cannot be a leaf.
            log.error("anchor: job %s has no sha256 result hash; not anchored", event.job_id)
            metrics.HANDLER_ERRORS.labels(self.stage).inc()
            await msg.term()
            return
        if event.event_id in self._unsettled:
            # A redelivery of a result we already hold: settle through the newest copy.
            self._unsettled[event.event_id] = msg
            return
        root = self._member_of.get(event.event_id)
        if root is not None:
            self._unsettled[event.event_id] = msg
            await self._finish_recovered(self._open[root], event.event_id)
            return
        if not self._held:
            self._first_at = asyncio.get_running_loop().time()
        self._held.append((msg, event))
        self._unsettled[event.event_id] = msg

    async def _keepalive(self) -> None:
        # Results wait for their batch (and a slow chain) far longer than ack_wait.
        interval = max(self.bus.config.ack_wait / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            for msg in [*self._unsettled.values(), *self._backlog]:
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    # -- batches --------------------------------------------------------------------

    async def _anchor(self, items: list[tuple[Msg, JobCompleted]]) -> None:
        # One span for the batch, linked to each job's trace; the chain transactions and
        # the ResultAnchored publishes inside are its children.
        with tracing.batch(
            "anchor", self.bus.subjects.result("*"), [msg.headers for msg, _ in items]
        ):
            await self._anchor_batch(items)

    async def _anchor_batch(self, items: list[tuple[Msg, JobCompleted]]) -> None:
        batch, tree = plan_batch([event for _, event in items])
        # Written before the transaction: a restart finds the root and answers from it.
        await self._kv.put(PENDING_PREFIX + batch.root, msgspec.json.encode(batch))
        entry = self._register(batch, tree)
        if not await self._settle_chain(entry):
            return  # stopping: the inputs are redelivered and the pending batch finishes it
        metrics.ANCHOR_BATCH_SIZE.observe(len(batch.members))
        self.anchored_batches += 1
        await self._publish(entry, [m.event_id for m in batch.members])

    def _register(self, batch: PendingBatch, tree: MerkleTree) -> _Open:
        entry = self._open.get(batch.root)
        if entry is None:
            entry = self._open[batch.root] = _Open(batch, tree)
        for member in batch.members:
            self._member_of[member.event_id] = batch.root
        return entry

    async def _settle_chain(self, entry: _Open) -> bool:
        """Anchor the root (once) and fulfil the batch's chain requests; retry on chain
        and secrets-store errors until it works or the stage stops. False when stopped
        first."""
        delay = 0.5
        while entry.anchored is None:
            try:
                contract = await self._signer()
                anchored = await contract.anchor(entry.tree.root, len(entry.batch.members))
                await self._fulfil(entry.batch, anchored)
                entry.anchored = anchored
            except SecretError as exc:
                self._log_key_error(exc, delay, len(entry.batch.members))
                if await self._pause(delay):
                    return False
                delay = min(delay * 2, 30.0)
            except ChainError as exc:
                log.warning("anchor: chain error, retrying in %.1f s: %s", delay, exc)
                if await self._pause(delay):
                    return False
                delay = min(delay * 2, 30.0)
        return True

    # -- the verifier key -------------------------------------------------------------

    async def _first_account(self) -> Any:
        """The verifier account at start, waiting (with backoff) while the store is down.

        None when the stage is stopped first. Results wait in the stream meanwhile: the
        consumer is not pulling yet, so nothing is delivered and nothing can be lost.
        """
        assert self.verifier_key is not None
        delay = 0.5
        while True:
            try:
                key = await self.verifier_key.aget()
            except SecretError as exc:
                self._log_key_error(exc, delay, 0)
                if await self._pause(delay):
                    return None
                delay = min(delay * 2, 30.0)
                continue
            self._key_digest = hashlib.sha256(key.encode()).digest()
            return account_from_key(key)

    async def _signer(self) -> AnchorContract:
        """The contract signing with the current verifier key (re-read within its ttl).

        Raises:
            SecretError: The secrets store cannot give the key.
            ChainError: The key is not a valid private key.
        """
        assert self.contract is not None
        if self.verifier_key is None:
            return self.contract
        key = await self.verifier_key.aget()
        digest = hashlib.sha256(key.encode()).digest()
        if digest != self._key_digest:
            account = account_from_key(key)
            old = getattr(self.contract.account, "address", None)
            if account.address != old:
                log.info(
                    "anchor: verifier key changed: signing as %s (was %s)", account.address, old
                )
            self.contract = self.contract.as_account(account)
            self._key_digest = digest
        return self.contract

    def _log_key_error(self, exc: SecretError, delay: float, held: int) -> None:
        # exc's message names the secret and the store's address, never the value.
        assert self.verifier_key is not None
        log.error(
            "anchor: cannot read the verifier key %r from the %s secrets store, holding "
            "%d results, retrying in %.1f s: %s",
            self.verifier_key.key,
            self.verifier_key.provider.name,
            held,
            delay,
            exc,
        )

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (True when stopped meanwhile), taking in what arrives.

        Messages the pull consumer delivers meanwhile go to the backlog, where the
        keepalive covers them: during a long chain outage they would otherwise be
        redelivered until ``max_deliver`` gave up on them.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._stopping.is_set():
            left = deadline - loop.time()
            if left <= 0:
                return False
            if self._consumer is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=left)
                continue
            self._backlog += await self._consumer.next_batch(timeout=min(left, 0.5))
        return True

    async def _fulfil(self, batch: PendingBatch, anchored: AnchoredBatch) -> None:
        for member in batch.members:
            request_id = parse_request_job_id(
                member.job_id, self.contract.chain_id, self.contract.address
            )
            if request_id is None:
                continue
            contract = await self._signer()  # a rotated key signs this one already
            try:
                first = await contract.fulfill(request_id, member.result_hash, anchored.root)
            except ChainRevert as exc:
                # e.g. UnknownRequest: a job named like a request this contract never saw.
                log.warning("anchor: not fulfilling request %d: %s", request_id, exc)
                continue
            log.info(
                "anchor: request %d %s", request_id, "fulfilled" if first else "already fulfilled"
            )

    async def _publish(self, entry: _Open, event_ids: list[str]) -> None:
        assert entry.anchored is not None
        events = {
            e.causation_id: e
            for e in anchored_events(entry.batch, entry.tree, entry.anchored, self.contract)
        }
        sent = [(eid, await self.bus.publish_async(events[eid])) for eid in event_ids]
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        for (eid, _), result in zip(sent, results, strict=True):
            msg = self._unsettled.pop(eid, None)
            if isinstance(result, BaseException):
                log.warning("anchor: publishing ResultAnchored failed (%s); redelivery", result)
                if msg is not None:
                    await msg.nak(delay=1.0)
                continue
            if msg is not None:
                await msg.ack()
            entry.done.add(eid)
            metrics.EVENTS_OUT.labels(self.stage, "result.anchored").inc()
        if len(entry.done) == len(entry.batch.members):
            await self._forget(entry)

    async def _forget(self, entry: _Open) -> None:
        with contextlib.suppress(KeyNotFoundError):
            await self._kv.delete(PENDING_PREFIX + entry.batch.root)
        self._open.pop(entry.batch.root, None)
        for member in entry.batch.members:
            self._member_of.pop(member.event_id, None)

    # -- recovery -------------------------------------------------------------------

    async def _recover(self) -> None:
        """Reload batches a previous run wrote but did not finish, and anchor them."""
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            return
        horizon = time.time() - 2 * self.bus.config.duplicate_window
        for key in keys:
            if not key.startswith(PENDING_PREFIX):
                continue
            raw = await read_value(self._kv, key)
            if raw is None:
                continue
            batch = _pending_decoder.decode(raw)
            tree = build_tree([leaf_hash(m.result_hash) for m in batch.members])
            if hex32(tree.root) != batch.root:
                log.error("anchor: pending batch %s does not hash to its root; dropped", key)
                await self._kv.delete(key)
                continue
            entry = self._register(batch, tree)
            if batch.created < horizon:
                # Its results can no longer be redelivered: finish the chain side only.
                await self._settle_chain(entry)
                await self._forget(entry)
                continue
            log.info("anchor: finishing pending batch %s (%d results)", key, len(batch.members))
            if not await self._settle_chain(entry):
                return

    async def _finish_recovered(self, entry: _Open, event_id: str) -> None:
        if not await self._settle_chain(entry):
            return
        await self._publish(entry, [event_id])


def _tag(event: Any) -> str:
    return event.__struct_config__.tag
