"""``qbus audit replay``: re-execute a job from its logged request and compare, bit for bit.

The replay reads the job's events from the log, takes the ExecutionRequested that the
recorded result answers (its IR, options, seed, parameters, noise … exactly as the
executor saw them) and runs it through the executor's own handler (the caller passes
``ExecuteHandler``: the audit sits below the stages and takes the stage's code as an
argument instead of importing it), in this process and without a sandbox (the sandbox changes where
engine code runs, never what it returns). The new ExecutionCompleted is compared with
the recorded one field by field and through the result hash:

* same engine version: every hashed field must be identical (counts, the state
  vector's bytes, expectation values, seed …), and the replayed result's hash must be
  the hash the job published. Anything else is a ``mismatch``;
* another engine version: a warning says so; identical results still ``match``,
  otherwise the two results are compared statistically (the cross-engine test) and
  the status is ``version_changed`` with that verdict.

A cached job (``cached_from``) never ran an engine: its original job's execution is
replayed, and the cached result must be that execution's result field for field. A
chunked job replays every chunk on the engine that recorded it (the chunk the ledger
accepted: ``winning_chunks``), joins the replayed chunks with the assembler's own
``join_chunks`` (qbus/verifier/chunks.py) and compares the joined result with the published one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import msgspec

from qbus.bus.blobs import BlobStore, ObjectStoreBlobs, deinterleave
from qbus.bus.config import Config, Limits
from qbus.bus.connection import Bus
from qbus.bus.job_log import events_of
from qbus.engines.base import Engine
from qbus.errors import QbusError
from qbus.frontends.bounds import decode_event
from qbus.schemas.events import (
    Event,
    ExecutionCompleted,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
)
from qbus.verifier.audit_checks import describe_difference, result_fields, winning_chunks
from qbus.verifier.chunks import chunk_result, join_chunks
from qbus.verifier.crosscheck import Agreement, compare_counts, compare_statevectors
from qbus.verifier.hashing import HASH_VERSION, HASH_VERSIONS, event_result_hash


class Executor(Protocol):
    """What the replay needs of the execute stage's handler (``ExecuteHandler``)."""

    engine: Engine
    blobs: BlobStore

    async def handle(self, event: Event) -> Sequence[Event]: ...

    def close(self) -> None: ...


ExecutorFactory = Callable[[str, BlobStore, Limits], Executor]
"""Makes the executor of one engine: ``ExecuteHandler(engine, blobs, limits)``."""


class ReplayReport(msgspec.Struct, kw_only=True):
    """What ``qbus audit replay JOB`` found.

    Attributes:
        job_id: The job.
        status: ``match``, ``mismatch``, ``version_changed`` (another engine version; see
            ``agreement``) or ``not_replayable`` (see ``detail``).
        ok: ``match``, or ``version_changed`` with statistically agreeing results.
        engine: The engine that ran the job (and the replay).
        recorded_version: Its version when the job ran.
        replay_version: Its version now.
        request_seq: Stream sequence of the ExecutionRequested replayed.
        recorded_seq: Stream sequence of the recorded ExecutionCompleted.
        final_seq: Stream sequence of the job's final event.
        published_hash: The result hash the job published (JobCompleted).
        recorded_hash: The hash re-derived from the recorded ExecutionCompleted.
        replay_hash: The hash of the replayed result.
        differences: Each field that differs (recorded vs replayed).
        agreement: For ``version_changed``: the statistical comparison.
        warnings: Things a person should know (engine version changed …).
        detail: A one-line summary.
        cached_from: For a cached job: the job whose run was replayed.
        chunks: For a chunked job: how many chunks were replayed.
    """

    job_id: str
    status: str
    ok: bool = False
    engine: str = ""
    recorded_version: str = ""
    replay_version: str = ""
    request_seq: int | None = None
    recorded_seq: int | None = None
    final_seq: int | None = None
    published_hash: str | None = None
    recorded_hash: str | None = None
    replay_hash: str | None = None
    differences: list[str] = []
    agreement: str | None = None
    warnings: list[str] = []
    detail: str = ""
    cached_from: str | None = None
    chunks: int = 0


class _MemoryBlobs:
    """A BlobStore in memory whose refs look like the object store's, for comparison."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.data: dict[str, bytes] = {}

    async def put(self, name: str, data: bytes) -> str:
        ref = f"obj://{self.bucket}/{name}"
        self.data[ref] = data
        return ref

    async def get(self, ref: str) -> bytes:
        return self.data[ref]


async def replay_job(
    bus: Bus, job_id: str, config: Config | None = None, *, executor: ExecutorFactory
) -> ReplayReport:
    """Re-execute ``job_id`` from the log and compare with its recorded result.

    Args:
        bus: Connected bus holding the job's events.
        job_id: The job.
        config: Settings (the inline state-vector limit must be the one the job ran
            with for an identical result representation); default ``Config()``.
        executor: Makes the execute stage's handler for an engine (``ExecuteHandler``).
    """
    config = config or Config()
    seen: list[tuple[int, Event]] = [
        (seq, event) async for seq, _, event in events_of(bus, job_id, timeout=1.0)
    ]
    if not seen:
        return ReplayReport(job_id=job_id, status="not_replayable", detail="no such job in the log")
    by_id = {event.event_id: (seq, event) for seq, event in seen}
    final = next(
        ((s, e) for s, e in reversed(seen) if isinstance(e, (JobCompleted, JobFailed))), None
    )
    # Every hash is compared at the version the job published (a log may hold both).
    version = final[1].hash_version if final and isinstance(final[1], JobCompleted) else None
    if version is not None and version not in HASH_VERSIONS:
        return ReplayReport(
            job_id=job_id,
            status="not_replayable",
            final_seq=final[0] if final else None,
            published_hash=final[1].result_hash if final else None,
            detail=f"its result hash is of version {version}, which this qbus cannot recompute",
        )
    version = version or HASH_VERSION
    if final is not None and isinstance(final[1], JobCompleted) and final[1].cached:
        return await _replay_cached(bus, job_id, (final[0], final[1]), config, executor)
    if final is not None and isinstance(final[1], JobCompleted) and final[1].chunk_engines:
        return await _replay_chunked(bus, job_id, seen, (final[0], final[1]), config, executor)
    recorded = by_id.get(final[1].causation_id or "") if final else None
    if recorded is None or not isinstance(recorded[1], ExecutionCompleted):
        recorded = next(
            ((s, e) for s, e in reversed(seen) if isinstance(e, ExecutionCompleted)), None
        )
    if recorded is None:
        return ReplayReport(
            job_id=job_id,
            status="not_replayable",
            final_seq=final[0] if final else None,
            detail="the log holds no ExecutionCompleted for this job: it never ran an engine",
        )
    rec_seq, rec = recorded
    assert isinstance(rec, ExecutionCompleted)
    report = ReplayReport(
        job_id=job_id,
        status="mismatch",
        engine=rec.engine,
        recorded_version=rec.engine_version,
        recorded_seq=rec_seq,
        final_seq=final[0] if final else None,
        recorded_hash=event_result_hash(rec, version),
    )
    if final is not None and isinstance(final[1], JobCompleted):
        report.published_hash = final[1].result_hash
    report.request_seq, request = _request_for(rec, by_id, report.warnings)
    try:
        handler = executor(request.engine, _MemoryBlobs(bus.config.object_store), config.limits)
    except (ImportError, QbusError) as exc:
        report.status = "not_replayable"
        report.detail = f"engine {request.engine} cannot be loaded here: {exc}"
        return report
    try:
        out = await _run_inline(handler, request)
    finally:
        handler.close()
    report.replay_version = handler.engine.version
    replayed = out[0] if out else None
    if not isinstance(replayed, ExecutionCompleted):
        code = getattr(replayed, "code", "no_result")
        report.detail = f"the replay did not produce a result: [{code}] " + getattr(
            replayed, "message", ""
        )
        return report
    # The recorded seed is what the engine reported; restore the recorded options so
    # the inline override is not counted as a difference.
    replayed = msgspec.structs.replace(replayed, options=rec.options)
    report.replay_hash = event_result_hash(replayed, version)
    report.differences = await _differences(bus, handler.blobs, rec, replayed)
    same_version = report.replay_version == report.recorded_version
    if not same_version:
        report.warnings.append(
            f"engine version changed: {rec.engine} {report.recorded_version} ran the job, "
            f"{report.replay_version} replayed it; a bit-for-bit match is not promised"
        )
    published_ok = report.published_hash in (None, report.recorded_hash)
    if not published_ok:
        report.differences.append(
            f"published result hash ({(report.published_hash or '')[:23]}… vs the "
            f"recorded result's {(report.recorded_hash or '')[:23]}…)"
        )
    if not report.differences and (not same_version or report.replay_hash == report.recorded_hash):
        report.status, report.ok = "match", True
        report.detail = (
            f"replayed on {rec.engine} {report.replay_version}: identical result, "
            f"hash {report.replay_hash[:23]}…"
        )
        return report
    if same_version or not published_ok:
        report.status = "mismatch"
        report.detail = (
            f"replayed on {rec.engine} {report.replay_version} (the recorded version): "
            f"{len(report.differences)} difference(s): " + "; ".join(report.differences)
        )
        return report
    agreement = _agreement(rec, replayed)
    report.status, report.ok = "version_changed", agreement.verdict != "fail"
    report.agreement = agreement.detail
    report.detail = (
        f"replayed on {rec.engine} {report.replay_version} (recorded "
        f"{report.recorded_version}): results differ bit for bit; statistically "
        f"{agreement.verdict}: {agreement.detail}"
    )
    return report


def _request_for(
    rec: ExecutionCompleted, by_id: dict[str, tuple[int, Event]], warnings: list[str]
) -> tuple[int | None, ExecutionRequested]:
    """The logged request a result answers, or one rebuilt from the result itself."""
    request_at = by_id.get(rec.causation_id or "")
    if request_at is not None and isinstance(request_at[1], ExecutionRequested):
        return request_at[0], request_at[1]
    warnings.append(
        f"the ExecutionRequested of {rec.event_id} is not in the log; replaying the IR and "
        "options the ExecutionCompleted carries"
    )
    return None, ExecutionRequested(
        event_id=rec.causation_id or rec.event_id,
        job_id=rec.job_id,
        engine=rec.engine,
        circuit=rec.circuit,
        circuit_hash=rec.circuit_hash,
        options=rec.options,
        generation=rec.generation,
        chunk=rec.chunk,
        chunks=rec.chunks,
        point_start=rec.point_start,
        point_stop=rec.point_stop,
        shot_start=rec.shot_start,
        shot_stop=rec.shot_stop,
    )


async def _run_inline(handler: Executor, request: ExecutionRequested) -> list[Event]:
    # Inline: the sandbox decides where engine code runs, never what it returns.
    inline = msgspec.structs.replace(
        request, options=msgspec.structs.replace(request.options, hypervisor="inline")
    )
    return list(await handler.handle(inline))


async def _replay_cached(
    bus: Bus,
    job_id: str,
    final: tuple[int, JobCompleted],
    config: Config,
    executor: ExecutorFactory,
) -> ReplayReport:
    """Replay the run a cached result came from; the cached result must be that run's."""
    final_seq, cached = final
    origin_id = cached.cached_from or ""
    if not origin_id or origin_id == job_id:
        return ReplayReport(
            job_id=job_id,
            status="not_replayable",
            final_seq=final_seq,
            published_hash=cached.result_hash,
            cached_from=origin_id or None,
            detail="a cached result that names no other job it was cached from",
        )
    report = await replay_job(bus, origin_id, config, executor=executor)
    report.job_id, report.cached_from, report.final_seq = job_id, origin_id, final_seq
    original_hash, report.published_hash = report.published_hash, cached.result_hash
    if report.recorded_seq is None:
        report.status, report.ok = "not_replayable", False
        report.detail = f"cached from job {origin_id}, which cannot be replayed: {report.detail}"
        return report
    msg = await bus.js.get_msg(bus.config.stream, report.recorded_seq)
    rec = decode_event(msg.data)
    assert isinstance(rec, ExecutionCompleted)
    mine, theirs = result_fields(cached), result_fields(rec)
    diffs = [
        "cached " + describe_difference(name, mine[name], theirs[name])
        for name in mine
        if mine[name] != theirs[name]
    ]
    own = event_result_hash(cached)
    if own != cached.result_hash:
        diffs.append(
            f"cached result hash ({cached.result_hash[:23]}… is not the hash of the cached "
            f"fields, {own[:23]}…)"
        )
    elif cached.result_hash != report.recorded_hash:
        diffs.append(
            f"cached result hash ({cached.result_hash[:23]}… vs job {origin_id}'s recorded "
            f"{(report.recorded_hash or '')[:23]}…)"
        )
    if original_hash not in (None, cached.result_hash) and not diffs:
        diffs.append(f"cached result hash (vs job {origin_id}'s published {original_hash[:23]}…)")
    if diffs:
        report.differences.extend(diffs)
        report.status, report.ok = "mismatch", False
        report.detail = (
            f"cached from job {origin_id}: the cached result is not that job's result: "
            + "; ".join(report.differences)
        )
        return report
    report.detail = f"cached from job {origin_id}, whose run was replayed: {report.detail}"
    return report


async def _replay_chunked(
    bus: Bus,
    job_id: str,
    seen: list[tuple[int, Event]],
    final: tuple[int, JobCompleted],
    config: Config,
    executor: ExecutorFactory,
) -> ReplayReport:
    """Replay every accepted chunk on its recorded engine; compare chunks and the join."""
    final_seq, published = final
    by_id = {event.event_id: (seq, event) for seq, event in seen}
    results = [(s, e) for s, e in seen if isinstance(e, ExecutionCompleted) and e.chunk is not None]
    report = ReplayReport(
        job_id=job_id,
        status="not_replayable",
        engine=published.engine,
        recorded_version=published.engine_version,
        final_seq=final_seq,
        published_hash=published.result_hash,
    )
    last_at = by_id.get(published.causation_id or "")
    last = last_at[1] if last_at is not None else None
    if not isinstance(last, ExecutionCompleted) or last.chunks is None:
        report.detail = "the chunk result the assembled result answers is not in the log"
        return report
    winners = winning_chunks(results)
    missing = [k for k in range(last.chunks) if k not in winners]
    if missing:
        report.detail = "the log holds no result for chunk(s) " + ", ".join(map(str, missing))
        return report
    report.chunks, report.recorded_seq = last.chunks, last_at[0] if last_at else None
    generation = max(e.generation for _, e in results)
    recorded = [winners[k][1] for k in range(last.chunks)]
    report.recorded_hash = event_result_hash(
        join_chunks(last, [chunk_result(r) for r in recorded], generation), published.hash_version
    )
    handlers: dict[str, Executor] = {}
    parts = []
    changed = False
    try:
        for k, rec in enumerate(recorded):
            rec_seq = winners[k][0]
            request_seq, request = _request_for(rec, by_id, report.warnings)
            if report.request_seq is None:
                report.request_seq = request_seq
            handler = handlers.get(rec.engine)
            if handler is None:
                try:
                    handler = handlers[rec.engine] = executor(
                        rec.engine, _MemoryBlobs(bus.config.object_store), config.limits
                    )
                except (ImportError, QbusError) as exc:
                    report.detail = f"engine {rec.engine} cannot be loaded here: {exc}"
                    return report
            out = await _run_inline(handler, request)
            replayed = out[0] if out else None
            if not isinstance(replayed, ExecutionCompleted):
                code = getattr(replayed, "code", "no_result")
                report.status = "mismatch"
                report.detail = (
                    f"the replay of chunk {k} (sequence {rec_seq}) did not produce a result: "
                    f"[{code}] " + getattr(replayed, "message", "")
                )
                return report
            replayed = msgspec.structs.replace(replayed, options=rec.options)
            if handler.engine.version != rec.engine_version:
                changed = True
                report.warnings.append(
                    f"chunk {k}: engine version changed: {rec.engine} {rec.engine_version} "
                    f"ran it, {handler.engine.version} replayed it"
                )
            report.differences.extend(
                f"chunk {k} (sequence {rec_seq}): {d}"
                for d in await _differences(bus, handler.blobs, rec, replayed)
            )
            parts.append(chunk_result(replayed))
    finally:
        for handler in handlers.values():
            handler.close()
    whole = join_chunks(last, parts, generation)
    report.replay_version = whole.engine_version
    report.replay_hash = event_result_hash(whole, published.hash_version)
    if published.result_hash != report.recorded_hash:
        report.differences.append(
            f"published result hash ({published.result_hash[:23]}… vs the joined recorded "
            f"chunks' {(report.recorded_hash or '')[:23]}…)"
        )
    where = f"{last.chunks} chunks replayed on {whole.engine} {whole.engine_version}"
    if not report.differences and (changed or report.replay_hash == report.recorded_hash):
        report.status, report.ok = "match", True
        report.detail = f"{where}: identical results, joined hash {report.replay_hash[:23]}…"
        return report
    report.status = "version_changed" if changed else "mismatch"
    report.detail = f"{where}: {len(report.differences)} difference(s): " + "; ".join(
        report.differences
    )
    return report


async def _differences(
    bus: Bus, blobs: _MemoryBlobs, recorded: ExecutionCompleted, replayed: ExecutionCompleted
) -> list[str]:
    """Each hashed field that differs, recorded vs replayed (engine version aside)."""
    mine, theirs = result_fields(recorded), result_fields(replayed)
    diffs = [
        describe_difference(name, mine[name], theirs[name])
        for name in mine
        if name != "engine_version" and mine[name] != theirs[name]
    ]
    ref = recorded.statevector_ref
    if ref and ref == replayed.statevector_ref and ref in blobs.data:
        try:
            stored = await ObjectStoreBlobs(bus).get(ref)
        except Exception as exc:
            diffs.append(f"statevector_ref (the stored vector cannot be read: {exc})")
        else:
            if stored != blobs.data[ref]:
                diffs.append("statevector bytes in the object store (recorded vs replayed)")
    return diffs


def _agreement(recorded: ExecutionCompleted, replayed: ExecutionCompleted) -> Agreement:
    if recorded.counts is not None and replayed.counts is not None:
        return compare_counts(recorded.counts, replayed.counts)
    if recorded.statevector is not None and replayed.statevector is not None:
        return compare_statevectors(
            deinterleave(recorded.statevector), deinterleave(replayed.statevector)
        )
    return Agreement("fail", "the results differ and cannot be compared statistically")
