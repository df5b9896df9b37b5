"""The jax engine against the reference: gates, random circuits, sampling, jit cache, sweep."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

from qbus.engines import reference
from qbus.engines.base import RunRequest
from qbus.engines.jax_engine import JaxEngine, _plan, structure_of
from qbus.errors import CircuitError, EngineError
from qbus.schemas.gates import GATES
from qbus.schemas.ir import Circuit, Op
from qbus.verifier.statistics import check_counts, check_statevector
from tests.circuits import random_circuit


@pytest.fixture(scope="module")
def engine() -> JaxEngine:
    return JaxEngine()


def _fidelity(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(np.vdot(a, b)) ** 2)


@pytest.mark.parametrize("name", sorted(GATES))
def test_each_gate_alone_matches_reference(engine: JaxEngine, name: str) -> None:
    rng = np.random.default_rng(sum(map(ord, name)))
    spec = GATES[name]
    # A random product state first, so every matrix entry matters.
    ops = [Op(name="u", qubits=(q,), params=tuple(rng.uniform(-3, 3, 3))) for q in range(3)]
    qubits = tuple(int(q) for q in rng.permutation(3)[: spec.num_qubits])
    ops.append(Op(name=name, qubits=qubits, params=tuple(rng.uniform(-6, 6, spec.num_params))))
    circuit = Circuit(num_qubits=3, ops=tuple(ops))
    result = engine.run(RunRequest(circuit=circuit, method="statevector"))
    assert result.statevector.dtype == np.complex128
    check = check_statevector(result.statevector, reference.statevector(circuit))
    assert check.verdict == "pass", check


def test_random_circuits_match_reference(engine: JaxEngine) -> None:
    rng = np.random.default_rng(7)
    for i in range(30):
        n = 1 + i % 10
        circuit = random_circuit(rng, n, 25, full_barriers=True)
        got = engine.run(RunRequest(circuit=circuit, method="statevector")).statevector
        assert _fidelity(got, reference.statevector(circuit)) >= 1 - 1e-6, (i, circuit)


def test_unfused_and_complex64_agree(engine: JaxEngine) -> None:
    circuit = random_circuit(np.random.default_rng(3), 6, 40, full_barriers=True)
    exact = reference.statevector(circuit)
    for other in (JaxEngine(max_fused_qubits=1), JaxEngine("complex64")):
        assert _fidelity(other.statevector(circuit), exact) >= 1 - 1e-5


def test_plan_fuses_ladder_into_few_blocks() -> None:
    ops = [Op(name="ry", qubits=(q,), params=(0.1,)) for q in range(8)]
    ops += [Op(name="cx", qubits=(q, q + 1)) for q in range(7)]
    blocks = _plan(structure_of(Circuit(num_qubits=8, ops=tuple(ops))), 4)
    assert [b[0] for b in blocks] == [(0, 1, 2, 3), (3, 4, 5, 6), (6, 7)]
    assert sum(len(b[1]) for b in blocks) == len(ops)


def test_plan_lets_a_gate_join_an_earlier_block_that_nothing_touched_since() -> None:
    # cz(1, 2) joins the {0, 1} block although a block on {5, 6} was started after it:
    # nothing between them touched qubits 0-2. The ry on 6 stays in the {5, 6} block, which
    # cx(6, 2) then joins (it runs after the {0, 1, 2} block); the lone h packs at the end.
    ops = [
        Op(name="cz", qubits=(0, 1)),
        Op(name="cz", qubits=(5, 6)),
        Op(name="ry", qubits=(6,), params=(0.3,)),
        Op(name="cz", qubits=(1, 2)),
        Op(name="cx", qubits=(2, 0)),
        Op(name="h", qubits=(3,)),
        Op(name="cx", qubits=(6, 2)),
    ]
    circuit = Circuit(num_qubits=7, ops=tuple(ops))
    blocks = _plan(structure_of(circuit), 3)
    assert [b[0] for b in blocks] == [(0, 1, 2), (2, 5, 6), (3,)]
    assert [[g.name for g in b[1]] for b in blocks] == [
        ["cz", "cz", "cx"],
        ["cz", "ry", "cx"],
        ["h"],
    ]
    exact = reference.statevector(circuit)
    assert _fidelity(JaxEngine().statevector(circuit), exact) >= 1 - 1e-12


def test_ghz5_sampling_passes_chi_square(engine: JaxEngine) -> None:
    ops = [Op(name="h", qubits=(0,))] + [Op(name="cx", qubits=(q, q + 1)) for q in range(4)]
    ops += [Op(name="measure", qubits=(q,), clbits=(q,)) for q in range(5)]
    circuit = Circuit(num_qubits=5, num_clbits=5, ops=tuple(ops))
    shots = 4000
    result = engine.run(RunRequest(circuit=circuit, shots=shots, seed=11))
    assert set(result.counts) == {"00000", "11111"}
    check = check_counts(result.counts, reference.probabilities(circuit), shots)
    assert check.verdict == "pass", check
    again = engine.run(RunRequest(circuit=circuit, shots=shots, seed=11))
    assert again.counts == result.counts


def test_sampling_marginalises_to_clbits(engine: JaxEngine) -> None:
    # x on qubit 1 only, measured into clbit 2 of 3; qubit 0 unmeasured.
    ops = (
        Op(name="x", qubits=(1,)),
        Op(name="h", qubits=(0,)),
        Op(name="measure", qubits=(1,), clbits=(2,)),
    )
    circuit = Circuit(num_qubits=2, num_clbits=3, ops=ops)
    assert engine.run(RunRequest(circuit=circuit, shots=50)).counts == {"100": 50}


def test_mid_circuit_measurement_is_rejected(engine: JaxEngine) -> None:
    ops = (
        Op(name="measure", qubits=(0,), clbits=(0,)),
        Op(name="x", qubits=(0,)),
        Op(name="measure", qubits=(0,), clbits=(0,)),
    )
    circuit = Circuit(num_qubits=1, num_clbits=1, ops=ops)
    with pytest.raises(EngineError) as info:
        engine.run(RunRequest(circuit=circuit))
    assert info.value.code == "mid_circuit_measurement"
    reset = Circuit(num_qubits=1, ops=(Op(name="h", qubits=(0,)), Op(name="reset", qubits=(0,))))
    with pytest.raises(EngineError) as info:
        engine.run(RunRequest(circuit=reset, method="statevector"))
    assert info.value.code == "mid_circuit_measurement"


def _parametrised(n: int = 4) -> Circuit:
    ops = [Op(name="ry", qubits=(q,), params=(f"a{q}",)) for q in range(n)]
    ops += [Op(name="cx", qubits=(q, q + 1)) for q in range(n - 1)]
    ops += [Op(name="rz", qubits=(q,), params=(f"2*a{q} + b",)) for q in range(n)]
    ops.append(Op(name="crx", qubits=(0, n - 1), params=("b",)))
    names = tuple(sorted({f"a{q}" for q in range(n)} | {"b"}))
    return Circuit(num_qubits=n, ops=tuple(ops), parameters=names)


def test_jit_cache_compiles_once_per_structure() -> None:
    engine = JaxEngine()
    circuit = _parametrised()
    for seed in (1, 2):
        values = dict(
            zip(circuit.parameters, np.random.default_rng(seed).uniform(-3, 3, 5), strict=True)
        )
        got = engine.run(
            RunRequest(circuit=circuit, method="statevector", parameters=values)
        ).statevector
        assert _fidelity(got, reference.statevector(circuit, values)) >= 1 - 1e-9
    assert engine.cache_misses == 1
    # Bound numbers of the same structure share the compiled function too.
    bound = Circuit(num_qubits=2, ops=(Op(name="rx", qubits=(0,), params=(0.3,)),))
    other = Circuit(num_qubits=2, ops=(Op(name="rx", qubits=(0,), params=(1.7,)),))
    engine.statevector(bound)
    engine.statevector(other)
    assert engine.cache_misses == 2


def test_sweep_equals_separate_runs(engine: JaxEngine) -> None:
    circuit = _parametrised()
    rng = np.random.default_rng(5)
    sets = [dict(zip(circuit.parameters, rng.uniform(-3, 3, 5), strict=True)) for _ in range(8)]
    states = engine.sweep(circuit, sets)
    assert states.shape == (8, 16)
    probs = engine.sweep(circuit, sets, probabilities=True)
    for values, state, p in zip(sets, states, probs, strict=True):
        single = engine.run(
            RunRequest(circuit=circuit, method="statevector", parameters=values)
        ).statevector
        np.testing.assert_allclose(state, single, atol=1e-10)
        np.testing.assert_allclose(p, np.abs(single) ** 2, atol=1e-10)


def test_sweep_of_bare_names_takes_the_fast_path_and_agrees(engine: JaxEngine) -> None:
    # Only bare names and numbers: the angle matrix is gathered without the evaluator.
    ops = [Op(name="rx", qubits=(q,), params=(f"t{q}",)) for q in range(3)]
    ops += [Op(name="cu", qubits=(0, 2), params=("t1", 0.4, "t0", "t2"))]
    circuit = Circuit(num_qubits=3, ops=tuple(ops), parameters=("t0", "t1", "t2"))
    rng = np.random.default_rng(9)
    sets = [dict(zip(circuit.parameters, rng.uniform(-3, 3, 3), strict=True)) for _ in range(8)]
    for values, state in zip(sets, engine.sweep(circuit, sets), strict=True):
        assert _fidelity(state, reference.statevector(circuit, values)) >= 1 - 1e-9


def test_sweep_checks_every_set(engine: JaxEngine) -> None:
    circuit = _parametrised()
    with pytest.raises(CircuitError) as info:
        engine.sweep(circuit, [{"b": 1.0}])
    assert info.value.code == "unbound_parameter"


def test_capabilities_and_dtype_check() -> None:
    engine = JaxEngine()
    assert engine.name == "jax"
    assert engine.capabilities.device in ("cpu", "gpu")
    assert engine.capabilities.batching
    with pytest.raises(ValueError):
        JaxEngine("float32")


def test_compiled_programs_ask_for_full_precision_products() -> None:
    """TF32 products cost complex64 states 1e-2 of fidelity on an H200: never allow them."""
    import jax
    import jax.numpy as jnp
    import msgspec

    from qbus.engines.jax_precision import highest_precision
    from qbus.engines.jax_sweep import build_sweep_fn
    from qbus.schemas.pauli import Observable

    engine = JaxEngine("complex64")
    circuit = Circuit(
        num_qubits=6,
        ops=tuple(Op(name="ry", qubits=(q,), params=(0.1 * q,)) for q in range(6))
        + tuple(Op(name="cx", qubits=(q, q + 1)) for q in range(5))
        + tuple(Op(name="rx", qubits=(q,), params=(0.2,)) for q in range(6)),
    )
    structure = structure_of(circuit)
    angles = jnp.asarray(engine._angles(circuit, None))
    observables = msgspec.convert(
        [{"terms": [{"coeff": 1.0, "pauli": "X0 Z1"}, {"coeff": 0.5, "pauli": "Y2"}]}],
        list[Observable],
    )
    sweep = jax.jit(highest_precision(build_sweep_fn(structure, "complex64", observables, 8)))
    programs = {
        "statevector": engine._compiled(structure, batched=False).lower(angles),
        "sweep": sweep.lower(jnp.tile(angles, (8, 1))),
    }
    for name, lowered in programs.items():
        text = lowered.as_text()
        dots = text.count("stablehlo.dot_general")
        assert dots > 0, name
        assert text.count("HIGHEST") >= dots, name


_CACHE_PROBE = """
import json, sys
import jax.monitoring
hits = []
jax.monitoring.register_event_listener(
    lambda event, *args, **kwargs: hits.append(event)
    if event == "/jax/compilation_cache/cache_hits" else None
)
import jax
from qbus.engines.base import RunRequest
from qbus.engines.jax_engine import JaxEngine
from qbus.schemas.ir import Circuit, Op
circuit = Circuit(num_qubits=3, ops=(Op(name="h", qubits=(0,)), Op(name="cx", qubits=(0, 2))))
state = JaxEngine().run(RunRequest(circuit=circuit, method="statevector")).statevector
print(json.dumps({"hits": len(hits), "dir": jax.config.jax_compilation_cache_dir}))
"""


def test_compiled_programs_persist_between_processes(tmp_path) -> None:
    import json
    import os
    import subprocess
    import sys

    cache = tmp_path / "jax-cache"
    env = {
        **os.environ,
        "QBUS_JAX_CACHE_DIR": str(cache),
        # JAX keeps only programs whose compile took a second; this one takes less.
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    env.pop("JAX_COMPILATION_CACHE_DIR", None)

    def probe() -> dict:
        out = subprocess.run(
            [sys.executable, "-c", _CACHE_PROBE],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = probe()
    assert first == {"hits": 0, "dir": str(cache)}
    assert any(cache.iterdir()), "the first process stored nothing"
    second = probe()
    assert second["hits"] >= 1, second
