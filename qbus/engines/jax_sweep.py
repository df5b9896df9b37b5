"""The jax engine's sweep kernel: many parameter sets of one circuit, cache-sized batches.

A sweep is many small, identical simulations. Applying a vmapped dense block to the
whole batch (the state-vector path of ``jax_engine``) streams every point's state
through memory once per block and hands XLA a batch of tiny matrix products, which it
runs poorly on the CPU. This kernel instead:

- lays the batch out **last** (``[2] * n + [points]``), so each gate is elementwise
  arithmetic vectorised over the points, with one coefficient per point;
- merges each run of one-qubit gates on a qubit into one 2x2 per point;
- starts from a **product state**: the one-qubit gates on each qubit before any
  multi-qubit gate touches it act on ``|0>``, so they give a 2-vector per qubit and the
  state is their outer product (no pass over the state for them);
- applies each gate as ``new[i] = sum_j M[i, j] * old[j]`` over the gate's axes, skipping
  the structurally zero entries and multiplying by no constant 1: a CNOT ladder becomes
  pure data movement that XLA fuses into one loop;
- runs the points in chunks (``lax.map``) small enough that a chunk's state stays in
  the cache for the whole circuit;
- computes expectation values inside the compiled function: Pauli terms are grouped by
  the qubits they flip, each group's diagonal weights are precomputed once, and each
  group costs one pass (``conj(psi) * flip(psi)`` contracted with the weights).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from qbus.engines.reference import gate_matrix
from qbus.schemas.gates import GATES
from qbus.schemas.pauli import Observable

Structure = tuple[int, tuple[tuple[str, tuple[int, ...]], ...]]

# Points per chunk: a chunk of 2**n amplitudes x CHUNK points should fit a core's L2.
_CHUNK_BYTES = 1 << 21
_MAX_CHUNK = 64


@dataclass(frozen=True, slots=True)
class _Gate:
    name: str
    qubits: tuple[int, ...]
    offset: int


@dataclass(slots=True)
class _Step:
    """One application: ``gates`` (all on ``qubits``) multiplied into one matrix."""

    qubits: tuple[int, ...]
    gates: list[_Gate]


def _plan(structure: Structure) -> tuple[dict[int, list[_Gate]], list[_Step]]:
    """(one-qubit gates that act on ``|0>`` per qubit, the remaining steps in order)."""
    n, ops = structure
    gates: list[_Gate] = []
    offset = 0
    for name, qubits in ops:
        gates.append(_Gate(name, qubits, offset))
        offset += GATES[name].num_params
    prefix: dict[int, list[_Gate]] = {q: [] for q in range(n)}
    entangled: set[int] = set()
    steps: list[_Step] = []
    open_step: dict[int, _Step] = {}  # a qubit's pending run of one-qubit gates
    for g in gates:
        if len(g.qubits) == 1:
            (q,) = g.qubits
            if q not in entangled:
                prefix[q].append(g)
            elif q in open_step:
                open_step[q].gates.append(g)
            else:
                step = _Step((q,), [g])
                open_step[q] = step
                steps.append(step)
            continue
        for q in g.qubits:
            entangled.add(q)
            open_step.pop(q, None)
        steps.append(_Step(g.qubits, [g]))
    return prefix, steps


def _batched_matrix(g: _Gate, angles: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """``(points, 2**k, 2**k)`` matrices of gate ``g`` (its first qubit is bit 0)."""
    from qbus.engines.jax_engine import _jax_matrix

    k = GATES[g.name].num_params
    if k == 0:
        m = jnp.asarray(gate_matrix(g.name), dtype=dtype)
        return jnp.broadcast_to(m, (angles.shape[0], *m.shape))
    cols = angles[:, g.offset : g.offset + k]
    return jax.vmap(lambda p: _jax_matrix(g.name, [p[i] for i in range(k)], dtype))(cols)


def _pattern(name: str) -> np.ndarray:
    """Which entries of the gate's matrix can be non-zero (at two random angle sets)."""
    k = GATES[name].num_params
    rng = np.random.default_rng(0)
    a = gate_matrix(name, rng.uniform(0.1, 3.0, k).tolist())
    b = gate_matrix(name, rng.uniform(0.1, 3.0, k).tolist())
    return (np.abs(a) > 1e-12) | (np.abs(b) > 1e-12)


Pair = tuple[jax.Array, jax.Array]
"""A complex array as its real and imaginary parts (see ``build_sweep_fn``)."""


def _mul(x: Pair, c: complex | Pair) -> Pair:
    """``x * c`` for a constant ``c`` or a per-point pair ``c`` (broadcast on the last axis)."""
    xr, xi = x
    if isinstance(c, tuple):
        cr, ci = c
        return xr * cr - xi * ci, xr * ci + xi * cr
    if c.imag == 0:
        return (xr, xi) if c.real == 1 else (xr * c.real, xi * c.real)
    if c.real == 0:
        return -xi * c.imag, xr * c.imag
    return xr * c.real - xi * c.imag, xr * c.imag + xi * c.real


def _apply(
    state: Pair, n: int, qubits: tuple[int, ...], m: np.ndarray | Pair, mask: np.ndarray
) -> Pair:
    """``new[i] = sum_j m[.., i, j] old[j]`` on the axes of ``qubits`` (batch last).

    ``m`` is a constant ``(d, d)`` numpy matrix or a ``(points, d, d)`` traced pair;
    ``mask`` says which entries can be non-zero.
    """
    k = len(qubits)
    axes = [n - 1 - q for q in qubits]  # qubits[j] is bit j of the matrix index
    # Bring the gate's axes to the front, most significant bit (qubits[k-1]) first.
    front = list(reversed(axes))
    parts = []
    for part in state:
        x = jnp.moveaxis(part, front, list(range(k)))
        parts.append(x.reshape((1 << k, *x.shape[k:])))
    xr, xi = parts
    rest = xr.shape[1:]
    out_r, out_i = [], []
    for i in range(1 << k):
        acc: Pair | None = None
        for j in range(1 << k):
            if not mask[i, j]:
                continue
            c = complex(m[i, j]) if isinstance(m, np.ndarray) else (m[0][:, i, j], m[1][:, i, j])
            tr, ti = _mul((xr[j], xi[j]), c)
            acc = (tr, ti) if acc is None else (acc[0] + tr, acc[1] + ti)
        if acc is None:
            acc = (jnp.zeros_like(xr[0]), jnp.zeros_like(xi[0]))
        out_r.append(acc[0])
        out_i.append(acc[1])
    return tuple(  # type: ignore[return-value]
        jnp.moveaxis(jnp.stack(o).reshape((2,) * k + rest), list(range(k)), front)
        for o in (out_r, out_i)
    )


def _flip_groups(
    n: int, observables: Sequence[Observable]
) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """``(axes to flip, weights)`` per flip pattern; weights are ``(2**n, observables)``.

    ``<psi|P|psi> = sum_x conj(psi[x]) phase(x) psi[x ^ flip]``: the terms that flip the
    same qubits share ``conj(psi) * flip(psi)``, weighted by the sum of their phases.
    """
    index = np.arange(1 << n)
    groups: dict[int, np.ndarray] = {}
    for k, obs in enumerate(observables):
        for term in obs.terms:
            flip = 0
            phase = np.full(1 << n, term.coeff, dtype=np.complex128)
            for letter, qubit in term.factors():
                bit = (index >> qubit) & 1
                if letter in "XY":
                    flip |= 1 << qubit
                if letter == "Z":
                    phase *= 1 - 2 * bit
                elif letter == "Y":
                    # (Y psi)[x] = phase * psi[x ^ bit]: i for bit 1, -i for bit 0.
                    phase *= np.where(bit == 1, 1j, -1j)
            w = groups.setdefault(flip, np.zeros((1 << n, len(observables)), np.complex128))
            w[:, k] += phase
    return [(tuple(n - 1 - q for q in range(n) if flip >> q & 1), w) for flip, w in groups.items()]


def chunk_size(n: int, dtype: str, points: int) -> int:
    """Points per ``lax.map`` chunk: as many as fit ``_CHUNK_BYTES`` (at least 8)."""
    size = max(8, min(_MAX_CHUNK, _CHUNK_BYTES // (jnp.dtype(dtype).itemsize << n)))
    return max(1, min(size, points))


def build_sweep_fn(
    structure: Structure,
    dtype: str,
    observables: Sequence[Observable] = (),
    chunk: int = 16,
) -> Callable[[jax.Array], jax.Array]:
    """The (unjitted) ``angles (points, slots) -> result`` function of one structure.

    The number of points must be a multiple of ``chunk``. The result is ``(points,
    2**n)`` states or, with observables, ``(points, observables)`` real expectation
    values.
    """
    n, _ = structure
    cdt = jnp.dtype(dtype)
    rdt = jnp.real(jnp.zeros((), cdt)).dtype
    prefix, steps = _plan(structure)
    masks = {}
    for step in steps:
        for g in step.gates:
            masks.setdefault(g.name, _pattern(g.name))
    groups = _flip_groups(n, observables) if observables else []

    def one_qubit(gates: list[_Gate], angles: jax.Array) -> jax.Array:
        m = _batched_matrix(gates[0], angles, cdt)
        for g in gates[1:]:
            m = _batched_matrix(g, angles, cdt) @ m
        return m

    def split(m: jax.Array) -> Pair:
        return jnp.real(m), jnp.imag(m)

    def chunk_fn(angles: jax.Array) -> jax.Array:
        points = angles.shape[0]
        # Product state: qubit n-1 is axis 0.
        state: Pair | None = None
        for q in range(n - 1, -1, -1):
            if prefix[q]:
                col = one_qubit(prefix[q], angles)[:, :, 0]  # (points, 2)
                v = split(jnp.moveaxis(col, 0, -1))  # (2, points)
            else:
                one = jnp.zeros((2, points), rdt).at[0].set(1)
                v = (one, jnp.zeros((2, points), rdt))
            if state is None:
                state = v
            else:
                left = (state[0][..., None, :], state[1][..., None, :])
                state = _mul(left, v)
        assert state is not None
        for step in steps:
            if len(step.qubits) == 1:
                m: np.ndarray | Pair = split(one_qubit(step.gates, angles))
                mask = np.ones((2, 2), bool)
            else:
                (g,) = step.gates
                mask = masks[g.name]
                m = (
                    gate_matrix(g.name)
                    if GATES[g.name].num_params == 0
                    else split(_batched_matrix(g, angles, cdt))
                )
            state = _apply(state, n, step.qubits, m, mask)
        re, im = (part.reshape(1 << n, points) for part in state)
        if not groups:
            return (re + 1j * im).astype(cdt).T
        out = jnp.zeros((len(observables), points), dtype=rdt)
        for axes, w in groups:
            if axes:
                fr, fi = (jnp.flip(p, axis=axes).reshape(1 << n, points) for p in state)
            else:
                fr, fi = re, im
            # conj(psi) * flipped, by parts
            pr = re * fr + im * fi
            pi = re * fi - im * fr
            wr = jnp.asarray(w.real.T, dtype=rdt)
            wi = jnp.asarray(w.imag.T, dtype=rdt)
            out = out + wr @ pr - wi @ pi
        return out.T

    def fn(angles: jax.Array) -> jax.Array:
        total = angles.shape[0]
        chunks = angles.reshape(total // chunk, chunk, angles.shape[1])
        out = jax.lax.map(chunk_fn, chunks)
        return out.reshape(total, -1)

    return fn


__all__ = ["build_sweep_fn", "chunk_size"]
