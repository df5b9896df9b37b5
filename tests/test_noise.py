"""Noise models: the density-matrix reference, every noisy engine against it, the bus."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.consumers.route import RouteHandler
from qbus.engines import density
from qbus.engines.base import RunRequest
from qbus.engines.reference import statevector
from qbus.engines.registry import available_engines, get_engine
from qbus.errors import EngineError, Reject
from qbus.schemas.events import (
    CircuitRewritten,
    JobCompleted,
    JobFailed,
    JobOptions,
    JobRejected,
    new_event_id,
)
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, CircuitStats, Op
from qbus.schemas.noise import NoiseModel, ReadoutError
from qbus.schemas.pauli import Observable, PauliTerm
from qbus.verifier.hashing import result_hash
from qbus.verifier.statistics import check_counts
from tests.jobs import QASM2_BELL, job, run_jobs

NOISY_ENGINES = [e for e in density.NOISE_ENGINES if e in available_engines()]
NOISELESS_ENGINES = [e for e in ("reference", "jax", "qsim") if e in available_engines()]

PAULI = {
    "I": np.eye(2),
    "X": np.array([[0, 1], [1, 0]]),
    "Y": np.array([[0, -1j], [1j, 0]]),
    "Z": np.diag([1, -1]),
}


def _pauli_matrix(pauli: str, n: int) -> np.ndarray:
    letters = {int(t[1:]): t[0] for t in pauli.split()}
    out = np.array([[1.0 + 0j]])
    for q in reversed(range(n)):
        out = np.kron(out, PAULI[letters.get(q, "I")])
    return out


def _ops(*specs: tuple) -> tuple[Op, ...]:
    return tuple(Op(name=s[0], qubits=s[1], params=s[2] if len(s) > 2 else ()) for s in specs)


# A 3-qubit circuit with 1-, 2- and 3-qubit gates, and ``ch`` (not native to Aer).
PREP = _ops(
    ("h", (0,)),
    ("cx", (0, 1)),
    ("ry", (2,), (0.9,)),
    ("ch", (1, 2)),
    ("rzz", (0, 2), (0.4,)),
    ("ccx", (0, 1, 2)),
    ("sx", (1,)),
)
CIRCUIT = Circuit(num_qubits=3, ops=PREP)
MEASURED = Circuit(
    num_qubits=3,
    num_clbits=3,
    ops=(*PREP, Op(name="measure", qubits=(0, 1, 2), clbits=(0, 1, 2))),
)
# Braket's noise channels act on at most two qubits: its circuits leave out the ccx.
PREP_2Q = tuple(op for op in PREP if len(op.qubits) < 3)


def _circuits(engine: str) -> tuple[Circuit, Circuit]:
    """(unmeasured, measured) test circuit for ``engine``."""
    if engine != "braket":
        return CIRCUIT, MEASURED
    measure = Op(name="measure", qubits=(0, 1, 2), clbits=(0, 1, 2))
    return (
        Circuit(num_qubits=3, ops=PREP_2Q),
        Circuit(num_qubits=3, num_clbits=3, ops=(*PREP_2Q, measure)),
    )


OBSERVABLES = [
    Observable(terms=[PauliTerm(coeff=1.0, pauli="Z0 Z1")]),
    Observable(terms=[PauliTerm(coeff=1.0, pauli="X0 Y1 Z2"), PauliTerm(coeff=0.5, pauli="Z2")]),
    Observable(terms=[PauliTerm(coeff=1.0, pauli="Z0"), PauliTerm(coeff=-0.3, pauli="X2")]),
    Observable(terms=[PauliTerm(coeff=2.0, pauli="")]),
]

CHANNELS = {
    "depolarizing_1q": NoiseModel(depolarizing_1q=0.15),
    "depolarizing_2q": NoiseModel(depolarizing_2q=0.2),
    "amplitude_damping": NoiseModel(amplitude_damping=0.25),
    "readout": NoiseModel(
        readout=[ReadoutError(qubit=0, p01=0.1, p10=0.2), ReadoutError(qubit=2, p01=0.3)]
    ),
    "combined": NoiseModel(
        depolarizing_1q=0.05,
        depolarizing_2q=0.1,
        amplitude_damping=0.1,
        readout=[ReadoutError(qubit=1, p01=0.05, p10=0.15)],
    ),
}


# ----------------------------------------------------------------- the reference


def test_noiseless_density_matrix_is_the_pure_state():
    rho = density.density_matrix(CIRCUIT)
    psi = statevector(CIRCUIT)
    assert np.allclose(rho, np.outer(psi, psi.conj()), atol=1e-12)
    assert density.noisy_probabilities(MEASURED) == pytest.approx(
        {k: v for k, v in density.measured_distribution(MEASURED, np.abs(psi) ** 2).items()}
    )


@pytest.mark.parametrize("name", list(CHANNELS))
def test_channels_keep_the_density_matrix_physical(name: str):
    rho = density.density_matrix(CIRCUIT, noise=CHANNELS[name])
    assert np.trace(rho).real == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(rho, rho.conj().T, atol=1e-12)
    assert np.linalg.eigvalsh(rho).min() > -1e-12


def test_depolarizing_matches_its_closed_form():
    # After one H, <X> = 1 - 4p/3 in the Pauli convention (X unaffected, Y and Z flip it).
    for p in (0.0, 0.3, 0.75, 1.0):
        circuit = Circuit(num_qubits=1, ops=_ops(("h", (0,))))
        (x,) = density.noisy_expectations(
            circuit,
            [Observable(terms=[PauliTerm(coeff=1.0, pauli="X0")])],
            noise=NoiseModel(depolarizing_1q=p),
        )
        assert x == pytest.approx(1 - 4 * p / 3, abs=1e-12)
    # Two-qubit: λ = 16p/15 of the state is replaced by I/4, so a Bell ZZ = 1 - 16p/15.
    bell = Circuit(num_qubits=2, ops=_ops(("h", (0,)), ("cx", (0, 1))))
    (zz,) = density.noisy_expectations(
        bell,
        [Observable(terms=[PauliTerm(coeff=1.0, pauli="Z0 Z1")])],
        noise=NoiseModel(depolarizing_2q=0.3),
    )
    assert zz == pytest.approx(1 - 16 * 0.3 / 15, abs=1e-12)
    assert density.depolarizing_lambda(0.3, 2) == pytest.approx(16 * 0.3 / 15)


def test_amplitude_damping_and_readout_match_their_closed_forms():
    circuit = Circuit(
        num_qubits=1,
        num_clbits=1,
        ops=(*_ops(("x", (0,))), Op(name="measure", qubits=(0,), clbits=(0,))),
    )
    dist = density.noisy_probabilities(circuit, noise=NoiseModel(amplitude_damping=0.3))
    assert dist == pytest.approx({"0": 0.3, "1": 0.7})
    noise = NoiseModel(amplitude_damping=0.3, readout=[ReadoutError(qubit=0, p01=0.1, p10=0.2)])
    dist = density.noisy_probabilities(circuit, noise=noise)
    # P(read 1) = P(1)(1 - p10) + P(0) p01
    assert dist["1"] == pytest.approx(0.7 * 0.8 + 0.3 * 0.1)
    assert dist["0"] == pytest.approx(0.7 * 0.2 + 0.3 * 0.9)


def test_readout_applies_per_measurement_and_maps_clbits():
    # Qubit 0 measured into clbits 0 and 2: each read flips independently.
    circuit = Circuit(
        num_qubits=2,
        num_clbits=3,
        ops=(
            Op(name="measure", qubits=(0, 1), clbits=(0, 1)),
            Op(name="measure", qubits=(0,), clbits=(2,)),
        ),
    )
    noise = NoiseModel(readout=[ReadoutError(qubit=0, p01=0.25)])
    dist = density.noisy_probabilities(circuit, noise=noise)
    assert dist == pytest.approx(
        {"000": 0.75**2, "001": 0.25 * 0.75, "100": 0.75 * 0.25, "101": 0.25**2}
    )


@pytest.mark.parametrize("pauli", ["", "Z0", "X1", "Y2", "X0 Y1 Z2", "Y0 Y2"])
def test_pauli_trace_matches_the_explicit_trace(pauli: str):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(8, 8)) + 1j * rng.normal(size=(8, 8))
    rho = a @ a.conj().T
    rho /= np.trace(rho)
    exact = np.trace(rho @ _pauli_matrix(pauli, 3)).real
    assert density.pauli_trace(rho, PauliTerm(coeff=1.0, pauli=pauli)) == pytest.approx(exact)


# ----------------------------------------------------------- engines vs reference


@pytest.mark.parametrize("engine", NOISY_ENGINES)
@pytest.mark.parametrize("channel", [c for c in CHANNELS if c != "readout"])
def test_noisy_expectations_match_the_density_reference(engine: str, channel: str):
    noise = CHANNELS[channel]
    circuit, _ = _circuits(engine)
    eng = get_engine(engine)
    assert eng.capabilities.noise is True
    result = eng.run(
        RunRequest(circuit=circuit, method="expectation", observables=OBSERVABLES, noise=noise)
    )
    exact = density.noisy_expectations(circuit, OBSERVABLES, noise=noise)
    noiseless = density.noisy_expectations(circuit, OBSERVABLES)
    assert result.expectations == pytest.approx(exact, abs=1e-9)
    # The noise did something measurable: the test could fail on a noiseless engine.
    assert max(abs(a - b) for a, b in zip(exact, noiseless, strict=True)) > 0.02


@pytest.mark.parametrize("engine", NOISY_ENGINES)
@pytest.mark.parametrize("channel", list(CHANNELS))
def test_noisy_counts_pass_chi_square_against_the_noisy_distribution(engine: str, channel: str):
    noise = CHANNELS[channel]
    _, measured = _circuits(engine)
    shots = 20_000
    result = get_engine(engine).run(RunRequest(circuit=measured, shots=shots, seed=11, noise=noise))
    assert sum(result.counts.values()) == shots
    exact = density.noisy_probabilities(measured, noise=noise)
    verdict = check_counts(result.counts, exact, shots, alpha=1e-6)
    assert verdict.verdict == "pass", verdict
    # ... and the same counts are far from the noiseless distribution.
    noiseless = density.noisy_probabilities(measured)
    assert check_counts(result.counts, noiseless, shots, alpha=1e-6).verdict == "fail"


@pytest.mark.parametrize("engine", NOISY_ENGINES)
def test_every_gate_gets_its_noise_once_on_every_noisy_engine(engine: str):
    # Every IR gate once, on shuffled qubits: a gate an engine decomposes (Aer's density
    # matrix method runs no crx, cu, cswap …) would get its noise several times.
    rng = np.random.default_rng(0)
    ops = [Op(name="h", qubits=(q,)) for q in range(3)]
    for name, spec in GATES.items():
        if engine == "braket" and spec.num_qubits > 2:
            continue
        qubits = tuple(int(q) for q in rng.permutation(3)[: spec.num_qubits])
        params = tuple(float(x) for x in rng.uniform(0, 3, spec.num_params))
        ops.append(Op(name=name, qubits=qubits, params=params))
    circuit = Circuit(num_qubits=3, ops=tuple(ops))
    noise = NoiseModel(depolarizing_1q=0.03, depolarizing_2q=0.05, amplitude_damping=0.02)
    result = get_engine(engine).run(
        RunRequest(circuit=circuit, method="expectation", observables=OBSERVABLES, noise=noise)
    )
    exact = density.noisy_expectations(circuit, OBSERVABLES, noise=noise)
    assert result.expectations == pytest.approx(exact, abs=1e-9)


@pytest.mark.parametrize("engine", NOISELESS_ENGINES)
def test_engines_without_noise_reject_a_noise_model(engine: str):
    eng = get_engine(engine)
    assert eng.capabilities.noise is False
    with pytest.raises(EngineError) as err:
        eng.validate(RunRequest(circuit=MEASURED, noise=NoiseModel(depolarizing_1q=0.1)))
    assert err.value.code == "noise_unsupported"
    assert "qiskit-aer" in str(err.value)
    # A trivial model is no noise at all: accepted.
    eng.validate(RunRequest(circuit=MEASURED, noise=NoiseModel(depolarizing_1q=0.0)))


@pytest.mark.parametrize("engine", NOISY_ENGINES)
def test_noisy_engines_refuse_a_noisy_statevector_and_wide_circuits(engine: str):
    eng = get_engine(engine)
    noise = NoiseModel(amplitude_damping=0.1)
    with pytest.raises(EngineError) as err:
        eng.validate(RunRequest(circuit=CIRCUIT, method="statevector", noise=noise))
    assert err.value.code == "unsupported_method"
    wide = Circuit(num_qubits=20, ops=_ops(("h", (19,))))
    with pytest.raises(EngineError) as err:
        eng.validate(RunRequest(circuit=wide, method="expectation", noise=noise, observables=[]))
    assert err.value.code == "too_many_qubits"


@pytest.mark.skipif("braket" not in NOISY_ENGINES, reason="braket not installed")
def test_braket_refuses_depolarizing_after_three_qubit_gates():
    eng = get_engine("braket")
    with pytest.raises(EngineError) as err:
        eng.validate(RunRequest(circuit=MEASURED, noise=NoiseModel(depolarizing_2q=0.1)))
    assert err.value.code == "noise_unsupported" and "ccx" in str(err.value)
    # Damping alone is per qubit, which Braket expresses.
    eng.validate(RunRequest(circuit=MEASURED, noise=NoiseModel(amplitude_damping=0.1)))


def test_noise_model_schema_checks():
    with pytest.raises(msgspec.ValidationError, match="twice"):
        msgspec.convert({"readout": [{"qubit": 1}, {"qubit": 1}]}, NoiseModel)
    with pytest.raises(msgspec.ValidationError, match="depolarizing_1q"):
        msgspec.convert({"depolarizing_1q": 1.5}, NoiseModel)
    assert NoiseModel(readout=[ReadoutError(qubit=4)]).problem(3) is not None
    assert NoiseModel().is_trivial()


def test_noise_enters_the_result_hash_only_when_present():
    base = dict(
        circuit_hash="sha256:x",
        engine="e",
        engine_version="1",
        method="sample",
        shots=1,
        seed=1,
        counts={"0": 1},
    )
    assert result_hash(**base) == result_hash(**base, noise=None)
    one = result_hash(**base, noise=NoiseModel(depolarizing_1q=0.1))
    two = result_hash(**base, noise=NoiseModel(depolarizing_1q=0.2))
    assert len({result_hash(**base), one, two}) == 3


# --------------------------------------------------------------------- routing


def _rewritten(engine: str, noise: NoiseModel | None) -> CircuitRewritten:
    stats = CircuitStats(gates=1, two_qubit_gates=0, depth=1)
    return CircuitRewritten(
        event_id=new_event_id(),
        job_id="j1",
        circuit=MEASURED,
        circuit_hash="sha256:x",
        original_hash="sha256:x",
        options=JobOptions(engine=engine, noise=noise),
        before=stats,
        after=stats,
    )


async def test_route_sends_noisy_auto_jobs_to_a_noise_engine():
    router = RouteHandler(default_engine="jax")
    noisy = NoiseModel(depolarizing_1q=0.1)
    (out,) = await router.handle(_rewritten("auto", noisy))
    assert out.engine in density.NOISE_ENGINES and "noise" in out.route_reason
    (out,) = await router.handle(_rewritten("auto", None))
    assert out.engine == "jax"
    (out,) = await router.handle(_rewritten("cirq", noisy))
    assert out.engine == "cirq"
    with pytest.raises(Reject) as err:
        await router.handle(_rewritten("jax", noisy))
    assert err.value.code == "noise_unsupported" and err.value.where == "$.engine"


# ------------------------------------------------------------------------ the bus

NOISY_BELL = NoiseModel(
    depolarizing_1q=0.05,
    depolarizing_2q=0.1,
    amplitude_damping=0.05,
    readout=[ReadoutError(qubit=0, p01=0.02, p10=0.05)],
)
BELL_OBS = [
    Observable(terms=[PauliTerm(coeff=1.0, pauli="Z0 Z1")]),
    Observable(terms=[PauliTerm(coeff=1.0, pauli="X0 X1")]),
]


async def test_noisy_jobs_complete_verified_on_the_bus(bus: Bus, config):
    engines = ("qiskit-aer", "cirq")
    unmeasured = QASM2_BELL.replace("measure q -> c;\n", "")
    async with Pipeline(config, engines=engines) as pipeline:
        jobs = [job(QASM2_BELL, engine=e, shots=4000, noise=NOISY_BELL) for e in engines]
        jobs += [
            job(unmeasured, engine=e, method="expectation", observables=BELL_OBS, noise=NOISY_BELL)
            for e in engines
        ]
        # Through a sandboxed worker: the engine's expectation values cross the pipe.
        jobs.append(
            job(
                unmeasured,
                engine="cirq",
                method="expectation",
                observables=BELL_OBS,
                noise=NOISY_BELL,
                hypervisor="process",
            )
        )
        jobs.append(job(QASM2_BELL, shots=4000, noise=NOISY_BELL))  # engine auto
        finals = await run_jobs(bus, jobs, timeout=180)
        pipeline.check()
    bell = Circuit(num_qubits=2, ops=_ops(("h", (0,)), ("cx", (0, 1))))
    exact = density.noisy_expectations(bell, BELL_OBS, noise=NOISY_BELL)
    for j, final in zip(jobs, finals, strict=True):
        assert isinstance(final, JobCompleted), final
        assert final.verification.verdict == "pass", final.verification
        assert final.noise == NOISY_BELL
        if j.method == "expectation":
            assert final.verification.test == "expectation"
            assert "noisy" in final.verification.detail
            assert final.expectations == pytest.approx(exact, abs=1e-9)
        else:
            assert final.verification.test == "chi2"
            assert "noisy distribution" in final.verification.detail
            # Noise put weight on outcomes a noiseless Bell state never gives.
            assert final.counts.get("01", 0) + final.counts.get("10", 0) > 0
    assert finals[-1].engine == "qiskit-aer"
    assert math.isclose(exact[0], 0.8, abs_tol=0.2)


async def test_bad_noisy_jobs_end_with_clear_codes(bus: Bus, config):
    noise = NoiseModel(depolarizing_1q=0.1)
    async with Pipeline(config, engines=("qiskit-aer", "jax")) as pipeline:
        finals = await run_jobs(
            bus,
            [
                job(QASM2_BELL, engine="jax", noise=noise),
                job(QASM2_BELL, noise=NoiseModel(readout=[ReadoutError(qubit=5, p01=0.1)])),
                job(QASM2_BELL, method="statevector", noise=noise),
            ],
        )
        pipeline.check()
    got = [(type(f).__name__, f.code, getattr(f, "where", None)) for f in finals]
    assert got == [
        ("JobRejected", "noise_unsupported", "$.engine"),
        ("JobRejected", "invalid_noise", "$.noise.readout[0].qubit"),
        ("JobRejected", "invalid_noise", "$.noise"),
    ]
    assert all(isinstance(f, (JobRejected, JobFailed)) for f in finals)


# ------------------------------------------------------------------------ the CLI


def test_cli_noise_options_parse():
    from qbus.producers.open_options import noise_from_options

    assert noise_from_options(None, None, ()) is None
    noise = noise_from_options(0.01, 0.02, ("0:0.03:0.04", "2:0:0.1"))
    assert noise == NoiseModel(
        depolarizing_1q=0.01,
        depolarizing_2q=0.01,
        amplitude_damping=0.02,
        readout=[
            ReadoutError(qubit=0, p01=0.03, p10=0.04),
            ReadoutError(qubit=2, p01=0.0, p10=0.1),
        ],
    )
    for bad in ("0:0.1", "x:0.1:0.1", "0:0.1:0.1:0.1", "0:2:0"):
        with pytest.raises(ValueError):
            noise_from_options(None, None, (bad,))
    with pytest.raises(ValueError, match="depolarizing_1q"):
        noise_from_options(1.5, None, ())


async def test_cli_submits_a_noisy_job(config, bus: Bus, pipeline: Pipeline, tmp_path):
    from tests.test_cli import aqbus

    program = tmp_path / "bell.qasm"
    program.write_text(QASM2_BELL)
    args = ["submit", str(program), "--shots", "2000", "--wait"]
    noisy = [*args, "--noise-depolarizing", "0.1", "--readout-error", "1:0.05:0.1"]
    out = await aqbus(*noisy, url=config.bus.url)
    assert out.returncode == 0, out.stderr
    assert "noise: depolarizing_1q=0.1, depolarizing_2q=0.1, readout[q1]=0.05/0.1" in out.stdout
    assert "verification: PASS (chi2)" in out.stdout and "noisy distribution" in out.stdout
    out = await aqbus(*args, "--readout-error", "1:0.05", url=config.bus.url)
    assert out.returncode == 2 and "QUBIT:P01:P10" in out.stderr
