"""The ``quest`` engine: IR -> ``qoqo.Circuit`` -> the QuEST simulator through qoqo-quest.

qoqo and qoqo-quest (``pip install 'qbus[quest]'``) are imported here only; without them,
importing this module raises ``MissingOptionalLibraryError`` with the install hint, which
the registry passes on.

Gate mapping, exact including global phase:

* every one-qubit gate is a ``SingleQubitGate`` built from the reference matrix
  (``e^{iφ}·[[α, -β*], [β, α*]]`` holds any 2×2 unitary, so nothing is approximated);
* ``cx cy cz cp crx swap rzz`` map to qoqo's ``CNOT``, ``ControlledPauliY``,
  ``ControlledPauliZ``, ``ControlledPhaseShift``, ``ControlledRotateX``, ``SWAP`` and
  ``MultiQubitZZ``; ``rxx``/``ryy`` are ``rzz`` in a rotated basis; ``ccx``/``cswap`` are
  expanded into CNOTs and T gates (qoqo-quest 0.19 applies its ``Toffoli`` and
  ``ControlledSWAP`` to the qubits in reverse order: the first argument is the target);
* the other controlled gates (``ch csx cry crz cu``) are built as ``A·CX·B·CX·C`` with a
  phase on the control (the textbook construction from the target's ZYZ angles), because
  QuEST does not run qoqo's ``PragmaControlledCircuit``.

``statevector`` reads QuEST's state with ``PragmaGetStateVector`` (qoqo's order is the
IR's: qubit 0 the least significant bit). ``sample`` lets QuEST draw the shots itself
with ``PragmaRepeatedMeasurement``, seeded through ``Backend.set_random_seed``; QuEST's
generator is process-global, so runs are serialised by a lock to keep a seed's counts
reproducible. Only terminal measurements are accepted.
"""

from __future__ import annotations

import threading
import time
from importlib.metadata import version as _dist_version
from typing import Any

import numpy as np

from qbus.engines.base import Capabilities, Engine, EngineResult, RunRequest, memory_width
from qbus.engines.params import numeric_params
from qbus.engines.reference import clbit_sources, gate_matrix
from qbus.errors import CircuitError, EngineError, MissingOptionalLibraryError
from qbus.schemas.ir import Circuit, Op

try:
    from qoqo import Circuit as QoqoCircuit  # type: ignore[import-not-found]
    from qoqo import operations as qops  # type: ignore[import-not-found]
    from qoqo_quest import Backend  # type: ignore[import-not-found]
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalLibraryError("qoqo-quest", "quest", "the quest engine") from exc

_H = gate_matrix("h")
_S = gate_matrix("s")
_SDG = gate_matrix("sdg")
# QuEST's random generator is global to the process: one run at a time keeps seeds honest.
_RUN_LOCK = threading.Lock()


def _single(qubit: int, m: np.ndarray) -> Any:
    """A ``SingleQubitGate`` equal to the 2×2 unitary ``m``, global phase included."""
    phase = float(np.angle(np.linalg.det(m))) / 2
    v = m * np.exp(-1j * phase)  # in SU(2): [[α, -β*], [β, α*]]
    a, b = complex(v[0, 0]), complex(v[1, 0])
    return qops.SingleQubitGate(qubit, a.real, a.imag, b.real, b.imag, phase)


def _rz(angle: float) -> np.ndarray:
    return np.diag([np.exp(-0.5j * angle), np.exp(0.5j * angle)])


def _ry(angle: float) -> np.ndarray:
    c, s = np.cos(angle / 2), np.sin(angle / 2)
    return np.array([[c, -s], [s, c]], dtype=complex)


def _controlled(control: int, target: int, u: np.ndarray) -> list[Any]:
    """Controlled-``u`` from two CNOTs and one-qubit gates (Nielsen & Chuang, 4.2)."""
    alpha = float(np.angle(np.linalg.det(u))) / 2
    v = u * np.exp(-1j * alpha)  # v = Rz(β)·Ry(γ)·Rz(δ)
    a, b = complex(v[0, 0]), complex(v[1, 0])
    gamma = 2 * np.arctan2(abs(b), abs(a))
    # v[0,0] = e^{-i(β+δ)/2}·cos(γ/2), v[1,0] = e^{i(β-δ)/2}·sin(γ/2); an angle whose
    # factor vanishes is free, and 0 is as good as any.
    sum_bd = -2 * np.angle(a) if abs(a) > 1e-12 else 0.0
    diff_bd = 2 * np.angle(b) if abs(b) > 1e-12 else 0.0
    beta, delta = (sum_bd + diff_bd) / 2, (sum_bd - diff_bd) / 2
    a_m = _rz(beta) @ _ry(gamma / 2)
    b_m = _ry(-gamma / 2) @ _rz(-(delta + beta) / 2)
    c_m = _rz((delta - beta) / 2)
    return [
        _single(target, c_m),
        qops.CNOT(control, target),
        _single(target, b_m),
        qops.CNOT(control, target),
        _single(target, a_m),
        qops.PhaseShiftState1(control, alpha),
    ]


def _two_qubit_rotation(a: int, b: int, theta: float, basis: np.ndarray) -> list[Any]:
    """``exp(-iθ/2 P⊗P)`` for ``P = basis·Z·basis†`` (rxx: basis H; ryy: basis S·H)."""
    back = basis.conj().T
    return [
        _single(a, back),
        _single(b, back),
        qops.MultiQubitZZ([a, b], theta),
        _single(a, basis),
        _single(b, basis),
    ]


def _expand3(op: Op) -> Circuit:
    """``ccx``/``cswap`` as one- and two-qubit IR gates (Qiskit's exact definitions).

    qoqo-quest 0.19 applies ``Toffoli`` and ``ControlledSWAP`` with their qubit arguments
    in the reverse of qoqo's documented order, so they are not used.
    """
    a, b, c = op.qubits
    if op.name == "cswap":  # cx(c, b) · ccx(a, b, c) · cx(c, b)
        inner = _expand3(Op(name="ccx", qubits=(a, b, c))).ops
        ops = (Op(name="cx", qubits=(c, b)), *inner, Op(name="cx", qubits=(c, b)))
    else:
        steps = [
            ("h", (c,)), ("cx", (b, c)), ("tdg", (c,)), ("cx", (a, c)), ("t", (c,)),
            ("cx", (b, c)), ("tdg", (c,)), ("cx", (a, c)), ("t", (b,)), ("t", (c,)),
            ("h", (c,)), ("cx", (a, b)), ("t", (a,)), ("tdg", (b,)), ("cx", (a, b)),
        ]  # fmt: skip
        ops = tuple(Op(name=n, qubits=q) for n, q in steps)
    return Circuit(num_qubits=max(op.qubits) + 1, ops=ops)


def to_qoqo(circuit: Circuit, values: dict[str, float]) -> list[Any]:
    """The circuit's gates as qoqo operations (measurements, resets, barriers left out).

    Raises:
        CircuitError: From the expression evaluator, for an unbound parameter.
    """
    out: list[Any] = []
    for op in circuit.ops:
        name, qs = op.name, op.qubits
        if name in ("measure", "reset", "barrier"):
            continue
        params = numeric_params(op.params, values)
        if len(qs) == 1:
            out.append(_single(qs[0], gate_matrix(name, params)))
        elif name == "cx":
            out.append(qops.CNOT(qs[0], qs[1]))
        elif name == "cy":
            out.append(qops.ControlledPauliY(qs[0], qs[1]))
        elif name == "cz":
            out.append(qops.ControlledPauliZ(qs[0], qs[1]))
        elif name == "cp":
            out.append(qops.ControlledPhaseShift(qs[0], qs[1], params[0]))
        elif name == "crx":
            out.append(qops.ControlledRotateX(qs[0], qs[1], params[0]))
        elif name == "swap":
            out.append(qops.SWAP(qs[0], qs[1]))
        elif name == "rzz":
            out.append(qops.MultiQubitZZ(list(qs), params[0]))
        elif name == "rxx":
            out.extend(_two_qubit_rotation(qs[0], qs[1], params[0], _H))
        elif name == "ryy":
            out.extend(_two_qubit_rotation(qs[0], qs[1], params[0], _S @ _H))
        elif name in ("ch", "csx", "cry", "crz"):
            out.extend(_controlled(qs[0], qs[1], gate_matrix(name[1:], params)))
        elif name == "cu":
            theta, phi, lam, gamma = params
            u = np.exp(1j * gamma) * gate_matrix("u", (theta, phi, lam))
            out.extend(_controlled(qs[0], qs[1], u))
        elif name in ("ccx", "cswap"):
            out.extend(to_qoqo(_expand3(op), values))
        else:  # pragma: no cover - validate() admits only the gates above
            raise CircuitError(f"the quest engine has no mapping for '{name}'")
    return out


class QuestEngine(Engine):
    """QuEST (through qoqo-quest) as a qbus engine.

    ``statevector`` returns QuEST's final state; ``sample`` has QuEST draw ``shots``
    repeated measurements of the final state, seeded from the request. Only terminal
    measurements are accepted (a reset is accepted where it is a no-op, on a fresh qubit).
    """

    name = "quest"

    def __init__(self) -> None:
        """Size the engine from the machine's memory."""
        # QuEST's complex128 state, the state handed back as a Python list of complex
        # numbers (about 56 B an amplitude) and the numpy copy made of it.
        width = memory_width(96, cap=26)
        self.capabilities = Capabilities.state_vector(width)

    @property
    def version(self) -> str:
        """The installed qoqo-quest and qoqo versions."""
        return f"{_dist_version('qoqo-quest')}+qoqo{_dist_version('qoqo')}"

    def _run(self, request: RunRequest) -> EngineResult:
        """Convert and run ``request``.

        Raises:
            EngineError: ``simulation_failed`` when QuEST raises.
        """
        start = time.perf_counter()
        circuit = request.circuit
        program = QoqoCircuit()
        sv = request.method == "statevector"
        if sv:
            program += qops.DefinitionComplex("psi", 1 << circuit.num_qubits, True)
        else:
            # One readout bit per qubit, read in qubit order: QuEST writes every qubit it
            # simulates to a bit (an unmapped one to ``ro[qubit]``), so a register sized
            # by the clbits either panicked (a qubit past its end) or let an unmeasured
            # qubit overwrite a measured one's bit. The clbits are picked out in _counts.
            program += qops.DefinitionBit("ro", circuit.num_qubits, True)
        for op in to_qoqo(circuit, request.parameters):
            program += op
        if sv:
            program += qops.PragmaGetStateVector("psi", None)
        else:
            identity = {q: q for q in range(circuit.num_qubits)}
            program += qops.PragmaRepeatedMeasurement("ro", request.shots, identity)
        try:
            with _RUN_LOCK:
                backend = Backend(circuit.num_qubits)
                backend.set_random_seed([request.seed])
                bits, _, complexes = backend.run_circuit(program)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"quest failed: {exc}", code="simulation_failed") from exc
        state = counts = None
        if sv:
            state = np.asarray(complexes["psi"][0], dtype=np.complex128)
        else:
            counts = _counts(bits["ro"], circuit)
        return EngineResult.timed(request, start, counts=counts, statevector=state)


def _counts(shots: list[list[bool]], circuit: Circuit) -> dict[str, int]:
    """Counts keyed by bitstrings, clbit 0 rightmost, unwritten clbits ``0``.

    ``shots`` holds every qubit's outcome in qubit order; a clbit takes the qubit that
    last wrote it (a clbit written twice keeps its last source).
    """
    m = circuit.num_clbits
    table = np.asarray(shots, dtype=np.uint8).reshape(len(shots), -1)
    # Only clbits some measurement writes come from QuEST; the others stay 0.
    chars = np.full((table.shape[0], m), ord("0"), dtype=np.uint8)
    for c, q in clbit_sources(circuit).items():
        chars[:, m - 1 - c] += table[:, q]
    keys, n = np.unique(chars.view(f"S{m}").reshape(-1), return_counts=True)
    return {k.decode(): int(v) for k, v in zip(keys, n, strict=True)}
