"""The ``expectation`` method: Pauli-sum observables evaluated on the final state."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.engines.observables import expectation_values, pauli_expectation
from qbus.schemas.events import JobCompleted, JobRejected, Observable, PauliTerm, decode
from qbus.verifier.hashing import result_hash
from tests.jobs import QASM3_GHZ, job, run_jobs

PAULI = {
    "I": np.eye(2),
    "X": np.array([[0, 1], [1, 0]]),
    "Y": np.array([[0, -1j], [1j, 0]]),
    "Z": np.diag([1, -1]),
}


def _matrix(pauli: str, n: int) -> np.ndarray:
    letters = {int(t[1:]): t[0] for t in pauli.split()}
    out = np.array([[1.0 + 0j]])
    for q in reversed(range(n)):  # qubit 0 is the least significant: rightmost factor
        out = np.kron(out, PAULI[letters.get(q, "I")])
    return out


@pytest.mark.parametrize("pauli", ["", "Z0", "X1", "Y2", "X0 Y1 Z2", "Y0 Y2", "I1 Z2", "Y1 X0"])
def test_pauli_expectation_matches_the_explicit_matrix(pauli: str):
    rng = np.random.default_rng(7)
    psi = rng.normal(size=8) + 1j * rng.normal(size=8)
    psi /= np.linalg.norm(psi)
    exact = np.real(np.vdot(psi, _matrix(pauli, 3) @ psi))
    assert pauli_expectation(psi, PauliTerm(coeff=1.0, pauli=pauli)) == pytest.approx(exact)
    obs = Observable(terms=[PauliTerm(coeff=0.5, pauli=pauli), PauliTerm(coeff=-2.0)])
    assert expectation_values(psi, [obs]) == pytest.approx([0.5 * exact - 2.0])


@pytest.mark.parametrize("bad", ["Z", "Q0", "Z0 Z0", "z1", "X-1"])
def test_malformed_pauli_strings_are_schema_errors(bad: str):
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"coeff": 1.0, "pauli": bad}, PauliTerm)


def test_expectations_enter_the_result_hash_only_when_present():
    base = dict(
        circuit_hash="sha256:x",
        engine="e",
        engine_version="1",
        method="sample",
        shots=1,
        seed=1,
        counts={"0": 1},
    )
    assert result_hash(**base) == result_hash(**base, expectations=None)
    assert result_hash(**base, expectations=[0.5]) != result_hash(**base, expectations=[0.25])


GHZ = QASM3_GHZ.replace("c = measure q;\n", "")
OBSERVABLES = [
    {"terms": [{"coeff": 1.0, "pauli": "Z0 Z1"}], "name": "zz"},
    {"terms": [{"coeff": 1.0, "pauli": "X0 X1 X2"}]},
    {"terms": [{"coeff": 0.5, "pauli": "Z0"}, {"coeff": 2.0, "pauli": ""}]},
    {"terms": [{"coeff": 1.0, "pauli": "Y0 Y1 X2"}]},
]
EXPECTED = [1.0, 1.0, 2.0, -1.0]


async def test_expectation_jobs_complete_verified_through_the_bus(bus: Bus, config):
    engines = ("qiskit-aer", "jax", "cirq")
    observables = msgspec.convert(OBSERVABLES, list[Observable])
    async with Pipeline(config, engines=engines) as pipeline:
        jobs = [job(GHZ, method="expectation", engine=e, observables=observables) for e in engines]
        # Measurements in the program are ignored by this method, not an error.
        jobs.append(job(QASM3_GHZ, method="expectation", observables=observables))
        finals = await run_jobs(bus, jobs, timeout=180)
        pipeline.check()
    for final in finals:
        assert isinstance(final, JobCompleted), final
        assert final.verification.test == "expectation"
        assert final.verification.verdict == "pass", final.verification
        assert final.expectations == pytest.approx(EXPECTED, abs=1e-6)
        assert final.counts is None and final.statevector is None


async def test_bad_expectation_jobs_are_rejected(bus: Bus, pipeline: Pipeline):
    wide = [Observable(terms=[PauliTerm(coeff=1.0, pauli="Z7")])]
    finals = await run_jobs(
        bus,
        [
            job(GHZ, method="expectation"),
            job(GHZ, method="expectation", observables=wide),
            job(QASM3_GHZ, observables=wide),
        ],
    )
    codes = [(f.code, f.where) for f in finals if isinstance(f, JobRejected)]
    assert codes == [
        ("no_observables", "$.observables"),
        ("qubit_out_of_range", "$.observables[0].terms[0].pauli"),
        ("unexpected_observables", "$.observables"),
    ]
    raw = (
        b'{"type":"job.submitted","event_id":"e","job_id":"j","observables":'
        b'[{"terms":[{"coeff":1,"pauli":"Q9"}]}]}'
    )
    with pytest.raises(msgspec.ValidationError, match=r"observables\[0\]\.terms\[0\]"):
        decode(raw)
