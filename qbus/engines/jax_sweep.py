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
# Up to this many observables a flip group is reduced with fused weighted sums, past it
# with one matrix product.
_REDUCE_OBSERVABLES = 4


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


def _apply(
    state: jax.Array, n: int, qubits: tuple[int, ...], m: jax.Array | np.ndarray, mask: np.ndarray
) -> jax.Array:
    """``new[i] = sum_j m[.., i, j] old[j]`` on the axes of ``qubits`` (batch last).

    ``m`` is a constant ``(d, d)`` numpy matrix or a ``(points, d, d)`` traced one; ``mask``
    says which entries can be non-zero. Slices and stacks along the gate's axes, never a
    transpose, so XLA fuses the whole gate into one loop over the state.
    """
    k = len(qubits)
    axes = [n - 1 - q for q in qubits]  # qubits[j] is bit j of the matrix index
    const = isinstance(m, np.ndarray)

    def part(j: int) -> jax.Array:
        index: list[int | slice] = [slice(None)] * state.ndim
        for b, axis in enumerate(axes):
            index[axis] = (j >> b) & 1
        return state[tuple(index)]

    inputs = [part(j) for j in range(1 << k)]

    def row(i: int) -> jax.Array:
        acc = None
        for j in range(1 << k):
            if not mask[i, j]:
                continue
            if const:
                c = complex(m[i, j])
                term = inputs[j] if c == 1 else inputs[j] * jnp.asarray(c, dtype=state.dtype)
            else:
                term = inputs[j] * m[:, i, j]  # (points,) broadcast along the last axis
            acc = term if acc is None else acc + term
        return acc if acc is not None else jnp.zeros_like(inputs[0])

    # Put the axes back in ascending order: stacking along the smallest first keeps
    # every later axis's position right.
    order = sorted(range(k), key=lambda b: axes[b])

    def build(level: int, i: int) -> jax.Array:
        if level == 0:
            return row(i)
        b = order[level - 1]
        halves = [build(level - 1, i | (bit << b)) for bit in (0, 1)]
        return jnp.stack(halves, axis=axes[b])

    return build(k, 0)


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

    def chunk_fn(angles: jax.Array) -> jax.Array:
        points = angles.shape[0]
        # Product state: qubit n-1 is axis 0.
        state = None
        for q in range(n - 1, -1, -1):
            if prefix[q]:
                v = jnp.moveaxis(one_qubit(prefix[q], angles)[:, :, 0], 0, -1)  # (2, points)
            else:
                v = jnp.zeros((2, points), cdt).at[0].set(1)
            state = v if state is None else state[..., None, :] * v
        assert state is not None
        for step in steps:
            if len(step.qubits) == 1:
                m = one_qubit(step.gates, angles)
                mask = np.ones((2, 2), bool)
            else:
                (g,) = step.gates
                mask = masks[g.name]
                m = (
                    gate_matrix(g.name)
                    if GATES[g.name].num_params == 0
                    else _batched_matrix(g, angles, cdt)
                )
            state = _apply(state, n, step.qubits, m, mask)
        flat = state.reshape(1 << n, points)
        if not groups:
            return flat.T
        out = jnp.zeros((len(observables), points), dtype=jnp.real(flat).dtype)
        conj = jnp.conj(flat)
        for axes, w in groups:
            flipped = jnp.flip(state, axis=axes).reshape(1 << n, points) if axes else flat
            prod = conj * flipped
            if w.shape[1] <= _REDUCE_OBSERVABLES:
                # A weighted sum per observable: XLA fuses flip, product and sum into one
                # read of the state (a matrix product would first write the product out).
                rows = []
                for k in range(w.shape[1]):
                    wk = jnp.asarray(w[:, k : k + 1], dtype=cdt)
                    rows.append(jnp.sum(jnp.real(prod * wk), axis=0))
                out = out + jnp.stack(rows)
            else:
                wr = jnp.asarray(w.real.T, dtype=out.dtype)
                wi = jnp.asarray(w.imag.T, dtype=out.dtype)
                out = out + wr @ jnp.real(prod) - wi @ jnp.imag(prod)
        return out.T

    def fn(angles: jax.Array) -> jax.Array:
        total = angles.shape[0]
        chunks = angles.reshape(total // chunk, chunk, angles.shape[1])
        out = jax.lax.map(chunk_fn, chunks)
        return out.reshape(total, -1)

    return fn


__all__ = ["build_sweep_fn", "chunk_size"]
