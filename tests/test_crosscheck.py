"""Cross-engine agreement: a deliberately wrong engine is caught by the second engine.

The wrong engine is ``flipper`` (tests/plugins/site/qbus_flipper): qiskit-aer with bit 0
of every result flipped, a distribution of its own (its dist-info folder sits beside it)
that registers through the real ``qbus.engines`` entry point, like any third-party engine,
but only for the test processes that have tests/plugins/site on their path (conftest.py).
"""

from __future__ import annotations

from importlib.metadata import entry_points

import msgspec
import numpy as np
import pytest

from qbus.bus.config import Config, VerifyConfig
from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.engines.base import RunRequest
from qbus.engines.registry import get_engine
from qbus.frontends.qasm import parse_qasm as _parse_qasm
from qbus.schemas.events import JobCompleted, JobFailed, Observable
from qbus.schemas.noise import NoiseModel
from qbus.verifier.crosscheck import compare_counts, compare_statevectors, sampled
from tests.jobs import QASM2_BELL, job, run_jobs

pytestmark = pytest.mark.timeout(180)

# Wider than the exact reference (20 qubits): the verifier's check against the exact
# answer is skipped, so only the cross-engine check can tell a wrong result.
WIDE = 22
GHZ_WIDE = (
    f'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[{WIDE}] q;\nbit[{WIDE}] c;\nh q[0];\n'
    + "".join(f"cx q[{i}], q[{i + 1}];\n" for i in range(WIDE - 1))
    + "c = measure q;\n"
)
# The same counts from a non-Clifford circuit (a T before measuring changes only a phase):
# too wide for the exact reference and out of the stabilizer check's reach, so only a
# second engine can catch a wrong result.
GHZ_WIDE_T = GHZ_WIDE.replace("c = measure q;\n", f"t q[{WIDE - 1}];\nc = measure q;\n")


def parse_qasm(text: str):
    return _parse_qasm(text)[0]


def _flipper_entry_point():
    found = [ep for ep in entry_points(group="qbus.engines") if ep.name == "flipper"]
    assert found, (
        "the test engine plugin is not on the path: tests/conftest.py puts tests/plugins/site there"
    )
    return found[0]


def test_flipper_registers_through_its_own_entry_point():
    ep = _flipper_entry_point()
    assert ep.dist is not None and ep.dist.name == "qbus-flipper"
    engine = get_engine("flipper")
    assert type(engine).__module__ == "qbus_flipper"
    request = RunRequest(circuit=parse_qasm(QASM2_BELL), shots=200, seed=5)
    honest = get_engine("qiskit-aer").run(request).counts
    wrong = engine.run(request).counts
    assert set(honest) == {"00", "11"}
    assert wrong == {"01": honest["00"], "10": honest["11"]}


def test_two_sample_test_passes_agreeing_engines_and_fails_a_flip():
    circuit = parse_qasm(GHZ_WIDE)
    aer, qsim, flipper = get_engine("qiskit-aer"), get_engine("qsim"), get_engine("flipper")
    for seed in range(3):
        request = RunRequest(circuit=circuit, shots=2000, seed=seed)
        a, b = aer.run(request).counts, qsim.run(request).counts
        assert compare_counts(a, b).verdict == "pass"
        bad = compare_counts(a, flipper.run(request).counts)
        assert bad.verdict == "fail"
        assert bad.p_value is not None and bad.p_value < 1e-6


def test_two_sample_test_on_close_but_different_distributions():
    rng = np.random.default_rng(7)
    a = dict(zip(("0", "1"), rng.multinomial(20_000, [0.5, 0.5]).tolist(), strict=True))
    same = dict(zip(("0", "1"), rng.multinomial(20_000, [0.5, 0.5]).tolist(), strict=True))
    skewed = dict(zip(("0", "1"), rng.multinomial(20_000, [0.45, 0.55]).tolist(), strict=True))
    assert compare_counts(a, same).verdict == "pass"
    assert compare_counts(a, skewed).verdict == "fail"
    # Sparse outcomes are pooled rather than inflating the statistic.
    assert compare_counts({"0": 1000, "1": 1}, {"0": 1000, "1": 0}).verdict == "pass"


def test_statevector_fidelity_comparison():
    circuit = parse_qasm(QASM2_BELL.replace("measure q -> c;\n", ""))
    request = RunRequest(circuit=circuit, method="statevector")
    honest = get_engine("qiskit-aer").run(request).statevector
    assert compare_statevectors(honest, get_engine("cirq").run(request).statevector).verdict == (
        "pass"
    )
    assert compare_statevectors(honest, get_engine("flipper").run(request).statevector).verdict == (
        "fail"
    )


def test_sample_rate_is_a_stable_function_of_the_job_id():
    ids = [f"job-{i}" for i in range(4000)]
    picked = [i for i in ids if sampled(i, 0.25)]
    assert picked == [i for i in ids if sampled(i, 0.25)]
    assert 0.2 < len(picked) / len(ids) < 0.3
    assert not any(sampled(i, 0.0) for i in ids[:100])
    assert all(sampled(i, 1.0) for i in ids[:100])


@pytest.fixture
def cross_config(config: Config) -> Config:
    return msgspec.structs.replace(
        config, verify=VerifyConfig(cross_check_engines=("qiskit-aer", "qsim"))
    )


async def test_wrong_engine_is_caught_on_the_bus(cross_config: Config, bus: Bus):
    async with Pipeline(cross_config, engines=("qiskit-aer", "flipper")) as pipeline:
        unchecked, checked, honest, clifford = await run_jobs(
            bus,
            [
                job(GHZ_WIDE_T, engine="flipper", shots=1000, seed=11),
                job(GHZ_WIDE_T, engine="flipper", shots=1000, seed=11, cross_check=True),
                job(GHZ_WIDE_T, engine="qiskit-aer", shots=1000, seed=11, cross_check=True),
                job(GHZ_WIDE, engine="flipper", shots=1000, seed=11),
            ],
            timeout=120,
        )
        pipeline.check()
    # A wide Clifford circuit is checked exactly against stim (verifier/stabilizer.py):
    # the flipped outcomes are outside the GHZ state's support.
    assert isinstance(clifford, JobFailed) and clifford.code == "verification_failed", clifford
    # Without the gate the wrong result goes through: too wide for the exact reference.
    assert isinstance(unchecked, JobCompleted), unchecked
    assert unchecked.verification.verdict == "skipped"
    assert unchecked.verification.cross_verdict is None
    assert set(unchecked.counts) == {"0" * (WIDE - 1) + "1", "1" * (WIDE - 1) + "0"}
    # With it, the second engine disagrees and the job fails with a stable code.
    assert isinstance(checked, JobFailed), checked
    assert checked.code == "cross_engine_disagreement"
    assert checked.stage == "verify"
    assert "flipper" in checked.message and "qiskit-aer" in checked.message
    assert "two-sample chi2" in checked.message
    # An honest engine passes the same gate against a different implementation.
    assert isinstance(honest, JobCompleted), honest
    assert honest.verification.cross_engine == "qsim"
    assert honest.verification.cross_verdict == "pass"
    assert "two-sample chi2" in honest.verification.cross_detail


async def test_sample_rate_cross_checks_jobs_that_did_not_ask(config: Config, bus: Bus):
    sampled_config = msgspec.structs.replace(
        config, verify=VerifyConfig(cross_check_rate=1.0, cross_check_engines=("reference",))
    )
    async with Pipeline(sampled_config, engines=("qiskit-aer", "flipper")) as pipeline:
        honest, wrong = await run_jobs(
            bus,
            [job(QASM2_BELL, shots=500, seed=3), job(QASM2_BELL, engine="flipper", shots=500)],
        )
        pipeline.check()
    assert isinstance(honest, JobCompleted), honest
    assert honest.verification.verdict == "pass"
    assert (honest.verification.cross_engine, honest.verification.cross_verdict) == (
        "reference",
        "pass",
    )
    # Within the reference's width the exact check sees the flip first; the failure
    # code says which check failed.
    assert isinstance(wrong, JobFailed), wrong
    assert wrong.code == "verification_failed"


async def test_statevector_and_expectation_jobs_cross_check_on_the_bus(
    bus: Bus, pipeline: Pipeline
):
    unmeasured = QASM2_BELL.replace("measure q -> c;\n", "")
    zz = msgspec.convert([{"terms": [{"coeff": 1.0, "pauli": "Z0 Z1"}]}], list[Observable])
    vector, values = await run_jobs(
        bus,
        [
            job(unmeasured, method="statevector", cross_check=True),
            job(unmeasured, method="expectation", observables=zz, cross_check=True),
        ],
    )
    for final, test in ((vector, "fidelity"), (values, "largest scaled difference")):
        assert isinstance(final, JobCompleted), final
        v = final.verification
        # The default preference: qiskit-aer ran it, the reference engine checks it.
        assert (v.cross_engine, v.cross_verdict) == ("reference", "pass"), v
        assert test in v.cross_detail


async def test_noisy_job_is_cross_checked_on_an_engine_that_simulates_noise(
    bus: Bus, pipeline: Pipeline
):
    noise = NoiseModel(depolarizing_1q=0.05, depolarizing_2q=0.1)
    (final,) = await run_jobs(
        bus, [job(QASM2_BELL, shots=4000, seed=5, noise=noise, cross_check=True)]
    )
    assert isinstance(final, JobCompleted), final
    v = final.verification
    # The reference engine is noiseless and refuses the job; the next preference runs it.
    assert (v.cross_engine, v.cross_verdict) == ("cirq", "pass"), v
    assert set(final.counts) == {"00", "01", "10", "11"}
