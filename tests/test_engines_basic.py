"""Engines: Aer against the reference, validation before compute, registry, conversion."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.circuit.library import CU3Gate
from qiskit.quantum_info import Statevector

from qbus.engines import registry
from qbus.engines.aer import fusion_order
from qbus.engines.base import Capabilities, Engine, EngineResult, RunRequest
from qbus.engines.convert_qiskit import from_qiskit, to_qiskit
from qbus.engines.reference import ReferenceEngine
from qbus.engines.registry import available_engines, engine_table, get_engine
from qbus.errors import CircuitError, EngineError, MissingOptionalLibraryError, UnknownEngineError
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, Op, circuit_hash
from qbus.schemas.pauli import Observable, PauliTerm
from qbus.verifier.statistics import check_statevector
from tests.circuits import random_circuit

BELL = Circuit(
    num_qubits=2,
    num_clbits=2,
    ops=(
        Op(name="h", qubits=(0,)),
        Op(name="cx", qubits=(0, 1)),
        Op(name="measure", qubits=(0,), clbits=(0,)),
        Op(name="measure", qubits=(1,), clbits=(1,)),
    ),
)


@pytest.fixture(scope="module")
def aer() -> Engine:
    return get_engine("qiskit-aer")


@pytest.fixture(scope="module")
def ref() -> Engine:
    return get_engine("reference")


@pytest.fixture(params=["reference", "qiskit-aer"])
def engine(request: pytest.FixtureRequest) -> Engine:
    return get_engine(request.param)


def test_aer_and_reference_agree_on_statevectors(aer: Engine, ref: Engine) -> None:
    rng = np.random.default_rng(99)
    for n in range(1, 9):
        for _ in range(4):
            circuit = random_circuit(rng, n, depth=5 * n + 5, measure=bool(rng.integers(2)))
            request = RunRequest(circuit=circuit, method="statevector")
            a, r = aer.run(request).statevector, ref.run(request).statevector
            assert a is not None and r is not None
            assert a.dtype == np.complex128 and a.shape == (2**n,)
            assert abs(np.vdot(r, a)) ** 2 >= 1 - 1e-9
            assert check_statevector(a, r, tol=1e-9).verdict == "pass"


def _native_layers(n: int, depth: int, seed: int) -> tuple[Op, ...]:
    """Rotations on every qubit then cx/cz on a random pairing: gates native to Aer."""
    rng = np.random.default_rng(seed)
    ops: list[Op] = []
    for _ in range(depth):
        ops += [
            Op(name=str(rng.choice(["rx", "ry", "rz"])), qubits=(q,), params=(rng.uniform(0, 6),))
            for q in range(n)
        ]
        order = rng.permutation(n)
        ops += [
            Op(name=str(rng.choice(["cx", "cz"])), qubits=(int(a), int(b)))
            for a, b in zip(order[0::2], order[1::2], strict=False)
        ]
    return tuple(ops)


def test_aer_runs_wide_circuits_in_fusion_order_with_the_same_results(
    aer: Engine, ref: Engine
) -> None:
    # From 14 qubits the engine hands Aer the gates in Qiskit's topological order (Aer
    # fuses bigger blocks that way); the state must stay the one of the IR's order.
    circuit = Circuit(num_qubits=16, ops=_native_layers(16, 12, 16))
    request = RunRequest(circuit=circuit, method="statevector")
    prepared = aer._prepared(circuit, {}, True)  # type: ignore[attr-defined]
    in_ir_order = to_qiskit(circuit, measurements=False)
    as_listed = [(i.operation.name, i.qubits) for i in in_ir_order.data]
    reordered = [(i.operation.name, i.qubits) for i in prepared.data[:-1]]
    assert sorted(map(str, reordered)) == sorted(map(str, as_listed))
    assert reordered == [(i.operation.name, i.qubits) for i in fusion_order(in_ir_order).data]
    assert reordered != as_listed
    state = aer.run(request).statevector
    assert state is not None
    assert np.max(np.abs(state - Statevector(in_ir_order).data)) < 1e-12
    assert check_statevector(state, ref.run(request).statevector, tol=1e-9).verdict == "pass"
    # A sweep at that width goes the same way.
    ry = tuple(Op(name="ry", qubits=(q,), params=("t",)) for q in range(14))
    swept = Circuit(num_qubits=14, parameters=("t",), ops=(*_native_layers(14, 8, 14), *ry))
    sweep = RunRequest(
        circuit=swept,
        method="sweep",
        sweep=[{"t": 0.3}, {"t": 1.1}],
        observables=[Observable(terms=[PauliTerm(coeff=1.0, pauli="Z0 Z13")])],
    )
    got = [p.expectations for p in aer.run(sweep).sweep_results or []]
    want = [p.expectations for p in ref.run(sweep).sweep_results or []]
    assert len(got) == 2 and np.allclose(got, want, atol=1e-10)


def test_aer_transpiles_gates_it_lacks(aer: Engine, ref: Engine) -> None:
    # ch is not native to Aer: the engine transpiles that circuit only.
    circuit = Circuit(
        num_qubits=2,
        ops=(Op(name="ry", qubits=(0,), params=(0.7,)), Op(name="ch", qubits=(0, 1))),
    )
    request = RunRequest(circuit=circuit, method="statevector")
    a, r = aer.run(request).statevector, ref.run(request).statevector
    assert abs(np.vdot(r, a)) ** 2 == pytest.approx(1.0, abs=1e-12)


def test_counts_keys_are_padded_clbit_strings(engine: Engine) -> None:
    circuit = Circuit(
        num_qubits=2,
        num_clbits=4,
        ops=(Op(name="x", qubits=(1,)), Op(name="measure", qubits=(1,), clbits=(2,))),
    )
    result = engine.run(RunRequest(circuit=circuit, shots=50, seed=1))
    assert isinstance(result, EngineResult)
    assert result.counts == {"0100": 50}
    assert result.seed == 1
    assert result.run_seconds > 0


def test_same_seed_same_counts(engine: Engine) -> None:
    circuit = random_circuit(np.random.default_rng(5), 4, 20, measure=True)
    first = engine.run(RunRequest(circuit=circuit, shots=500, seed=42)).counts
    assert engine.run(RunRequest(circuit=circuit, shots=500, seed=42)).counts == first
    assert sum(first.values()) == 500  # type: ignore[union-attr]


def test_parameters_are_bound(engine: Engine) -> None:
    circuit = Circuit(
        num_qubits=1,
        num_clbits=1,
        ops=(
            Op(name="rx", qubits=(0,), params=("theta/2",)),
            Op(name="measure", qubits=(0,), clbits=(0,)),
        ),
        parameters=("theta",),
    )
    result = engine.run(RunRequest(circuit=circuit, shots=100, parameters={"theta": 2 * math.pi}))
    assert result.counts == {"1": 100}
    with pytest.raises(CircuitError) as err:
        engine.validate(RunRequest(circuit=circuit, shots=100))
    assert err.value.code == "unbound_parameter"


# --- validation before compute ------------------------------------------------------

WIDE = Circuit(
    num_qubits=40,
    num_clbits=1,
    ops=(Op(name="h", qubits=(39,)), Op(name="measure", qubits=(39,), clbits=(0,))),
)


def _code_of(engine: Engine, request: RunRequest) -> str:
    # Rejected before any state was allocated: a 40-qubit vector would take 16 TiB, so
    # reaching compute would fail with MemoryError, not this error.
    with pytest.raises((EngineError, CircuitError)) as err:
        engine.run(request)
    return err.value.code


def test_unknown_method_is_rejected(engine: Engine) -> None:
    assert _code_of(engine, RunRequest(circuit=WIDE, method="density")) == "unsupported_method"


def test_too_many_qubits_is_rejected(engine: Engine) -> None:
    for method in ("sample", "statevector"):
        assert _code_of(engine, RunRequest(circuit=WIDE, method=method)) == "too_many_qubits"


def test_reference_limit_is_twenty_qubits(ref: Engine) -> None:
    assert ref.capabilities.max_qubits == {"sample": 20, "statevector": 20, "sweep": 20}
    circuit = Circuit(
        num_qubits=21, num_clbits=1, ops=(Op(name="measure", qubits=(0,), clbits=(0,)),)
    )
    assert _code_of(ref, RunRequest(circuit=circuit)) == "too_many_qubits"


def test_sample_without_measurements_is_rejected(engine: Engine) -> None:
    circuit = Circuit(num_qubits=2, ops=(Op(name="h", qubits=(0,)),))
    assert _code_of(engine, RunRequest(circuit=circuit)) == "no_measurements"
    assert _code_of(engine, RunRequest(circuit=BELL, shots=0)) == "invalid_shots"
    assert _code_of(engine, RunRequest(circuit=BELL, seed=-1)) == "invalid_seed"


def test_statevector_needs_terminal_measurements(engine: Engine) -> None:
    circuit = Circuit(
        num_qubits=1,
        num_clbits=1,
        ops=(Op(name="measure", qubits=(0,), clbits=(0,)), Op(name="h", qubits=(0,))),
    )
    request = RunRequest(circuit=circuit, method="statevector")
    assert _code_of(engine, request) == "mid_circuit_measurement"


def test_aer_samples_mid_circuit_measurements(aer: Engine) -> None:
    # Aer runs these shot by shot; the reference samples them by branch enumeration
    # (qbus/engines/branching.py) but has no single final state to return.
    circuit = Circuit(
        num_qubits=1,
        num_clbits=2,
        ops=(
            Op(name="x", qubits=(0,)),
            Op(name="measure", qubits=(0,), clbits=(0,)),
            Op(name="reset", qubits=(0,)),
            Op(name="measure", qubits=(0,), clbits=(1,)),
        ),
    )
    assert aer.run(RunRequest(circuit=circuit, shots=20)).counts == {"01": 20}
    assert ReferenceEngine().run(RunRequest(circuit=circuit, shots=20)).counts == {"01": 20}
    with pytest.raises(EngineError) as err:
        ReferenceEngine().validate(RunRequest(circuit=circuit, method="statevector"))
    assert err.value.code == "mid_circuit_measurement"


class _CliffordOnly(ReferenceEngine):
    """The reference simulator restricted to a few gates: a real engine, smaller set."""

    name = "clifford-only"
    capabilities = Capabilities(
        methods=("sample",), max_qubits={"sample": 5}, gates=("h", "cx", "s")
    )


def test_an_engine_overriding_run_or_validate_is_refused() -> None:
    assert getattr(Engine.run, "__final__", False)  # typing.final, for type checkers
    with pytest.raises(TypeError, match=r"implement _run\(request\) instead"):

        class _Unvalidated(ReferenceEngine):
            name = "unvalidated"

            def run(self, request: RunRequest) -> EngineResult:  # type: ignore[misc]
                return self._run(request)

    with pytest.raises(TypeError, match=r"put extra checks in _check\(request\)"):

        class _OwnChecks(ReferenceEngine):
            name = "own-checks"

            def validate(self, request: RunRequest) -> None:  # type: ignore[misc]
                return None

    # Implementing _run is the way: run still validates first.
    engine = _CliffordOnly()
    circuit = Circuit(num_qubits=1, ops=(Op(name="t", qubits=(0,)),))
    with pytest.raises(EngineError) as err:
        engine.run(RunRequest(circuit=circuit, method="sample"))
    assert err.value.code == "unsupported_gate"


def test_unsupported_gate_is_rejected() -> None:
    engine = _CliffordOnly()
    engine.validate(RunRequest(circuit=BELL))
    circuit = Circuit(
        num_qubits=1,
        num_clbits=1,
        ops=(Op(name="t", qubits=(0,)), Op(name="measure", qubits=(0,), clbits=(0,))),
    )
    with pytest.raises(EngineError) as err:
        engine.validate(RunRequest(circuit=circuit))
    assert err.value.code == "unsupported_gate"
    assert "$.ops[0]" in str(err.value)


# --- registry -----------------------------------------------------------------------


def test_registry_lists_and_caches_engines() -> None:
    assert {"qiskit-aer", "reference"} <= set(available_engines())
    assert get_engine("reference") is get_engine("reference")
    assert get_engine("qiskit-aer").name == "qiskit-aer"
    rows = {row["name"]: row for row in engine_table()}
    assert rows["reference"]["available"] is True
    assert rows["qiskit-aer"]["version"]
    assert {"sample", "statevector"} <= set(rows["qiskit-aer"]["methods"])
    assert rows["reference"]["max_qubits"] == {"sample": 20, "statevector": 20, "sweep": 20}


def test_unknown_engine_lists_installed_ones() -> None:
    with pytest.raises(UnknownEngineError) as err:
        get_engine("no-such-engine")
    message = str(err.value)
    assert "no-such-engine" in message
    assert "qiskit-aer" in message and "reference" in message
    assert err.value.code == "unknown_engine"


def test_missing_dependency_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    # An engine whose module imports a library that is not installed.
    monkeypatch.setitem(registry.BUILTIN_ENGINES, "ghost", "qbus_ghost_engine_module:Ghost")
    with pytest.raises(MissingOptionalLibraryError) as err:
        get_engine("ghost")
    assert "pip install 'qbus[ghost]'" in str(err.value)
    assert isinstance(err.value, ImportError)
    row = next(r for r in engine_table() if r["name"] == "ghost")
    assert row["available"] is False and "pip install" in row["error"]


# --- conversion ---------------------------------------------------------------------


def test_round_trip_through_qiskit_keeps_the_hash() -> None:
    rng = np.random.default_rng(3)
    for n in range(1, 7):
        for _ in range(5):
            circuit = random_circuit(rng, n, depth=30, measure=True)
            assert circuit_hash(from_qiskit(to_qiskit(circuit))) == circuit_hash(circuit)


def test_from_qiskit_decomposes_foreign_gates(ref: Engine) -> None:
    qc = QuantumCircuit(3)
    qc.h([0, 1, 2])
    qc.ccz(0, 1, 2)
    qc.rzx(0.4, 1, 2)
    qc.append(CU3Gate(0.1, 0.2, 0.3), [0, 2])
    circuit = from_qiskit(qc)
    assert {op.name for op in circuit.ops} <= set(GATES)
    ours = ref.run(RunRequest(circuit=circuit, method="statevector")).statevector
    theirs = Statevector(qc).data
    assert abs(np.vdot(theirs, ours)) ** 2 == pytest.approx(1.0, abs=1e-12)


def test_from_qiskit_keeps_unbound_parameters() -> None:
    theta = Parameter("theta")
    qc = QuantumCircuit(1)
    qc.rx(2 * theta, 0)
    circuit = from_qiskit(qc)
    assert circuit.parameters == ("theta",)
    bound = to_qiskit(circuit, {"theta": 0.25})
    assert float(bound.data[0].operation.params[0]) == pytest.approx(0.5)


def test_from_qiskit_rejects_what_the_ir_cannot_hold() -> None:
    qc = QuantumCircuit(1)
    qc.delay(10, 0)
    with pytest.raises(CircuitError) as err:
        from_qiskit(qc)
    assert err.value.code == "unsupported_gate"
    assert err.value.where == "instruction[0]"
