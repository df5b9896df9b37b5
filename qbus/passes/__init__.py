"""Deterministic rewrite passes over the IR (pure functions, no I/O)."""

from qbus.passes.optimize import (
    PASSES,
    cancel_inverses,
    drop_identities,
    is_identity,
    merge_rotations,
    optimize,
    qubit_key,
)

__all__ = [
    "PASSES",
    "cancel_inverses",
    "drop_identities",
    "is_identity",
    "merge_rotations",
    "optimize",
    "qubit_key",
]
