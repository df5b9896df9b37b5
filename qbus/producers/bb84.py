"""BB84 key distribution with an optional intercept-resend eavesdropper, on the bus.

Every qubit Alice sends is one qubit of a circuit run as a one-shot ``sample`` job;
``qubits_per_job`` independent rounds share a circuit. Alice encodes bit ``a`` in basis
``b`` (``x`` for a 1, then ``h`` for the X basis). Without Eve, Bob's circuit follows
directly (``h`` for his X basis, then measure). With Eve, the rounds run as two jobs:
Alice → Eve (Eve measures in her random basis), then Eve → Bob (Eve prepares what she
measured in her basis; Bob measures), so the eavesdropper's measurement is a real
measurement on the bus and her resent state is what she learnt.

Sifting keeps the rounds where Bob's basis equals Alice's; the QBER is the fraction of
sifted bits where Bob's bit differs from Alice's: about 0 without Eve (noise aside),
about 25% with an intercept-resend Eve (she guesses the wrong basis half the time and
then Bob's bit is random).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from qbus.frontends.job_template import Bb84
from qbus.producers.template_result import Progress, TemplateResult
from qbus.schemas.ir import Circuit, Op

if TYPE_CHECKING:
    from collections.abc import Sequence

    from qbus.producers.templates import Session


def encode_measure(prepare: Sequence[tuple[int, int]], measure_bases: Sequence[int]) -> Circuit:
    """Prepare ``(bit, basis)`` on each qubit, then measure each in its basis.

    Basis 0 is Z (|0⟩/|1⟩), basis 1 is X (|+⟩/|−⟩).
    """
    ops: list[Op] = []
    for q, (bit, basis) in enumerate(prepare):
        if bit:
            ops.append(Op(name="x", qubits=(q,)))
        if basis:
            ops.append(Op(name="h", qubits=(q,)))
    for q, basis in enumerate(measure_bases):
        if basis:
            ops.append(Op(name="h", qubits=(q,)))
    n = len(prepare)
    ops.append(Op(name="measure", qubits=tuple(range(n)), clbits=tuple(range(n))))
    return Circuit(num_qubits=n, num_clbits=n, ops=tuple(ops))


def measured_bits(counts: dict[str, int], n: int) -> list[int]:
    """The bits of a one-shot result (clbit 0 is the rightmost character)."""
    (bits,) = counts  # one shot: one bitstring
    return [int(bits[-1 - q]) for q in range(n)]


def _run_rounds(
    session: Session, prepare: list[tuple[int, int]], bases: list[int], per_job: int
) -> list[int]:
    """Run the rounds as one-shot jobs of ``per_job`` qubits; the measured bits."""
    jobs = []
    for start in range(0, len(prepare), per_job):
        chunk = prepare[start : start + per_job]
        jobs.append(
            (
                encode_measure(chunk, bases[start : start + per_job]),
                {"shots": 1, "method": "sample"},
            )
        )
    finals = session.run_many(jobs)
    out: list[int] = []
    for (circuit, _), final in zip(jobs, finals, strict=True):
        out += measured_bits(final.counts or {}, circuit.num_qubits)
    return out


def run_bb84(session: Session, progress: Progress) -> TemplateResult:
    """Alice sends, (Eve intercepts,) Bob measures; sift and estimate the QBER."""

    t = session.template
    cfg = t.bb84 or Bb84()
    rng = np.random.default_rng(cfg.seed)
    n = cfg.bits
    alice_bits = rng.integers(0, 2, n).tolist()
    alice_bases = rng.integers(0, 2, n).tolist()
    bob_bases = rng.integers(0, 2, n).tolist()
    eve_bases = rng.integers(0, 2, n).tolist()
    per_job = cfg.qubits_per_job
    jobs_per_pass = -(-n // per_job)
    progress(
        f"BB84: {n} qubits in {jobs_per_pass} one-shot jobs of {per_job} qubits"
        + (" per pass; Eve intercepts and resends every qubit" if cfg.eavesdropper else "; no Eve")
        + f", on {session.engine}"
    )
    alice = list(zip(alice_bits, alice_bases, strict=True))
    eve_bits: list[int] = []
    if cfg.eavesdropper:
        eve_bits = _run_rounds(session, alice, eve_bases, per_job)
        progress(f"Eve measured {n} qubits ({jobs_per_pass} jobs)")
        resent = list(zip(eve_bits, eve_bases, strict=True))
        bob_bits = _run_rounds(session, resent, bob_bases, per_job)
    else:
        bob_bits = _run_rounds(session, alice, bob_bases, per_job)
    progress(f"Bob measured {n} qubits ({jobs_per_pass} jobs)")
    sifted = [i for i in range(n) if alice_bases[i] == bob_bases[i]]
    errors = sum(alice_bits[i] != bob_bits[i] for i in sifted)
    qber = errors / len(sifted) if sifted else float("nan")
    key = "".join(str(alice_bits[i]) for i in sifted if alice_bits[i] == bob_bits[i])
    summary: dict[str, Any] = {
        "bits_sent": n,
        "eavesdropper": cfg.eavesdropper,
        "sifted_key_length": len(sifted),
        "errors": errors,
        "qber": qber,
        "key_prefix": key[:64],
    }
    lines = [
        f"sent {n} qubits, sifted key {len(sifted)} bits (bases agreed), {errors} errors",
        f"QBER = {qber:.3f}"
        + (
            "  (Eve present: expect about 0.25)"
            if cfg.eavesdropper
            else "  (no Eve: expect about 0)"
        ),
    ]
    if cfg.eavesdropper:
        eve_right = sum(eve_bits[i] == alice_bits[i] for i in sifted)
        summary["eve_correct_fraction"] = eve_right / len(sifted) if sifted else float("nan")
        lines.append(
            f"Eve's bits agree with Alice's on {summary['eve_correct_fraction']:.1%} "
            "of the sifted key"
        )
    lines.append(
        "abort: QBER above 11%, the key is not secure"
        if qber > 0.11
        else "QBER below 11%: key accepted"
    )
    return TemplateResult(t.name or "", "bb84", session.engine, summary, lines)
