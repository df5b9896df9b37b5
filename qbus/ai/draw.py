"""A text drawing of a circuit: Qiskit's when it is installed, else a small one of ours."""

from __future__ import annotations

from qbus.schemas.ir import Circuit, Op

_CONTROLS = {"cx": 1, "cy": 1, "cz": 1, "ch": 1, "csx": 1, "cp": 1, "crx": 1, "cry": 1,
             "crz": 1, "cu": 1, "ccx": 2, "cswap": 1}  # fmt: skip


def _label(op: Op) -> str:
    if op.name == "measure":
        return "M" + ",".join(f"c{c}" for c in op.clbits[:1])
    base = op.name[1:] if op.name in _CONTROLS and op.name != "cswap" else op.name
    if op.name == "cswap":
        base = "x"
    base = base.upper()
    if op.params:
        args = ",".join(p if isinstance(p, str) else f"{float(p):.3g}" for p in op.params)
        base += f"({args})"
    return base


def _cells(op: Op, n: int) -> dict[int, str]:
    """What each qubit row shows for ``op`` (rows between its qubits show a wire)."""
    if op.name == "barrier":
        return {q: "░" for q in (op.qubits or range(n))}
    if op.name == "measure":
        return {q: f"M→c{c}" for q, c in zip(op.qubits, op.clbits, strict=True)}
    if op.name == "swap":
        return {q: "x" for q in op.qubits}
    k = _CONTROLS.get(op.name, 0)
    cells = {q: "■" for q in op.qubits[:k]}
    label = _label(op)
    for q in op.qubits[k:]:
        cells[q] = label
    if op.name == "cswap":
        cells.update({q: "x" for q in op.qubits[1:]})
    return cells


def draw_text(circuit: Circuit) -> str:
    """A text drawing of ``circuit``: one row per qubit, one column per layer of ops.

    Uses Qiskit's text drawer when Qiskit is installed, our own otherwise.
    """
    try:
        # Deferred: convert_qiskit imports qiskit, an optional extra.
        from qbus.engines.convert_qiskit import to_qiskit

        return str(to_qiskit(circuit).draw(output="text", fold=-1))
    except Exception:  # Qiskit missing, or a circuit it does not take: draw it ourselves
        return _draw(circuit)


def _draw(circuit: Circuit) -> str:
    n = circuit.num_qubits
    columns: list[dict[int, str]] = []
    level = [0] * n
    for op in circuit.ops:
        qs = op.qubits or tuple(range(n))
        lo, hi = min(qs), max(qs)
        span = range(lo, hi + 1)
        col = max(level[q] for q in span)
        while len(columns) <= col:
            columns.append({})
        cells = _cells(op, n)
        for q in span:
            columns[col][q] = cells.get(q, "│")
            level[q] = col + 1
    rows = [f"q{q}: " for q in range(n)]
    width = len(f"q{n - 1}: ")
    rows = [r.rjust(width) for r in rows]
    for col in columns:
        w = max((len(c) for c in col.values()), default=1)
        for q in range(n):
            cell = col.get(q)
            rows[q] += "─" + (cell.center(w, "─") if cell else "─" * w) + "─"
    return "\n".join(rows)
