"""Full float32 precision for the jax engine's matrix products.

On GPUs with tensor cores (Ampere, Hopper) XLA computes float32 matrix products in
TF32 by default: about three decimal digits. For a simulator that is wrong, not just
coarse: a complex64 state lost 1e-2 of fidelity and norm on an H200 (measured with
``benchmarks/jax_gpu.py``). Every traced function of the engine runs under
``highest``; float64 products are exact either way, and the CPU ignores the setting.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import jax

P = ParamSpec("P")
R = TypeVar("R")


def highest_precision(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` traced (and run, when called eagerly) with full-precision matrix products."""

    @functools.wraps(fn)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped


__all__ = ["highest_precision"]
