"""The ``dynamics`` method: Lindblad evolution on qutip, verified by the Liouvillian reference."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from qbus.bus.connection import Bus
from qbus.consumers.pipeline import Pipeline
from qbus.engines import lindblad
from qbus.engines.base import RunRequest
from qbus.engines.registry import get_engine
from qbus.errors import EngineError
from qbus.schemas.dynamics import CollapseOperator, DynamicsResult, DynamicsSpec
from qbus.schemas.events import JobCompleted, JobFailed, JobRejected
from qbus.schemas.ir import Circuit, Op
from qbus.schemas.pauli import Observable, PauliTerm
from qbus.verifier.hashing import result_hash
from qbus.verifier.open_systems import check_dynamics
from tests.jobs import job, run_jobs

qutip = pytest.importorskip("qutip")


def _obs(*terms: tuple[float, str], name: str = "") -> Observable:
    return Observable(terms=[PauliTerm(coeff=c, pauli=p) for c, p in terms], name=name)


def _empty(n: int) -> Circuit:
    return Circuit(num_qubits=n)


# ------------------------------------------------------- reference, closed forms


def test_reference_matches_closed_forms():
    times = list(np.linspace(0.0, 3.0, 13))
    gamma, h = 0.4, 0.9
    # Dephasing L = sqrt(γ) Z on |+>: coherence decays at 2γ, so <X>(t) = exp(-2γt).
    plus = Circuit(num_qubits=1, ops=(Op(name="h", qubits=(0,)),))
    spec = DynamicsSpec(
        hamiltonian=_obs(),
        times=times,
        observables=[_obs((1.0, "X0"))],
        collapse=[CollapseOperator(kind="dephasing", rate=gamma, qubit=0)],
    )
    got = lindblad.reference_dynamics(plus, spec).values[0]
    assert got == pytest.approx(np.exp(-2 * gamma * np.array(times)), abs=1e-12)
    # Decay L = sqrt(γ) σ⁻ from |1>: P(1) = exp(-γt), so <Z> = 1 - 2 exp(-γt).
    one = Circuit(num_qubits=1, ops=(Op(name="x", qubits=(0,)),))
    spec = DynamicsSpec(
        hamiltonian=_obs(),
        times=times,
        observables=[_obs((1.0, "Z0"))],
        collapse=[CollapseOperator(kind="decay", rate=gamma, qubit=0)],
    )
    got = lindblad.reference_dynamics(one, spec).values[0]
    assert got == pytest.approx(1 - 2 * np.exp(-gamma * np.array(times)), abs=1e-12)
    # Closed: H = h X from |0>: <Z>(t) = cos(2ht), <Y>(t) = -sin(2ht).
    spec = DynamicsSpec(
        hamiltonian=_obs((h, "X0")), times=times, observables=[_obs((1.0, "Z0")), _obs((1.0, "Y0"))]
    )
    z, y = lindblad.reference_dynamics(_empty(1), spec).values
    assert z == pytest.approx(np.cos(2 * h * np.array(times)), abs=1e-12)
    assert y == pytest.approx(-np.sin(2 * h * np.array(times)), abs=1e-12)


def _random_spec(rng: np.random.Generator, n: int, open_system: bool) -> DynamicsSpec:
    letters = "XYZ"

    def pauli(k: int) -> str:
        qubits = rng.choice(n, size=k, replace=False)
        return " ".join(f"{letters[rng.integers(3)]}{q}" for q in qubits)

    hamiltonian = _obs(*[(float(rng.normal()), pauli(int(rng.integers(1, 3)))) for _ in range(5)])
    collapse = []
    if open_system:
        collapse = [
            CollapseOperator(kind="dephasing", rate=0.1, qubit=0),
            CollapseOperator(kind="decay", rate=0.2, qubit=n - 1),
            CollapseOperator(kind="excitation", rate=0.05, qubit=1),
            CollapseOperator(kind="pauli", rate=0.07, pauli=pauli(2)),
        ]
    observables = [_obs((1.0, pauli(1))), _obs((0.5, pauli(2)), (-1.0, pauli(1)))]
    times = sorted(float(t) for t in rng.uniform(0, 4, size=9))
    return DynamicsSpec(
        hamiltonian=hamiltonian, times=[0.0, *times], observables=observables, collapse=collapse
    )


def _qutip_operator(factors: dict[int, str], n: int) -> qutip.Qobj:
    single = {"X": qutip.sigmax(), "Y": qutip.sigmay(), "Z": qutip.sigmaz()}
    return qutip.tensor(
        [single.get(factors.get(q, "I"), qutip.qeye(2)) for q in reversed(range(n))]
    )


def _qutip_observable(obs: Observable, n: int) -> qutip.Qobj:
    out = 0 * qutip.qeye([2] * n)
    for t in obs.terms:
        out = out + t.coeff * _qutip_operator({q: p for p, q in t.factors()}, n)
    return out


def _qutip_collapse(c: CollapseOperator, n: int) -> qutip.Qobj:
    # Built independently of qbus: qutip's destroy(2) is |0><1| in its Fock basis, where
    # sigmaz() = diag(1, -1) has |0> as its +1 state, the IR's convention.
    if c.kind == "pauli":
        op = _qutip_operator({q: p for p, q in c.factors()}, n)
    else:
        single = {
            "dephasing": qutip.sigmaz(),
            "decay": qutip.destroy(2),
            "excitation": qutip.create(2),
        }
        op = qutip.tensor(
            [single[c.kind] if q == c.qubit else qutip.qeye(2) for q in reversed(range(n))]
        )
    return np.sqrt(c.rate) * op


@pytest.mark.parametrize("open_system", [True, False])
@pytest.mark.parametrize("n", [2, 3])
def test_liouvillian_reference_matches_qutip_mesolve(n: int, open_system: bool):
    rng = np.random.default_rng(10 * n + open_system)
    spec = _random_spec(rng, n, open_system)
    # A random product initial state from the circuit.
    ops = tuple(
        Op(name="u", qubits=(q,), params=tuple(float(x) for x in rng.uniform(0, 3, size=3)))
        for q in range(n)
    )
    circuit = Circuit(num_qubits=n, ops=ops)
    ref = lindblad.reference_dynamics(circuit, spec)
    from qbus.engines.reference import statevector

    psi = qutip.Qobj(statevector(circuit).reshape(-1, 1), dims=[[2] * n, [1] * n])
    rho0 = qutip.ket2dm(psi)
    result = qutip.mesolve(
        _qutip_observable(spec.hamiltonian, n),
        rho0,
        spec.times,
        c_ops=[_qutip_collapse(c, n) for c in spec.collapse],
        e_ops=[_qutip_observable(o, n) for o in spec.observables],
        options={"atol": 1e-12, "rtol": 1e-10},
    )
    for k, expect in enumerate(result.expect):
        assert ref.values[k] == pytest.approx(np.real(expect), abs=1e-7)
    # The evolution is not trivial: values move over time.
    assert max(np.ptp(v) for v in ref.values) > 0.05


def test_liouvillian_is_trace_preserving():
    n = 2
    h = lindblad.observable_matrix(_obs((0.7, "X0 X1"), (0.3, "Z1")), n)
    ops = [
        lindblad.collapse_matrix(CollapseOperator(kind="decay", rate=0.3, qubit=0), n),
        lindblad.collapse_matrix(CollapseOperator(kind="pauli", rate=0.2, pauli="Y0 Z1"), n),
    ]
    generator = lindblad.liouvillian(h, ops)
    # d/dt Tr(ρ) = 0 for every ρ: the row-vector vec(I) annihilates the generator.
    trace_row = np.eye(1 << n).reshape(-1)
    assert np.abs(trace_row @ generator.toarray()).max() < 1e-12


# ------------------------------------------------------------------- the engine


@pytest.mark.parametrize("name", ["qutip", "jax"])
def test_dynamics_engines_match_the_reference(name: str):
    rng = np.random.default_rng(5)
    engine = get_engine(name)
    assert "dynamics" in engine.capabilities.methods
    for n, open_system in [(3, True), (4, False), (2, True)]:
        spec = _random_spec(rng, n, open_system)
        circuit = Circuit(
            num_qubits=n, ops=(Op(name="h", qubits=(0,)), Op(name="cx", qubits=(0, 1)))
        )
        result = engine.run(RunRequest(circuit=circuit, method="dynamics", dynamics=spec))
        exact = lindblad.reference_dynamics(circuit, spec)
        verdict = check_dynamics(result.dynamics, exact, spec)
        assert verdict.verdict == "pass", verdict
        assert verdict.statistic < 1e-8


def test_jax_refuses_wide_open_systems():
    spec = DynamicsSpec(
        hamiltonian=_obs((1.0, "X0")),
        times=[0, 1],
        observables=[_obs((1.0, "Z0"))],
        collapse=[CollapseOperator(kind="dephasing", rate=0.1, qubit=0)],
    )
    engine = get_engine("jax")
    with pytest.raises(EngineError) as err:
        engine.validate(RunRequest(circuit=_empty(6), method="dynamics", dynamics=spec))
    assert err.value.code == "too_many_qubits"
    closed = DynamicsSpec(hamiltonian=spec.hamiltonian, times=[0, 1], observables=spec.observables)
    engine.validate(RunRequest(circuit=_empty(6), method="dynamics", dynamics=closed))


def test_engines_without_dynamics_refuse_it():
    spec = DynamicsSpec(
        hamiltonian=_obs((1.0, "X0")), times=[0, 1], observables=[_obs((1.0, "Z0"))]
    )
    for name in ("qiskit-aer", "reference", "cirq"):
        with pytest.raises(EngineError) as err:
            get_engine(name).validate(
                RunRequest(circuit=_empty(1), method="dynamics", dynamics=spec)
            )
        assert err.value.code == "unsupported_method"
    with pytest.raises(EngineError) as err:
        get_engine("qutip").validate(RunRequest(circuit=_empty(1), method="dynamics"))
    assert err.value.code == "invalid_dynamics"


def test_check_dynamics_fails_wrong_values():
    spec = DynamicsSpec(
        hamiltonian=_obs((1.0, "X0")), times=[0, 1], observables=[_obs((2.0, "Z0"))]
    )
    exact = DynamicsResult(times=[0, 1], values=[[1.0, 0.5]])
    assert check_dynamics(exact, exact, spec).verdict == "pass"
    off = DynamicsResult(times=[0, 1], values=[[1.0, 0.5 + 1e-4]])
    assert check_dynamics(off, exact, spec).verdict == "fail"
    nan = DynamicsResult(times=[0, 1], values=[[1.0, float("nan")]])
    assert check_dynamics(nan, exact, spec).verdict == "fail"
    short = DynamicsResult(times=[0, 1], values=[[1.0]])
    assert check_dynamics(short, exact, spec).verdict == "fail"


def test_dynamics_enter_the_result_hash_only_when_present():
    base = dict(
        circuit_hash="sha256:x", engine="e", engine_version="1", method="dynamics", shots=1, seed=1
    )
    a = DynamicsResult(times=[0.0, 1.0], values=[[1.0, 0.5]])
    b = DynamicsResult(times=[0.0, 1.0], values=[[1.0, 0.25]])
    assert result_hash(**base) == result_hash(**base, dynamics=None)
    assert (
        len({result_hash(**base), result_hash(**base, dynamics=a), result_hash(**base, dynamics=b)})
        == 3
    )


# ---------------------------------------------------- acceptance, through the bus

N_SPINS, J, H_FIELD, GAMMA = 4, 1.0, 0.8, 0.05
TIMES = [float(t) for t in np.linspace(0.0, 4.0, 50)]


def _ising_spec() -> DynamicsSpec:
    """H = -J Σ Z_i Z_{i+1} - h Σ X_i with dephasing on every spin."""
    terms = [(-J, f"Z{i} Z{i + 1}") for i in range(N_SPINS - 1)]
    terms += [(-H_FIELD, f"X{i}") for i in range(N_SPINS)]
    return DynamicsSpec(
        hamiltonian=_obs(*terms),
        times=TIMES,
        observables=[
            _obs(*[(1.0 / N_SPINS, f"Z{i}") for i in range(N_SPINS)], name="magnetisation"),
            _obs((1.0, "Z1 Z2"), name="zz"),
        ],
        collapse=[CollapseOperator(kind="dephasing", rate=GAMMA, qubit=i) for i in range(N_SPINS)],
    )


def _direct_qutip_reference() -> list[np.ndarray]:
    """The same model written directly in QuTiP (site 0 first), from |0000>."""
    n = N_SPINS

    def site(op: qutip.Qobj, i: int) -> qutip.Qobj:
        return qutip.tensor([op if k == i else qutip.qeye(2) for k in range(n)])

    sz, sx = qutip.sigmaz(), qutip.sigmax()
    h = sum(-J * site(sz, i) * site(sz, i + 1) for i in range(n - 1))
    h = h + sum(-H_FIELD * site(sx, i) for i in range(n))
    c_ops = [np.sqrt(GAMMA) * site(sz, i) for i in range(n)]
    magnetisation = sum(site(sz, i) for i in range(n)) / n
    zz = site(sz, 1) * site(sz, 2)
    psi0 = qutip.tensor([qutip.basis(2, 0)] * n)
    result = qutip.mesolve(
        h,
        psi0,
        TIMES,
        c_ops=c_ops,
        e_ops=[magnetisation, zz],
        options={"atol": 1e-12, "rtol": 1e-10},
    )
    return [np.real(np.asarray(e)) for e in result.expect]


async def test_ising_chain_with_dephasing_through_the_bus_matches_qutip(bus: Bus, config):
    spec = _ising_spec()
    empty = f'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[{N_SPINS}] q;\n'
    async with Pipeline(config, engines=("qutip", "jax")) as pipeline:
        final, on_jax = await run_jobs(
            bus,
            [
                job(empty, method="dynamics", engine="qutip", dynamics=spec),
                job(empty, method="dynamics", engine="jax", dynamics=spec),
            ],
            timeout=120,
        )
        # engine "auto" routes a dynamics job to qutip.
        (auto,) = await run_jobs(bus, [job(empty, method="dynamics", dynamics=spec)], timeout=120)
        pipeline.check()
    assert isinstance(final, JobCompleted), final
    assert final.engine == "qutip"
    assert final.verification.test == "dynamics"
    assert final.verification.verdict == "pass", final.verification
    assert final.dynamics is not None and final.dynamics.times == TIMES
    magnetisation, zz = _direct_qutip_reference()
    assert len(magnetisation) == 50
    assert np.max(np.abs(np.array(final.dynamics.values[0]) - magnetisation)) < 1e-6
    assert np.max(np.abs(np.array(final.dynamics.values[1]) - zz)) < 1e-6
    # Dephasing and the field act: the magnetisation leaves its initial value 1.
    assert magnetisation[0] == pytest.approx(1.0) and min(magnetisation) < 0.5
    assert isinstance(auto, JobCompleted) and auto.engine == "qutip"
    assert auto.dynamics == final.dynamics
    # Our JAX engine (exact propagators) on the same job agrees too.
    assert isinstance(on_jax, JobCompleted), on_jax
    assert on_jax.verification.verdict == "pass", on_jax.verification
    assert np.max(np.abs(np.array(on_jax.dynamics.values[1]) - zz)) < 1e-6


async def test_bad_dynamics_jobs_are_rejected(bus: Bus, config):
    good = _ising_spec()
    two = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nh q[0];\n'
    z0 = [_obs((1.0, "Z0"))]
    bad_specs = [
        None,
        DynamicsSpec(hamiltonian=_obs((1.0, "X0")), times=[0.0, 2.0, 1.0], observables=z0),
        DynamicsSpec(hamiltonian=_obs((1.0, "X5")), times=[0.0, 1.0], observables=z0),
        DynamicsSpec(hamiltonian=_obs((1.0, "X0")), times=[0.0, 1.0], observables=[]),
        DynamicsSpec(
            hamiltonian=_obs((1.0, "X0")),
            times=[0.0, 1.0],
            observables=z0,
            collapse=[CollapseOperator(kind="decay", rate=0.1)],
        ),
        DynamicsSpec(
            hamiltonian=_obs((1.0, "X0")),
            times=[0.0, 1.0],
            observables=z0,
            collapse=[CollapseOperator(kind="melt", rate=0.1, qubit=0)],
        ),
    ]
    async with Pipeline(config, engines=("qutip", "cirq")) as pipeline:
        jobs = [job(two, method="dynamics", engine="qutip", dynamics=s) for s in bad_specs]
        jobs.append(
            job(two + "bit[2] c;\nc = measure q;\n", dynamics=good)
        )  # a spec on a sample job
        jobs.append(
            job(
                two,
                method="dynamics",
                engine="cirq",
                dynamics=DynamicsSpec(
                    hamiltonian=_obs((1.0, "X0")), times=[0.0, 1.0], observables=z0
                ),
            )
        )
        finals = await run_jobs(bus, jobs, timeout=120)
        pipeline.check()
    got = [(type(f).__name__, f.code, getattr(f, "where", None)) for f in finals]
    assert got == [
        ("JobRejected", "invalid_dynamics", "$.dynamics"),
        ("JobRejected", "invalid_dynamics", "$.dynamics.times[2]"),
        ("JobRejected", "invalid_dynamics", "$.dynamics.hamiltonian.terms[0].pauli"),
        ("JobRejected", "invalid_dynamics", "$.dynamics.observables"),
        ("JobRejected", "invalid_dynamics", "$.dynamics.collapse[0].qubit"),
        ("JobRejected", "invalid_dynamics", "$.dynamics.collapse[0].kind"),
        ("JobRejected", "invalid_dynamics", "$.dynamics"),
        ("JobFailed", "unsupported_method", None),
    ]
    assert all(isinstance(f, (JobRejected, JobFailed)) for f in finals)


async def test_cli_submits_a_dynamics_job(config, bus: Bus, tmp_path):
    from tests.test_cli import aqbus

    spec = DynamicsSpec(
        hamiltonian=_obs((0.5, "X0")),
        times=[0.0, 0.5, 1.0],
        observables=[_obs((1.0, "Z0"))],
        collapse=[CollapseOperator(kind="decay", rate=0.1, qubit=0)],
    )
    spec_file = tmp_path / "spec.json"
    spec_file.write_bytes(msgspec.json.encode(spec))
    program = tmp_path / "one.qasm"
    program.write_text('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[1] q;\n')
    async with Pipeline(config, engines=("qutip",)) as pipeline:
        out = await aqbus(
            "submit", str(program), "--dynamics", str(spec_file), "--wait", url=config.bus.url
        )
        pipeline.check()
    assert out.returncode == 0, out.stderr
    assert "completed on qutip" in out.stdout
    assert "dynamics: 3 times x 1 observable(s)" in out.stdout
    assert "verification: PASS (dynamics)" in out.stdout
