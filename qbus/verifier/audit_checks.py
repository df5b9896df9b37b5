"""The checks behind ``qbus audit verify``: one pass over the event log, no I/O.

``LogChecker`` is fed every stored message of the event log in stream order (sequence,
subject, ``Nats-Msg-Id``, payload) together with the audit chain's entries, and pins
every problem it finds to the exact event: stream sequence, subject, event id, type.

What it checks (docs/audit.md has the list with the codes):

* the hash chain: every event's digest matches its chain entry; no chain entry's
  event is missing from the log (a deletion); no event sits inside the chained range
  without an entry (an insertion);
* every event decodes, carries its event id as ``Nats-Msg-Id``, is on the subject its
  type and job belong on, and (for stage outputs) answers an event that is in the log;
* every circuit hashes to its ``circuit_hash``; every ExecutionCompleted matches the
  ExecutionRequested it answers (engine, circuit, options);
* every JobCompleted's result hash is re-derived twice, with the hash version it records
  (``hash_version``; a log may hold both): from its own fields and from the
  ExecutionCompleted it answers (IR hash, engine and version, method, shots, seed,
  counts/state vector/expectations); a difference names the field;
* a cached JobCompleted (``cached_from``) must carry the result of the original job's
  JobCompleted, earlier in the log, field for field and hash for hash;
* an assembled JobCompleted (``chunk_engines``) is re-derived from its chunks'
  ExecutionCompleted events: one per chunk, the latest generation's, first in the log
  (the ledger's rule), joined by the assembler's own ``join_chunks`` (a sweep's points
  in order, a shot-by-shot job's shot chunks by summing their counts;
  qbus/verifier/chunks.py);
* provenance: with the stages' public keys, every final event and execution result
  carries the signature of a stage allowed to write it (``unsigned_final``;
  qbus/bus/signing.py), so a result forged by anyone who can publish on the bus fails;
  so does every ``circuit.ingested``, ``circuit.rewritten`` and ``execution.requested``
  (``unsigned_event``), which the stages ignore when forged;
* every ResultAnchored names the job's real result hash and its Merkle proof leads from
  that hash to the root it names (the on-chain root is compared by the caller, which
  owns the chain connection: see ``anchors``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from qbus.bus.signing import HEADER, STEP_WRITERS, Trust, writers
from qbus.bus.subjects import Subjects
from qbus.frontends.bounds import UNDECODABLE, decode_event
from qbus.schemas.audit import AnchorStatus, AuditProblem, ChainEntry, EventRef, JobAudit
from qbus.schemas.events import (
    CircuitIngested,
    CircuitRewritten,
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobSubmitted,
    ResultAnchored,
)
from qbus.schemas.ir import circuit_hash
from qbus.verifier import merkle
from qbus.verifier.chunks import chunk_result, is_shot_chunk, join_chunks
from qbus.verifier.hashing import HASH_VERSIONS, event_result_hash, statevector_digest

# Events a person or program may publish without answering anything in the log.
_UNCAUSED = (JobSubmitted,)

# Problem order within one sequence: the chain's finding first (it is the root cause
# of most others), then the rest by the order they were found.
_CHAIN_CHECKS = ("chain_altered", "chain_deleted", "chain_unrecorded")

MAX_PROBLEMS = 10_000
"""Problems kept at most: a wholesale forgery should not exhaust memory."""


def tag(event: Event) -> str:
    """The wire tag of an event."""
    return event.__struct_config__.tag  # type: ignore[return-value]


def result_fields(event: ExecutionCompleted | JobCompleted) -> dict[str, object]:
    """The hashed fields of a result, by name, to say which one differs.

    The hash itself always comes from ``event_result_hash``; this only names fields.
    """
    if isinstance(event, ExecutionCompleted):
        method, shots = event.options.method, event.options.shots
        noise = event.options.noise
    else:
        method, shots = event.method, event.shots
        noise = getattr(event, "noise", None)
    return {
        "circuit_hash": event.circuit_hash,
        "engine": event.engine,
        "engine_version": event.engine_version,
        "method": method,
        "shots": shots,
        "seed": event.seed,
        "counts": event.counts,
        "statevector": (
            statevector_digest(event.statevector) if event.statevector is not None else None
        ),
        "statevector_ref": event.statevector_ref,
        "expectations": event.expectations,
        "noise": msgspec.to_builtins(noise),
        "sweep_results": msgspec.to_builtins(getattr(event, "sweep_results", None)),
        "dynamics": msgspec.to_builtins(getattr(event, "dynamics", None)),
    }


def describe_difference(name: str, here: object, there: object) -> str:
    """``name`` differs, with the first few differing counts for a counts dict."""
    if isinstance(here, dict) and isinstance(there, dict):
        keys = sorted(set(here) | set(there))
        diffs = [k for k in keys if here.get(k) != there.get(k)]
        shown = ", ".join(f"'{k}': {here.get(k, 0)} vs {there.get(k, 0)}" for k in diffs[:3])
        more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        return f"{name} ({shown}{more})"
    return f"{name} ({_short(here)} vs {_short(there)})"


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(slots=True)
class _Seen:
    """What later events need to know about an earlier one."""

    seq: int
    subject: str
    event_id: str
    type: str
    job_id: str
    result_hash: str | None = None
    fields: dict[str, object] | None = None
    # An engine's result until a JobCompleted answers it: hashed then, with the hash
    # version that JobCompleted records (a log may hold version 1 and 2 hashes).
    result: ExecutionCompleted | None = None
    request: tuple[str, str, bytes, int] | None = None
    circuit: str | None = None


@dataclass(slots=True)
class PendingAnchor:
    """A ResultAnchored whose root the caller should compare with the chain's."""

    job_id: str
    seq: int
    subject: str
    event_id: str
    event: ResultAnchored
    chain_ok: bool | None = None
    chain_detail: str = ""


@dataclass
class LogChecker:
    """Folds the event log, in stream order, into a list of problems.

    Args:
        subjects: The bus's subject names (where each event belongs).
        chain: The audit chain's entries by stream sequence.
        keep_jobs: Also build the per-job records of ``qbus audit export``.
        proof_check: Check Merkle proofs (needs the ``chain`` extra's keccak); when
            False, proofs are reported as not checked.
        trust: The stages' public keys: check who wrote each final event and execution
            result (None: provenance is not checked).
    """

    subjects: Subjects
    chain: dict[int, ChainEntry] = field(default_factory=dict)
    keep_jobs: bool = False
    proof_check: bool = True
    trust: Trust | None = None
    problems: list[AuditProblem] = field(default_factory=list)
    jobs: dict[str, JobAudit] = field(default_factory=dict)
    anchors: list[PendingAnchor] = field(default_factory=list)
    checked: int = 0
    unaudited: int = 0
    events: int = 0
    results_checked: int = 0
    anchors_checked: int = 0
    signatures_checked: int = 0
    dropped_problems: int = 0
    _last_audited: int = 0
    _present: set[int] = field(default_factory=set)
    _ids: dict[str, _Seen] = field(default_factory=dict)
    _completed: dict[str, _Seen] = field(default_factory=dict)
    # Result fields of each job's (uncached) JobCompleted: what a cached copy must carry.
    _final_fields: dict[str, dict[str, object]] = field(default_factory=dict)
    # Chunk results of chunked jobs not yet assembled: job -> [(seen, event)].
    _chunks: dict[str, list[tuple[_Seen, ExecutionCompleted]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._last_audited = max(self.chain, default=0)

    # -- feeding ----------------------------------------------------------------------

    def feed(
        self,
        seq: int,
        subject: str,
        msg_id: str,
        data: bytes,
        digest: str,
        signature: str | None = None,
    ) -> None:
        """Check one stored message.

        Args:
            seq: Its stream sequence.
            subject: Its subject.
            msg_id: Its ``Nats-Msg-Id`` header ("" when absent).
            data: Its payload.
            digest: ``event_digest(subject, msg_id, data)``.
            signature: Its ``Qbus-Signature`` header (None when absent).
        """
        self.events += 1
        self._present.add(seq)
        try:
            # Bounded first: a payload nested too deep would stop the whole check with a
            # RecursionError; it is reported like any other undecodable payload instead.
            event: Event | None = decode_event(data)
        except UNDECODABLE as exc:
            event = None
            error = str(exc)
        where = _Seen(
            seq=seq,
            subject=subject,
            event_id=event.event_id if event else msg_id,
            type=tag(event) if event else "",
            job_id=event.job_id if event else _job_of(subject, self.subjects),
        )
        self._check_chain(where, msg_id, digest)
        on_submit = _is_submit(subject, self.subjects)
        if event is None or (on_submit and not isinstance(event, JobSubmitted)):
            # Junk on a submit subject is a submission that ingest rejected, and another
            # event type sent there one that it refused (not_a_submission): the log is
            # right to hold them, and they are no job's events. Anywhere else no stage
            # could have written junk.
            if event is None and not on_submit:
                self._problem("undecodable", f"the payload is not a qbus event: {error}", where)
            if event is not None:
                self._ids[event.event_id] = where  # what its refusal names as its cause
            self._ids[msg_id or f"seq-{seq}"] = where
            self._ids[f"seq-{seq}"] = where
            return
        if self.keep_jobs:
            self._record(event, where)
        self._check_envelope(event, where, msg_id)
        self._check_provenance(event, where, msg_id, data, signature)
        match event:
            case CircuitIngested() | CircuitRewritten():
                self._check_circuit(event, where)
                where.circuit = event.circuit_hash
            case ExecutionRequested():
                self._check_circuit(event, where)
                where.request = (
                    event.engine,
                    event.circuit_hash,
                    msgspec.json.encode(event.options),
                    event.generation,
                )
            case ExecutionCompleted():
                self._check_circuit(event, where)
                self._check_against_request(event, where)
                where.result = event
                where.fields = result_fields(event)
                if event.chunk is not None and event.job_id not in self._completed:
                    # A stale chunk's result after the final event is never used: not kept.
                    self._chunks.setdefault(event.job_id, []).append((where, event))
            case JobCompleted():
                self._check_result(event, where)
                where.result_hash = event.result_hash
                self._completed[event.job_id] = where
            case ResultAnchored():
                self._check_anchor(event, where)
        self._ids[event.event_id] = where
        if msg_id and msg_id != event.event_id:
            self._ids[msg_id] = where
        self._ids[f"seq-{seq}"] = where

    def finish(self) -> None:
        """Report chain entries whose events are gone; sort problems by sequence."""
        for seq in sorted(set(self.chain) - self._present):
            entry = self.chain[seq]
            where = _Seen(
                seq=seq,
                subject=entry.subject,
                event_id=entry.event_id,
                type=entry.type,
                job_id=_job_of(entry.subject, self.subjects) if entry.subject else "",
            )
            what = f"{entry.type} " if entry.type else ""
            on = f" on {entry.subject}" if entry.subject else ""
            self._problem(
                "chain_deleted",
                f"{what}event {entry.event_id} at sequence {seq}{on} was deleted from the "
                "log: the audit chain recorded it, the stream no longer holds it",
                where,
            )
        order = {check: i for i, check in enumerate(_CHAIN_CHECKS)}
        self.problems.sort(key=lambda p: (p.seq or 0, order.get(p.check, len(order))))
        if self.keep_jobs:
            for anchor in self.anchors:
                job = self.jobs.get(anchor.job_id)
                if job is not None and job.anchor is not None and job.anchor.seq == anchor.seq:
                    job.anchor = msgspec.structs.replace(
                        job.anchor, chain_root_ok=anchor.chain_ok, chain_detail=anchor.chain_detail
                    )
            for problem in self.problems:
                job = self.jobs.get(problem.job_id)
                if job is not None:
                    job.problems.append(problem)
                    job.ok = False

    # -- the checks ---------------------------------------------------------------------

    def _check_chain(self, where: _Seen, msg_id: str, digest: str) -> None:
        if where.seq > self._last_audited:
            self.unaudited += 1
            return
        entry = self.chain.get(where.seq)
        if entry is None:
            self._problem(
                "chain_unrecorded",
                f"event at sequence {where.seq} ({where.subject}) is in the log but not in "
                "the audit chain: it was inserted after the auditor passed",
                where,
            )
            return
        self.checked += 1
        if entry.digest != digest or entry.event_id != msg_id:
            self._problem(
                "chain_altered",
                f"event {entry.event_id} at sequence {where.seq} ({where.subject}) was "
                f"altered: its digest is {digest[:16]}…, the chain recorded "
                f"{entry.digest[:16]}…",
                where,
            )

    def _check_envelope(self, event: Event, where: _Seen, msg_id: str) -> None:
        submitted = isinstance(event, JobSubmitted)
        if msg_id and msg_id != event.event_id and not submitted:
            # Stages publish every event with its id as Nats-Msg-Id; a foreign client's
            # submission may use its own message ids.
            self._problem(
                "id_mismatch",
                f"Nats-Msg-Id {msg_id} differs from the event id {event.event_id}",
                where,
            )
        try:
            expected = self.subjects.for_event(event)
        except TypeError:
            expected = where.subject
        if submitted:
            # A tenant's submission is on its tenant's submit subject, whatever the
            # payload says (docs/security.md): any submit subject is its place.
            expected = where.subject if _is_submit(where.subject, self.subjects) else expected
        if expected != where.subject:
            self._problem(
                "subject_mismatch",
                f"a {where.type} of job {event.job_id} belongs on {expected}, not {where.subject}",
                where,
            )
        if isinstance(event, _UNCAUSED) or not _stage_output(event):
            return
        if event.causation_id is None:
            self._problem("missing_cause", "a stage output that names no causing event", where)
        elif event.causation_id not in self._ids:
            self._problem(
                "missing_cause",
                f"it answers event {event.causation_id}, which is not in the log before it "
                "(deleted, or the event was forged)",
                where,
            )

    def _check_provenance(
        self, event: Event, where: _Seen, msg_id: str, data: bytes, signature: str | None
    ) -> None:
        if self.trust is None or writers(event) is None:
            return
        self.signatures_checked += 1
        headers = {"Nats-Msg-Id": msg_id, HEADER: signature or ""}
        problem = self.trust.problem(event, where.subject, data, headers)
        if problem is not None:
            # A forged step (circuit.ingested …) would have driven a run, not ended one.
            check = "unsigned_event" if type(event) in STEP_WRITERS else "unsigned_final"
            self._problem(check, f"{where.type} {problem}", where)

    def _check_circuit(
        self,
        event: CircuitIngested | CircuitRewritten | ExecutionRequested | ExecutionCompleted,
        where: _Seen,
    ) -> None:
        actual = circuit_hash(event.circuit)
        if actual != event.circuit_hash:
            self._problem(
                "circuit_hash",
                f"its circuit hashes to {actual[:23]}…, the event says {event.circuit_hash[:23]}…",
                where,
            )

    def _check_against_request(self, event: ExecutionCompleted, where: _Seen) -> None:
        request = self._ids.get(event.causation_id or "")
        if request is None or request.request is None:
            return  # a missing cause is reported by the envelope check
        engine, chash, options, generation = request.request
        request.request = None  # answered; the options are not needed any more
        diffs = []
        if engine != event.engine:
            diffs.append(describe_difference("engine", event.engine, engine))
        if chash != event.circuit_hash:
            diffs.append(describe_difference("circuit_hash", event.circuit_hash, chash))
        if generation != event.generation:
            diffs.append(describe_difference("generation", event.generation, generation))
        if options != msgspec.json.encode(event.options):
            asked = msgspec.json.decode(options)
            got = msgspec.to_builtins(event.options)
            diffs.extend(
                describe_difference(f"options.{k}", got.get(k), asked.get(k))
                for k in sorted(set(asked) | set(got))
                if asked.get(k) != got.get(k)
            )
        if diffs:
            self._problem(
                "request_mismatch",
                f"it does not match the ExecutionRequested it answers (sequence "
                f"{request.seq}): " + "; ".join(diffs) + " (here vs there)",
                where,
                related=request.seq,
            )

    def _check_result(self, event: JobCompleted, where: _Seen) -> None:
        self.results_checked += 1
        if event.hash_version not in HASH_VERSIONS:
            self._problem(
                "result_hash",
                f"its result hash is of version {event.hash_version}, which this qbus "
                f"cannot recompute (it knows versions {', '.join(map(str, HASH_VERSIONS))})",
                where,
            )
            return
        own = event_result_hash(event)
        if own != event.result_hash:
            self._problem(
                "result_hash",
                f"its result hash {event.result_hash[:23]}… is not the hash of the result "
                f"it carries ({own[:23]}…): the counts or fields were changed after hashing",
                where,
            )
        if event.cached:
            self._check_cached(event, where)
            return
        if event.chunk_engines:
            self._check_assembled(event, where)
            return
        mine = result_fields(event)
        # What a later cached copy of this result must carry (chunked results are never
        # cached: docs/routing.md).
        self._final_fields[event.job_id] = mine
        cause = self._ids.get(event.causation_id or "")
        if cause is None or cause.fields is None or cause.result is None:
            if cause is not None and cause.type != "execution.completed":
                self._problem(
                    "missing_cause",
                    f"it answers a {cause.type} (sequence {cause.seq}), not an ExecutionCompleted",
                    where,
                    related=cause.seq,
                )
            return
        diffs = [
            describe_difference(name, mine[name], cause.fields.get(name))
            for name in mine
            if mine[name] != cause.fields.get(name)
        ]
        cause.result_hash = event_result_hash(cause.result, event.hash_version)
        if diffs or cause.result_hash != event.result_hash:
            detail = "; ".join(diffs) if diffs else "the hashed fields"
            self._problem(
                "result_mismatch",
                f"its result does not re-derive from the ExecutionCompleted it answers "
                f"(sequence {cause.seq}): {detail} (here vs there); that result hashes to "
                f"{(cause.result_hash or '')[:23]}…, the job published "
                f"{event.result_hash[:23]}…",
                where,
                related=cause.seq,
            )
        # A result is answered once (the final event is first-only): its fields, which
        # may hold many counts, are not needed any more.
        cause.fields = cause.result = None

    def _check_cached(self, event: JobCompleted, where: _Seen) -> None:
        """A cached result is the original job's result, answering this job's circuit."""
        cause = self._ids.get(event.causation_id or "")
        if cause is not None and cause.type != "circuit.rewritten":
            self._problem(
                "missing_cause",
                f"a cached result answers a {cause.type} (sequence {cause.seq}), not the "
                "job's CircuitRewritten",
                where,
                related=cause.seq,
            )
        elif cause is not None and cause.circuit not in (None, event.circuit_hash):
            self._problem(
                "cache_mismatch",
                f"its circuit hash {event.circuit_hash[:23]}… is not the hash of the circuit "
                f"it answers ({(cause.circuit or '')[:23]}…, sequence {cause.seq})",
                where,
                related=cause.seq,
            )
        origin_id = event.cached_from or ""
        origin = self._completed.get(origin_id)
        theirs = self._final_fields.get(origin_id)
        if origin is None or theirs is None or origin_id == event.job_id:
            self._problem(
                "cache_origin_missing",
                f"it is a cached result of job {origin_id or '(none named)'}, whose own "
                "JobCompleted is not in the log before it: the cached result cannot be "
                "traced to a run",
                where,
            )
            return
        mine = result_fields(event)
        diffs = [
            describe_difference(name, mine[name], theirs.get(name))
            for name in mine
            if mine[name] != theirs.get(name)
        ]
        if diffs or origin.result_hash != event.result_hash:
            detail = "; ".join(diffs) if diffs else "the result hash"
            self._problem(
                "cache_mismatch",
                f"its cached result differs from the result of job {origin_id} it was "
                f"cached from (JobCompleted at sequence {origin.seq}): {detail} (here vs "
                f"there); that result hashes to {(origin.result_hash or '')[:23]}…, this "
                f"job published {event.result_hash[:23]}…",
                where,
                related=origin.seq,
            )

    def _check_assembled(self, event: JobCompleted, where: _Seen) -> None:
        """Re-derive an assembled result from its chunks, the way the assembler did."""
        results = self._chunks.pop(event.job_id, [])
        for seen, _ in results:
            seen.fields = seen.result = None  # answered here; the points are in ``results``
        cause = self._ids.get(event.causation_id or "")
        last = next((e for s, e in results if s is cause), None)
        if last is None or last.chunks is None:
            what = f"a {cause.type} (sequence {cause.seq})" if cause else "nothing in the log"
            self._problem(
                "missing_cause",
                f"an assembled result must answer its job's last chunk result; it answers {what}",
                where,
                related=cause.seq if cause else None,
            )
            return
        winners = winning_chunks(results)
        missing = [k for k in range(last.chunks) if k not in winners]
        if missing:
            self._problem(
                "chunk_missing",
                f"it joins {last.chunks} chunks, but the log holds no result for chunk(s) "
                + ", ".join(map(str, missing[:10])),
                where,
            )
            return
        parts = [chunk_result(winners[k][1]) for k in range(last.chunks)]
        whole = join_chunks(last, parts, max(e.generation for _, e in results))
        mine, theirs = result_fields(event), result_fields(whole)
        diffs = [
            describe_difference(name, mine[name], theirs[name])
            for name in mine
            if mine[name] != theirs[name]
        ]
        engines = {str(k): parts[k].engine for k in range(len(parts))}
        if event.chunk_engines != engines:
            diffs.append(describe_difference("chunk_engines", event.chunk_engines, engines))
        derived = event_result_hash(whole, event.hash_version)
        if not diffs and derived == event.result_hash:
            return
        # Name the first chunk whose points the published result does not carry.
        related, offset, culprit = None, 0, ""
        published = msgspec.to_builtins(event.sweep_results or [])
        for k, part in enumerate(parts):
            size = len(part.sweep_results)
            if published[offset : offset + size] != msgspec.to_builtins(part.sweep_results):
                seen = winners[k][0]
                related = seen.seq
                culprit = (
                    f"; points {offset}..{offset + size - 1} differ from chunk {k}'s "
                    f"ExecutionCompleted (sequence {seen.seq}, event {seen.event_id})"
                )
                break
            offset += size
        how = "by summing their counts" if is_shot_chunk(last) else "in point order"
        self._problem(
            "result_mismatch",
            f"its result does not re-derive from its {len(parts)} chunk results joined "
            f"{how}: {'; '.join(diffs) or 'the hashed fields'} (here vs there)"
            f"{culprit}; the joined result hashes to {derived[:23]}…, the job published "
            f"{event.result_hash[:23]}…",
            where,
            related=related,
        )

    def _check_anchor(self, event: ResultAnchored, where: _Seen) -> None:
        self.anchors_checked += 1
        completed = self._completed.get(event.job_id)
        leaf_of = event.result_hash
        if completed is None:
            self._problem(
                "anchor_hash",
                f"it anchors result {event.result_hash[:23]}… of job {event.job_id}, which "
                "has no JobCompleted before it in the log",
                where,
            )
        elif completed.result_hash != event.result_hash:
            self._problem(
                "anchor_hash",
                f"it anchors result {event.result_hash[:23]}…, but the job's JobCompleted "
                f"(sequence {completed.seq}) publishes {(completed.result_hash or '')[:23]}…",
                where,
                related=completed.seq,
            )
            # The proof must hold for what the log says the result is.
            leaf_of = completed.result_hash or event.result_hash
        proof_ok = self._proof_ok(leaf_of, event)
        if proof_ok is False:
            self._problem(
                "anchor_proof",
                f"the Merkle proof of result {leaf_of[:23]}… at index {event.leaf_index} "
                f"does not lead to root {event.root[:18]}… of batch {event.batch_id}",
                where,
            )
        self.anchors.append(
            PendingAnchor(event.job_id, where.seq, where.subject, event.event_id, event)
        )
        if self.keep_jobs and event.job_id in self.jobs:
            self.jobs[event.job_id].anchor = AnchorStatus(
                seq=where.seq,
                batch_id=event.batch_id,
                root=event.root,
                proof=event.proof,
                leaf_index=event.leaf_index,
                tx_hash=event.tx_hash,
                block_number=event.block_number,
                chain_id=event.chain_id,
                contract=event.contract,
                proof_ok=proof_ok,
            )

    def _proof_ok(self, result_hash: str, event: ResultAnchored) -> bool | None:
        if not self.proof_check:
            return None
        try:
            return merkle.verify_proof(
                merkle.leaf_hash(result_hash),
                [_hex_bytes(p) for p in event.proof],
                event.leaf_index,
                _hex_bytes(event.root),
                count=event.batch_size,
            )
        except ValueError:
            return False

    # -- bookkeeping --------------------------------------------------------------------

    def _record(self, event: Event, where: _Seen) -> None:
        job = self.jobs.get(event.job_id)
        if job is None:
            job = self.jobs[event.job_id] = JobAudit(job_id=event.job_id)
        job.events.append(
            EventRef(
                seq=where.seq,
                type=where.type,
                subject=where.subject,
                event_id=event.event_id,
                timestamp=event.timestamp,
            )
        )
        match event:
            case JobCompleted():
                job.status, job.final_seq = "completed", where.seq
                job.result_hash, job.verification = event.result_hash, event.verification
            case JobFailed():
                job.status, job.final_seq, job.code = "failed", where.seq, event.code
            case JobRejected():
                job.status, job.final_seq, job.code = "rejected", where.seq, event.code

    def _problem(
        self, check: str, message: str, where: _Seen, *, related: int | None = None
    ) -> None:
        if len(self.problems) >= MAX_PROBLEMS:
            self.dropped_problems += 1
            return
        self.problems.append(
            AuditProblem(
                check=check,
                message=message,
                seq=where.seq,
                subject=where.subject,
                event_id=where.event_id,
                type=where.type,
                job_id=where.job_id,
                related_seq=related,
            )
        )

    def anchor_problem(self, anchor: PendingAnchor, check: str, message: str) -> None:
        """Record a problem the caller found with an anchor (the on-chain root)."""
        where = _Seen(
            seq=anchor.seq,
            subject=anchor.subject,
            event_id=anchor.event_id,
            type="result.anchored",
            job_id=anchor.job_id,
        )
        self._problem(check, message, where)


def winning_chunks(
    results: list[tuple[_Seen, ExecutionCompleted]] | list[tuple[int, ExecutionCompleted]],
) -> dict[int, tuple]:
    """Chunk index -> the (where, event) of its accepted result, as the ledger chose it.

    The ledger (qbus/bus/ledger.py) accepts a chunk's first result of a generation no
    older than the job's, and a reroute republishes only unfinished chunks: so the
    accepted result of a chunk is its latest generation's, the first of those in the log.
    """
    won: dict[int, tuple] = {}
    for item in results:
        event = item[1]
        if event.chunk is None:
            continue
        held = won.get(event.chunk)
        if held is None or event.generation > held[1].generation:
            won[event.chunk] = item
    return won


def _stage_output(event: Event) -> bool:
    """Events only a stage writes, always in answer to an event of the log."""
    return isinstance(
        event,
        (
            CircuitIngested,
            CircuitRewritten,
            ExecutionRequested,
            ExecutionCompleted,
            ExecutionFailed,
            JobCompleted,
            ResultAnchored,
        ),
    )


def _is_submit(subject: str, subjects: Subjects) -> bool:
    """``<prefix>.submit`` or a tenant's ``<prefix>.submit.<tenant>``."""
    return subject == subjects.submit or subject.startswith(subjects.submit + ".")


def _job_of(subject: str, subjects: Subjects) -> str:
    """The job id a subject carries (its last token), "" for the submit subjects."""
    if _is_submit(subject, subjects) or "." not in subject:
        return ""
    return subject.rsplit(".", 1)[1]


def _hex_bytes(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))
