"""Gate matrices from traced angles, for the jax engine and its sweep kernel.

One module that both ``jax_engine`` and ``jax_sweep`` import (the sweep kernel used to
import it back from the engine, a cycle). Conventions are the reference engine's
(``reference.gate_matrix``): the same matrices, built from JAX arrays so that angles can
be traced and vmapped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qbus.engines.reference import gate_matrix
from qbus.schemas.gates import GATES

__all__ = ["jax_matrix"]


def _c(x: jax.Array, dtype: jnp.dtype) -> jax.Array:
    return x.astype(dtype)


def _rot(theta: jax.Array, dtype: jnp.dtype) -> tuple[jax.Array, jax.Array]:
    return _c(jnp.cos(theta / 2), dtype), _c(jnp.sin(theta / 2), dtype)


def _phase(angle: jax.Array, dtype: jnp.dtype) -> jax.Array:
    return _c(jnp.cos(angle), dtype) + 1j * _c(jnp.sin(angle), dtype)


def _m(rows: list[list[jax.Array | complex]], dtype: jnp.dtype) -> jax.Array:
    return jnp.stack([jnp.stack([jnp.asarray(x, dtype=dtype) for x in row]) for row in rows])


def _rx(p: Sequence[jax.Array], dt: jnp.dtype) -> jax.Array:
    c, s = _rot(p[0], dt)
    return _m([[c, -1j * s], [-1j * s, c]], dt)


def _ry(p: Sequence[jax.Array], dt: jnp.dtype) -> jax.Array:
    c, s = _rot(p[0], dt)
    return _m([[c, -s], [s, c]], dt)


def _rz(p: Sequence[jax.Array], dt: jnp.dtype) -> jax.Array:
    return _m([[_phase(-p[0] / 2, dt), 0], [0, _phase(p[0] / 2, dt)]], dt)


def _p(p: Sequence[jax.Array], dt: jnp.dtype) -> jax.Array:
    return _m([[1, 0], [0, _phase(p[0], dt)]], dt)


def _u(p: Sequence[jax.Array], dt: jnp.dtype) -> jax.Array:
    theta, phi, lam = p
    c, s = _rot(theta, dt)
    return _m([[c, -_phase(lam, dt) * s], [_phase(phi, dt) * s, _phase(phi + lam, dt) * c]], dt)


def _u2(p: Sequence[jax.Array], dt: jnp.dtype) -> jax.Array:
    return _u([jnp.asarray(math.pi / 2, p[0].dtype), p[0], p[1]], dt)


def _controlled(u: jax.Array) -> jax.Array:
    # Control is bit 0 of the matrix index (controls are listed first): u acts on the
    # odd indices 1 and 3.
    full = jnp.eye(4, dtype=u.dtype)
    return full.at[1::2, 1::2].set(u)


_XX = np.kron(gate_matrix("x"), gate_matrix("x"))
_YY = np.kron(gate_matrix("y"), gate_matrix("y"))


def _rpp(pp: np.ndarray) -> Callable[[Sequence[jax.Array], jnp.dtype], jax.Array]:
    def build(p: Sequence[jax.Array], dt: jnp.dtype) -> jax.Array:
        c, s = _rot(p[0], dt)
        return c * jnp.eye(4, dtype=dt) - 1j * s * jnp.asarray(pp, dtype=dt)

    return build


def _rzz(p: Sequence[jax.Array], dt: jnp.dtype) -> jax.Array:
    a, b = _phase(-p[0] / 2, dt), _phase(p[0] / 2, dt)
    return jnp.diag(jnp.stack([a, b, b, a]))


def _cu(p: Sequence[jax.Array], dt: jnp.dtype) -> jax.Array:
    return _controlled(_phase(p[3], dt) * _u(p[:3], dt))


_PARAMETRISED: dict[str, Callable[[Sequence[jax.Array], jnp.dtype], jax.Array]] = {
    "rx": _rx,
    "ry": _ry,
    "rz": _rz,
    "p": _p,
    "u1": _p,
    "u2": _u2,
    "u": _u,
    "cp": lambda p, dt: _controlled(_p(p, dt)),
    "crx": lambda p, dt: _controlled(_rx(p, dt)),
    "cry": lambda p, dt: _controlled(_ry(p, dt)),
    "crz": lambda p, dt: _controlled(_rz(p, dt)),
    "cu": _cu,
    "rxx": _rpp(_XX),
    "ryy": _rpp(_YY),
    "rzz": _rzz,
}


def jax_matrix(name: str, params: Sequence[jax.Array], dtype: jnp.dtype) -> jax.Array:
    """The gate's matrix (reference convention) from traced angles."""
    if GATES[name].num_params == 0:
        return jnp.asarray(gate_matrix(name), dtype=dtype)
    return _PARAMETRISED[name](params, dtype)
