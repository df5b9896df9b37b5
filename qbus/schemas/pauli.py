"""Pauli-sum observables: what ``expectation`` and ``dynamics`` jobs measure."""

from __future__ import annotations

import re

import msgspec

_PAULI_TOKEN = re.compile(r"^([IXYZ])(\d+)$")


class PauliTerm(msgspec.Struct, frozen=True, kw_only=True):
    """One term of an observable: ``coeff`` times a Pauli string.

    Attributes:
        coeff: Real coefficient.
        pauli: Space-separated factors naming their qubit, e.g. ``"Z0 Z1"`` or ``"X2"``;
            ``""`` is the identity.
    """

    coeff: float
    pauli: str = ""

    def __post_init__(self) -> None:
        seen = set()
        for token in self.pauli.split():
            match = _PAULI_TOKEN.match(token)
            if match is None:
                raise ValueError(
                    f"bad Pauli factor {token!r} in {self.pauli!r}: write e.g. 'Z0 X3'"
                )
            qubit = int(match.group(2))
            if qubit in seen:
                raise ValueError(f"qubit {qubit} appears twice in {self.pauli!r}")
            seen.add(qubit)

    def factors(self) -> list[tuple[str, int]]:
        """(Pauli letter, qubit) pairs, identities dropped."""
        out = []
        for token in self.pauli.split():
            if token[0] != "I":
                out.append((token[0], int(token[1:])))
        return out


class Observable(msgspec.Struct, frozen=True, kw_only=True):
    """A Hermitian observable as a sum of Pauli terms (for the ``expectation`` method)."""

    terms: list[PauliTerm]
    name: str = ""
