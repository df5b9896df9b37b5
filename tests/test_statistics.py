"""The verifier's statistics and result hash, on real engine samples."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qbus.engines.base import Engine, RunRequest
from qbus.engines.reference import probabilities, statevector
from qbus.engines.registry import get_engine
from qbus.schemas.ir import Circuit, Op
from qbus.verifier.hashing import result_hash, statevector_digest
from qbus.verifier.statistics import check_counts, check_statevector

ROOT = Path(__file__).resolve().parents[1]

BELL = Circuit(
    num_qubits=2,
    num_clbits=2,
    ops=(
        Op(name="h", qubits=(0,)),
        Op(name="cx", qubits=(0, 1)),
        Op(name="measure", qubits=(0, 1), clbits=(0, 1)),
    ),
)


def random_measured_circuit(seed: int, n: int = 5, depth: int = 40) -> Circuit:
    rng = np.random.default_rng(seed)
    # A first layer of generic rotations: every outcome gets some probability, so a
    # wrong distribution has to be caught by the chi-square statistic itself.
    ops = [Op(name="ry", qubits=(q,), params=(float(rng.uniform(0.3, 2.8)),)) for q in range(n)]
    for _ in range(depth):
        if rng.random() < 0.6:
            name = str(rng.choice(["rx", "ry", "rz", "h", "t", "sx"]))
            params = (float(rng.uniform(-math.pi, math.pi)),) if name[0] == "r" else ()
            ops.append(Op(name=name, qubits=(int(rng.integers(n)),), params=params))
        else:
            a, b = (int(q) for q in rng.permutation(n)[:2])
            ops.append(Op(name=str(rng.choice(["cx", "cz", "swap"])), qubits=(a, b)))
    ops.append(Op(name="measure", qubits=tuple(range(n)), clbits=tuple(range(n))))
    return Circuit(num_qubits=n, num_clbits=n, ops=tuple(ops))


RANDOM5 = random_measured_circuit(11)


@pytest.fixture(params=["reference", "qiskit-aer"])
def engine(request: pytest.FixtureRequest) -> Engine:
    return get_engine(request.param)


@pytest.mark.parametrize(("circuit", "shots"), [(BELL, 1000), (RANDOM5, 4000)], ids=["bell", "r5"])
def test_correct_samples_pass_across_seeds(engine: Engine, circuit: Circuit, shots: int) -> None:
    exact = probabilities(circuit)
    failures = []
    for seed in range(50):
        counts = engine.run(RunRequest(circuit=circuit, shots=shots, seed=seed)).counts
        assert counts is not None
        verdict = check_counts(counts, exact, shots, alpha=1e-6)
        assert verdict.test == "chi2"
        assert verdict.tvd is not None and verdict.tvd < 0.1
        if verdict.verdict != "pass":
            failures.append((seed, verdict.detail))
    assert failures == []


def test_counts_from_another_circuit_fail(engine: Engine) -> None:
    other = random_measured_circuit(12)
    counts = engine.run(RunRequest(circuit=other, shots=4000, seed=3)).counts
    assert counts is not None
    verdict = check_counts(counts, probabilities(RANDOM5), 4000)
    assert verdict.verdict == "fail"
    assert verdict.p_value is not None and verdict.p_value < 1e-6


def test_a_slightly_wrong_angle_fails_with_enough_shots() -> None:
    def rotated(angle: float) -> Circuit:
        return Circuit(
            num_qubits=1,
            num_clbits=1,
            ops=(
                Op(name="rx", qubits=(0,), params=(angle,)),
                Op(name="measure", qubits=(0,), clbits=(0,)),
            ),
        )

    counts = get_engine("reference").run(RunRequest(circuit=rotated(1.3), shots=20000, seed=1))
    assert counts.counts is not None
    assert check_counts(counts.counts, probabilities(rotated(1.3)), 20000).verdict == "pass"
    assert check_counts(counts.counts, probabilities(rotated(1.0)), 20000).verdict == "fail"


def test_an_impossible_outcome_fails_and_is_named() -> None:
    verdict = check_counts({"00": 500, "01": 1, "11": 499}, probabilities(BELL), 1000)
    assert verdict.verdict == "fail"
    assert "'01'" in verdict.detail


def test_counts_that_do_not_add_up_fail() -> None:
    verdict = check_counts({"00": 500, "11": 400}, probabilities(BELL), 1000)
    assert verdict.verdict == "fail"
    assert "900" in verdict.detail


def test_a_single_possible_outcome_passes_with_zero_dof() -> None:
    verdict = check_counts({"10": 100}, {"10": 1.0}, 100)
    assert verdict.verdict == "pass"
    assert verdict.p_value == 1.0


def test_small_expected_counts_are_pooled() -> None:
    # 1000 shots: "00"/"01" expect 495 each, the eight rare outcomes 1.25 each.
    exact = {"00": 0.495, "01": 0.495}
    exact |= {format(i, "04b"): 0.00125 for i in range(8, 16)}
    exact = {k.zfill(4): p for k, p in exact.items()}
    counts = {"0000": 497, "0001": 493, "1000": 4, "1111": 6}
    verdict = check_counts(counts, exact, 1000)
    assert verdict.verdict == "pass"
    # Two regular bins plus the pooled one (10 expected): two degrees of freedom.
    assert "dof=2" in verdict.detail
    # Far too many rare outcomes: the pool shows it.
    counts = {"0000": 470, "0001": 470, "1000": 30, "1111": 30}
    assert check_counts(counts, exact, 1000).verdict == "fail"


def test_zero_shots_is_skipped() -> None:
    assert check_counts({}, probabilities(BELL), 0).verdict == "skipped"


def test_statevector_fidelity() -> None:
    circuit = random_measured_circuit(5, n=4)
    exact = statevector(circuit)
    phased = np.exp(0.7j) * exact
    verdict = check_statevector(phased, exact)
    assert verdict.verdict == "pass"
    assert verdict.test == "fidelity"
    assert verdict.statistic == pytest.approx(1.0, abs=1e-12)

    other = statevector(random_measured_circuit(6, n=4))
    assert check_statevector(other, exact).verdict == "fail"
    assert check_statevector(2 * exact, exact).verdict == "fail"  # not normalised
    assert check_statevector(exact[:8], exact).verdict == "fail"  # wrong size


# --- result hash --------------------------------------------------------------------

BASE = {
    "circuit_hash": "sha256:" + "ab" * 32,
    "engine": "qiskit-aer",
    "engine_version": "0.18.2",
    "method": "sample",
    "shots": 1000,
    "seed": 7,
    "counts": {"00": 510, "11": 490},
}


def test_result_hash_is_deterministic_and_order_free() -> None:
    first = result_hash(**BASE)
    assert first.startswith("sha256:") and len(first) == 7 + 64
    assert result_hash(**BASE) == first
    reordered = {**BASE, "counts": {"11": 490, "00": 510}}
    assert result_hash(**reordered) == first


def test_result_hash_is_the_same_in_another_process() -> None:
    code = f"from qbus.verifier.hashing import result_hash\nprint(result_hash(**{BASE!r}))\n"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == result_hash(**BASE)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("circuit_hash", "sha256:" + "cd" * 32),
        ("engine", "reference"),
        ("engine_version", "0.18.3"),
        ("method", "statevector"),
        ("shots", 1001),
        ("seed", 8),
        ("counts", {"00": 509, "11": 491}),
        ("counts", {"00": 510, "11": 490, "01": 0}),
        ("counts", None),
    ],
)
def test_result_hash_changes_with_each_field(field: str, value: object) -> None:
    assert result_hash(**{**BASE, field: value}) != result_hash(**BASE)


def test_result_hash_covers_the_statevector() -> None:
    sv = statevector(random_measured_circuit(3, n=3))
    base = {**BASE, "method": "statevector", "counts": None}
    h = result_hash(**base, statevector=sv)
    assert h != result_hash(**base)
    interleaved = sv.view(np.float64).tolist()
    assert result_hash(**base, statevector=interleaved) == h
    assert result_hash(**base, statevector_sha256=statevector_digest(sv)) == h
    bumped = sv.copy()
    bumped[0] += 1e-15
    assert result_hash(**base, statevector=bumped) != h
    assert result_hash(**base, statevector_ref="obj://results/job.sv") != result_hash(**base)


def test_statevector_digest_is_over_little_endian_float64() -> None:
    import hashlib

    sv = np.array([0.6, 0.8j], dtype=np.complex128)
    raw = np.array([0.6, 0.0, 0.0, 0.8], dtype="<f8").tobytes()
    assert statevector_digest(sv) == "sha256:" + hashlib.sha256(raw).hexdigest()
