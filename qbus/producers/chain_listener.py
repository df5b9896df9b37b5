"""Chain listener: turn the anchor contract's ``RunRequested`` logs into jobs.

Reads the chain (``RunRequested`` logs of ``[chain] contract``, ``confirmations`` blocks
deep); writes ``qbus.submit`` (JobSubmitted) and, for a request it cannot run, the job's
``qbus.result.<job>`` (JobRejected). The anchor stage fulfils the request on chain when
its job completes.

Nothing missed, nothing repeated:

* the next block to scan is a cursor in the chain KV bucket (``cursor.<chain>.<contract>``),
  moved only after every job of the scanned range is stored, so a restart rescans from
  the first block whose jobs may not all be on the bus;
* a rescanned request makes the same JobSubmitted (job id from chain id, contract and
  request id; event id derived from them), which the server's dedupe drops; after the
  dedupe window, ingest's one-ingested-event-per-job guard still runs it once.

A request that gives only a hash and a URI is fetched (http/https) only when
``[chain] fetch_uris`` is on; the text must hash (keccak256) to the requested hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.request
from typing import Any

from nats.js.errors import APIError

from qbus.bus.config import Config
from qbus.bus.connection import WRONG_LAST_SEQUENCE, Bus
from qbus.bus.kv import read_value
from qbus.observability import metrics
from qbus.schemas.events import (
    JobRejected,
    JobSubmitted,
    derived_event_id,
)
from qbus.verifier.chain import AnchorContract, RunRequest, hex32, request_job_id
from qbus.verifier.merkle import keccak256

log = logging.getLogger("qbus.chain_listener")

PRODUCER = "qbus.chain-listener"
MAX_BLOCK_RANGE = 2_000  # blocks per eth_getLogs call: public nodes cap the range
MAX_PROGRAM_BYTES = 1_000_000


def cursor_key(chain_id: int, contract: str) -> str:
    """The KV key of the listener's next block for a contract."""
    return f"cursor.{chain_id}.{contract.lower()}"


def _origin(chain_id: int, contract: str) -> str:
    return f"chain:{chain_id}:{contract.lower()}"


def job_for_request(request: RunRequest, chain_id: int, contract: str, source: str) -> JobSubmitted:
    """The JobSubmitted of a request, with ids derived from (chain, contract, request)."""
    job_id = request_job_id(chain_id, contract, request.request_id)
    return JobSubmitted(
        event_id=derived_event_id(
            _origin(chain_id, contract), "job.submitted", request.request_id, job_id=job_id
        ),
        job_id=job_id,
        producer=PRODUCER,
        source=source,
        format="auto",
        shots=request.shots,
        labels={
            "chain.request_id": str(request.request_id),
            "chain.chain_id": str(chain_id),
            "chain.contract": contract,
            "chain.requester": request.requester,
            "chain.qasm_hash": hex32(request.qasm_hash),
            "chain.tx": request.tx_hash,
        },
    )


def rejection_for_request(
    request: RunRequest, chain_id: int, contract: str, code: str, message: str
) -> JobRejected:
    """The JobRejected of a request that cannot become a job."""
    job_id = request_job_id(chain_id, contract, request.request_id)
    return JobRejected(
        event_id=derived_event_id(
            _origin(chain_id, contract), "job.rejected", request.request_id, job_id=job_id
        ),
        job_id=job_id,
        producer=PRODUCER,
        code=code,
        message=message,
        stage="chain-listener",
    )


class ChainListener:
    """Follows ``RunRequested`` logs and submits their jobs (see the module docstring).

    Args:
        bus: Connected, provisioned bus.
        config: Settings (``[chain]``).
        contract: The contract to follow (read-only is enough).
    """

    def __init__(self, bus: Bus, config: Config, contract: AnchorContract) -> None:
        self.bus = bus
        self.chain = config.chain
        self.contract = contract
        self._stopping = asyncio.Event()
        self._kv: Any = None
        self.submitted = 0

    def stop(self) -> None:
        """Return from ``run`` after the current poll."""
        self._stopping.set()

    async def run(self) -> None:
        """Poll until ``stop()``."""
        log.info(
            "listening for RunRequested on %s (chain %d), %d confirmations",
            self.contract.address,
            self.contract.chain_id,
            self.chain.confirmations,
        )
        while not self._stopping.is_set():
            try:
                while await self.poll_once():
                    pass  # more blocks waiting: catch up before sleeping
            except Exception:
                log.exception("chain listener: poll failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.chain.poll_interval)

    async def cursor(self) -> int:
        """The next block to scan (``start_block`` when nothing was scanned yet)."""
        key = cursor_key(self.contract.chain_id, self.contract.address)
        value = await read_value(await self._bucket(), key)
        return int(value.decode()) if value else self.chain.start_block

    async def poll_once(self) -> int:
        """Scan the confirmed blocks after the cursor (at most ``MAX_BLOCK_RANGE``);
        returns the number of blocks scanned (0: nothing new)."""
        head = await self.contract.w3.eth.block_number
        last = head - self.chain.confirmations
        first = await self.cursor()
        if last < first:
            return 0
        last = min(last, first + MAX_BLOCK_RANGE - 1)
        requests = await self.contract.run_requests(first, last)
        for request in requests:
            await self._submit(request)
        kv = await self._bucket()
        await kv.put(
            cursor_key(self.contract.chain_id, self.contract.address), str(last + 1).encode()
        )
        return last - first + 1

    async def _submit(self, request: RunRequest) -> None:
        chain_id, contract = self.contract.chain_id, self.contract.address
        source, problem = await self._program(request)
        if problem is not None:
            code, message = problem
            metrics.CHAIN_REQUESTS.labels(code).inc()
            event = rejection_for_request(request, chain_id, contract, code, message)
            try:
                await self.bus.publish(event)
            except APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                # The job already has its final event (a rescan): nothing to do.
            return
        await self.bus.publish(job_for_request(request, chain_id, contract, source or ""))
        metrics.CHAIN_REQUESTS.labels("submitted").inc()
        self.submitted += 1
        job_id = request_job_id(chain_id, contract, request.request_id)
        log.info("request %d → job %s", request.request_id, job_id)

    async def _program(self, request: RunRequest) -> tuple[str | None, tuple[str, str] | None]:
        """The request's program text, or (code, message) saying why there is none."""
        if request.qasm:
            return request.qasm, None
        if not self.chain.fetch_uris:
            return None, (
                "chain_uri_disabled",
                f"request {request.request_id} gives only a URI ({request.uri}); this bus "
                "does not fetch programs ([chain] fetch_uris = false)",
            )
        if not request.uri.startswith(("https://", "http://")):
            return None, (
                "chain_uri_unsupported",
                f"request {request.request_id}: only http(s) URIs are fetched, got {request.uri!r}",
            )
        try:
            data = await asyncio.to_thread(_fetch, request.uri)
        except Exception as exc:
            return None, (
                "chain_uri_unavailable",
                f"request {request.request_id}: cannot fetch {request.uri}: {exc}",
            )
        if keccak256(data) != request.qasm_hash:
            return None, (
                "chain_hash_mismatch",
                f"request {request.request_id}: the program at {request.uri} does not hash "
                f"(keccak256) to {hex32(request.qasm_hash)}",
            )
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            return None, ("chain_uri_unavailable", f"{request.uri} is not UTF-8 text")

    async def _bucket(self) -> Any:
        if self._kv is None:
            self._kv = await self.bus.js.key_value(self.bus.config.kv_chain)
        return self._kv


def _fetch(uri: str) -> bytes:
    with urllib.request.urlopen(uri, timeout=10) as response:  # http(s) only: checked above
        data = response.read(MAX_PROGRAM_BYTES + 1)
    if len(data) > MAX_PROGRAM_BYTES:
        raise ValueError(f"program is larger than {MAX_PROGRAM_BYTES} bytes")
    return data
