"""Job templates (issue 5): schema, shipped templates, and runs through the real bus.

Every run goes through a real nats-server and every stage (ingest, rewrite, route,
execute, verify, audit): the VQE template on two engines, QAOA, BB84 with and without
Eve, the dynamics template (checked against an independent Lindblad integration), and
``qbus run`` as a separate process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from qbus.bus.config import Config
from qbus.bus.connection import Bus
from qbus.client import SyncClient
from qbus.consumers.pipeline import Pipeline
from qbus.errors import CircuitError, SchemaError
from qbus.frontends.job_template import Ansatz, JobTemplate, to_observable, validate_template
from qbus.frontends.qasm import parse_qasm
from qbus.producers.ansatz import check_parameter_shift, hardware_efficient
from qbus.producers.qaoa import brute_force_max_cut
from qbus.producers.template_result import TemplateResult
from qbus.producers.templates import TEMPLATES_DIR, load_template, run_template
from qbus.producers.vqe import ground_energy, pauli_matrix

pytestmark = pytest.mark.timeout(300)

H2_EXACT = -1.1373060357  # FCI energy of H2/STO-3G at 0.735 Å, Hartree
SHIPPED = ("h2_vqe", "tfim_dynamics", "qaoa_maxcut", "bb84")


# ------------------------------------------------------------------------ no bus


def test_every_shipped_template_validates() -> None:
    found = sorted(p.stem for p in TEMPLATES_DIR.glob("*.yaml"))
    assert found == sorted(SHIPPED)
    methods = {name: load_template(name).method for name in SHIPPED}
    assert methods == {
        "h2_vqe": "vqe",
        "tfim_dynamics": "dynamics",
        "qaoa_maxcut": "qaoa",
        "bb84": "bb84",
    }
    # The package data is what an installed qbus reads: the files live in the package.
    assert TEMPLATES_DIR.parent.name == "qbus"


def test_h2_hamiltonian_has_the_literature_ground_energy() -> None:
    template = load_template("h2_vqe")
    observable = to_observable(template.hamiltonian)
    # Independently of pauli_matrix: the matrix written out with np.kron.
    eye, x, z = np.eye(2), np.array([[0, 1], [1, 0]]), np.diag([1.0, -1.0])
    coeff = {t.pauli: t.coeff for t in template.hamiltonian if t.pauli}
    identity = sum(t.coeff for t in template.hamiltonian if not t.pauli)
    # Qubit 0 is the right-hand factor (least significant bit).
    h = (
        identity * np.kron(eye, eye)
        + coeff["Z0"] * np.kron(eye, z)
        + coeff["Z1"] * np.kron(z, eye)
        + coeff["Z0 Z1"] * np.kron(z, z)
        + coeff["X0 X1"] * np.kron(x, x)
    )
    exact = np.linalg.eigvalsh(h)[0]
    assert exact == pytest.approx(H2_EXACT, abs=1e-8)
    assert ground_energy(observable, 2) == pytest.approx(exact, abs=1e-12)
    assert np.allclose(pauli_matrix(observable, 2), h)
    # The nuclear repulsion term is 1/R at R = 0.735 Å in bohr.
    assert identity - (-1.052373245772859) == pytest.approx(0.529177210903 / 0.735, abs=1e-12)
    # Without it the electronic energy is what the bare coefficients give.
    assert exact - 0.529177210903 / 0.735 == pytest.approx(-1.8572750302, abs=1e-8)


BROKEN = {
    # YAML fragment → (field path, part of the message)
    "on_job: {method: vqe}\nansatz: {kind: hardware_efficient, qubits: 2}\n": (
        "$.hamiltonian",
        "needs 'hamiltonian'",
    ),
    "on_job: {method: vqe}\nansatz: {kind: hardware_efficient, qubits: 2, depth: 3}\n": (
        "$.ansatz",
        "unknown field `depth`",
    ),
    "on_job: {method: qaoa}\nqaoa: {edges: [[0, 1], [1, 1]]}\n": (
        "$.qaoa.edges[1]",
        "two different nodes",
    ),
    "on_job: {method: qaoa}\nqaoa: {edges: [[0, 1]], layers: 0}\n": (
        "$.qaoa.layers",
        ">= 1",
    ),
    "on_job: {method: vqe, shots: -5}\n": ("$.on_job.shots", ">= 1"),
    "on_job: {method: bb84}\nbb84: {bits: many}\n": ("$.bb84.bits", "Expected `int`"),
    "on_job: {method: dynamics}\nhamiltonian: [{pauli: Z0, coeff: 1}]\n"
    "dynamics: {qubits: 1, t_final: 1, observables: [{terms: [{pauli: Q0, coeff: 1}]}]}\n": (
        "$.dynamics.observables[0].terms[0]",
        "bad Pauli factor 'Q0'",
    ),
    "on_job: {method: teleport}\n": ("$.on_job", "on_job.method must be one of"),
    "on_job: {method: vqe}\nhamiltonian: [{pauli: Z0, coeff: 1}]\n"
    "ansatz: {kind: hardware_efficient, qubits: 1}\noptimizer: {method: Adam}\n": (
        "$.optimizer",
        "optimizer.method must be one of",
    ),
    "on_job: {method: sample}\noptimizer: {method: COBYLA}\ncircuit: 'OPENQASM 3.0; qubit q;'\n": (
        "$.optimizer",
        "not used by method 'sample'",
    ),
}


@pytest.mark.parametrize("text", list(BROKEN))
def test_broken_templates_are_rejected_with_the_field_path(text: str) -> None:
    where, needle = BROKEN[text]
    with pytest.raises(SchemaError) as info:
        validate_template(text)
    assert info.value.where == where, str(info.value)
    assert needle in str(info.value)
    assert info.value.code == "invalid_schema"


def test_overrides_are_validated_and_circuits_read_from_files(tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as info:
        load_template("h2_vqe", ["optimizer.maxiter=0"])
    assert info.value.where == "$.optimizer.maxiter"
    # YAML 1.1 reads 1e-6 as a string; the schema still takes it as a number.
    assert load_template("h2_vqe", ["optimizer.tol=1e-6"]).optimizer.tol == 1e-6
    assert load_template("h2_vqe", {"on_job.backend": "jax"}).on_job.engine_name == "jax"
    assert load_template("h2_vqe").on_job.engine_name == "qiskit-aer"  # alias
    (tmp_path / "bell.qasm").write_text(
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\nh q[0];\n'
        "cx q[0], q[1];\nc = measure q;\n"
    )
    (tmp_path / "t.yaml").write_text("on_job: {method: sample, shots: 10}\ncircuit: bell.qasm\n")
    template = load_template(tmp_path / "t.yaml")
    assert template.name == "t" and "cx q[0], q[1];" in (template.circuit or "")
    (tmp_path / "gone.yaml").write_text("circuit: missing.qasm\n")
    with pytest.raises(SchemaError, match="cannot read circuit file"):
        load_template(tmp_path / "gone.yaml")
    (tmp_path / "bad.yaml").write_text("circuit: 'OPENQASM 3.0; qubit q; hadamard q;'\n")
    with pytest.raises(CircuitError, match="unknown gate 'hadamard'"):
        load_template(tmp_path / "bad.yaml")


def test_parameter_shift_is_refused_where_it_would_be_wrong() -> None:
    check_parameter_shift(hardware_efficient(Ansatz(kind="hardware_efficient", qubits=3, layers=2)))
    shared = parse_qasm(
        'OPENQASM 3.0;\ninclude "stdgates.inc";\ninput float a;\nqubit[2] q;\n'
        "ry(a) q[0];\nry(a) q[1];\n"
    )[0]
    with pytest.raises(SchemaError, match="'a' is used as") as info:
        check_parameter_shift(shared)
    assert info.value.where == "$.optimizer.method"
    scaled = parse_qasm(
        'OPENQASM 3.0;\ninclude "stdgates.inc";\ninput float a;\nqubit q;\nrx(2*a) q;\n'
    )
    with pytest.raises(SchemaError, match="Use COBYLA"):
        check_parameter_shift(scaled[0])


def test_brute_force_max_cut_on_known_graphs() -> None:
    assert brute_force_max_cut(3, [(0, 1), (1, 2), (0, 2)], [1, 1, 1])[0] == 2
    assert brute_force_max_cut(4, [(0, 1), (1, 2), (2, 3), (3, 0)], [1] * 4)[0] == 4
    prism = load_template("qaoa_maxcut").qaoa
    assert prism is not None
    value, sides = brute_force_max_cut(6, prism.edges, [1.0] * len(prism.edges))
    assert value == 7 and sum(sides[a] != sides[b] for a, b in prism.edges) == 7


# ------------------------------------------------------------------- on the bus


def _lindblad_reference(template) -> dict[str, np.ndarray]:
    """Expectation values by exponentiating the Liouvillian (independent of the engines)."""
    d = template.dynamics
    n = d.qubits
    dim = 2**n
    h = pauli_matrix(to_observable(template.hamiltonian), n)
    eye = np.eye(dim)
    # Row-major vec: vec(A ρ B) = (A ⊗ Bᵀ) vec(ρ).
    liouvillian = -1j * (np.kron(h, eye) - np.kron(eye, h.T))
    for c in d.collapse:
        assert c.kind == "dephasing"
        op = np.sqrt(c.rate) * pauli_matrix(to_observable_single("Z", c.qubit), n)
        ldl = op.conj().T @ op
        liouvillian += np.kron(op, op.conj()) - 0.5 * np.kron(ldl, eye) - 0.5 * np.kron(eye, ldl.T)
    rho0 = np.zeros((dim, dim), dtype=complex)
    rho0[0, 0] = 1.0
    out = {}
    times = d.report_times()
    for o in d.observables:
        m = pauli_matrix(to_observable(o.terms), n)
        values = []
        for t in times:
            rho = (scipy.linalg.expm(liouvillian * t) @ rho0.reshape(-1)).reshape(dim, dim)
            values.append(np.trace(m @ rho).real)
        out[o.name] = np.array(values)
    return out


def run_on(template: JobTemplate, url: str, **options: object) -> TemplateResult:
    """``run_template`` on a client of its own (what ``qbus run`` does)."""
    with SyncClient(url) as client:
        return run_template(template, client=client, **options)


def to_observable_single(letter: str, qubit: int):
    from qbus.schemas.pauli import Observable, PauliTerm

    return Observable(terms=[PauliTerm(coeff=1.0, pauli=f"{letter}{qubit}")])


async def test_vqe_reaches_the_h2_ground_energy_on_two_engines_and_dynamics_runs(
    config: Config, bus: Bus
) -> None:
    url = config.bus.url
    async with Pipeline(config, engines=("qiskit-aer", "jax", "qutip")) as pipeline:
        results = {}
        for engine in ("qiskit-aer", "jax"):
            template = load_template("h2_vqe", {"optimizer.maxiter": 30})
            lines: list[str] = []
            results[engine] = await asyncio.to_thread(
                run_on, template, url=url, engine=engine, progress=lines.append
            )
            assert any(line.startswith("iter ") for line in lines)
        dynamics_template = load_template("tfim_dynamics", {"dynamics.steps": 20})
        dynamics = await asyncio.to_thread(run_on, dynamics_template, url=url)
        pipeline.check()
    for engine, result in results.items():
        s = result.summary
        assert result.engines_used == [engine]
        assert abs(s["energy"] - H2_EXACT) < 1e-3, (engine, s["energy"])
        assert s["exact"] == pytest.approx(H2_EXACT, abs=1e-8)
        # One sweep job per evaluation, and the trajectory ends at the reported energy.
        assert result.jobs == s["evaluations"] and s["iterations"] >= 2
        assert s["trajectory"][-1] == pytest.approx(s["energy"], abs=1e-9)
        assert s["trajectory"][-1] < s["trajectory"][0]
    assert dynamics.engines_used == ["qutip"] and dynamics.jobs == 1
    reference = _lindblad_reference(dynamics_template)
    got = dynamics.summary["observables"]
    assert set(got) == {"mz", "mx", "z0z1"}
    for name, values in reference.items():
        assert np.allclose(got[name], values, atol=1e-3), name
    assert got["mz"][0] == pytest.approx(1.0) and got["mz"][-1] < 0.0  # the quench decays


BELL_TEMPLATE = """
on_job: {backend: qiskit, method: METHOD, shots: 400, seed: 9}
circuit: |
  OPENQASM 3.0;
  include "stdgates.inc";
  input float t;
  qubit[2] q;
  bit[2] c;
  ry(t) q[0];
  cx q[0], q[1];
  c = measure q;
parameters: {t: 1.5707963267948966}
hamiltonian: [{pauli: "ZZ", coeff: 1.0}, {pauli: "XX", coeff: 0.5}]
"""


async def test_qaoa_and_bb84_run_end_to_end(config: Config, bus: Bus) -> None:
    url = config.bus.url
    async with Pipeline(config) as pipeline:
        sample = await asyncio.to_thread(
            run_on, validate_template(BELL_TEMPLATE.replace("METHOD", "sample")), url=url
        )
        expectation = await asyncio.to_thread(
            run_on,
            validate_template(BELL_TEMPLATE.replace("METHOD", "expectation")),
            url=url,
        )
        qaoa = await asyncio.to_thread(
            run_on, load_template("qaoa_maxcut", {"optimizer.maxiter": 40}), url=url
        )
        with_eve = await asyncio.to_thread(run_on, load_template("bb84"), url=url)
        without = await asyncio.to_thread(
            run_on, load_template("bb84", ["bb84.eavesdropper=false"]), url=url
        )
        pipeline.check()
    counts = sample.summary["counts"]
    assert sum(counts.values()) == 400 and set(counts) == {"00", "11"}
    # ry(π/2)·cx gives a Bell state: ⟨ZZ⟩ = 1, ⟨XX⟩ = 1.
    assert expectation.summary["expectations"] == pytest.approx([1.5], abs=1e-9)
    assert sample.jobs == expectation.jobs == 1
    q = qaoa.summary
    assert q["max_cut"] == 7 and q["nodes"] == 6
    assert q["best_cut"] >= 6 and q["approximation_ratio"] >= 6 / 7
    # Random assignment averages half the edges (ratio 4.5/7 = 0.64); p=2 QAOA beats it.
    assert q["expected_approximation_ratio"] >= 0.75
    assert q["shots"] == 2000 and qaoa.jobs == q["evaluations"] + 1
    for result, jobs in ((with_eve, 32), (without, 16)):
        s = result.summary
        assert result.jobs == jobs and s["bits_sent"] == 256
        assert 256 * 0.35 < s["sifted_key_length"] < 256 * 0.65
    assert without.summary["qber"] < 0.02
    assert with_eve.summary["qber"] > 0.15
    # Same seeds: Alice's bases, so the sifted positions, are the same in both runs.
    assert with_eve.summary["sifted_key_length"] == without.summary["sifted_key_length"]


async def test_qbus_run_cli(config: Config, bus: Bus, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "qbus", "--url", config.bus.url, "run"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("on_job: {method: qaoa}\nqaoa: {edges: [[0, 1]], weights: [1, 2]}\n")
    async with Pipeline(config) as pipeline:
        ok = await asyncio.to_thread(
            subprocess.run,
            [*base, "bb84", "--set", "bb84.bits=48", "--set", "bb84.eavesdropper=false", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        text = await asyncio.to_thread(
            subprocess.run,
            [*base, "bb84", "--set", "bb84.bits=32"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        pipeline.check()
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["method"] == "bb84" and doc["engines_used"] == ["qiskit-aer"]
    assert doc["summary"]["qber"] == 0.0 and doc["jobs"] == 3
    assert "Bob measured 48 qubits" in ok.stderr  # progress on stderr
    assert text.returncode == 0, text.stderr
    assert "== bb84: bb84, 4 job(s) on qiskit-aer" in text.stdout and "QBER = " in text.stdout
    bad = subprocess.run([*base, str(broken)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "[invalid_schema]" in bad.stderr and "$.qaoa.weights" in bad.stderr
    check = subprocess.run([*base, "qaoa_maxcut", "--check"], capture_output=True, text=True)
    assert check.returncode == 0 and "valid (qaoa template 'qaoa-maxcut')" in check.stdout
