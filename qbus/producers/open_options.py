"""Noise, dynamics and observable options of ``qbus submit``, parsed into their schema structs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec

from qbus.schemas.dynamics import DynamicsResult, DynamicsSpec
from qbus.schemas.noise import NoiseModel
from qbus.schemas.pauli import Observable


def noise_from_options(
    depolarizing: float | None, damping: float | None, readout: Sequence[str]
) -> NoiseModel | None:
    """The NoiseModel of ``--noise-depolarizing P``, ``--noise-damping G`` and
    ``--readout-error Q:P01:P10`` (repeatable); None when none is given.

    ``P`` is used for one- and two-qubit gates alike (the Pauli convention of
    docs/engines.md).

    Raises:
        ValueError: A value out of 0..1, or a readout error not written ``Q:P01:P10``.
    """
    if depolarizing is None and damping is None and not readout:
        return None
    errors = []
    for item in readout:
        parts = item.split(":")
        try:
            qubit, p01, p10 = int(parts[0]), float(parts[1]), float(parts[2])
            if len(parts) != 3:
                raise IndexError
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{item!r}: expected QUBIT:P01:P10, e.g. 0:0.02:0.05") from exc
        errors.append({"qubit": qubit, "p01": p01, "p10": p10})
    raw = {
        "depolarizing_1q": depolarizing or 0.0,
        "depolarizing_2q": depolarizing or 0.0,
        "amplitude_damping": damping or 0.0,
        "readout": errors,
    }
    try:
        return msgspec.convert(raw, NoiseModel)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from exc


def dynamics_from_file(path: str | Path) -> DynamicsSpec:
    """The DynamicsSpec in a JSON file (the ``dynamics`` object of a job).

    Raises:
        ValueError: Not JSON, or not a dynamics spec (the message names the field).
    """
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=DynamicsSpec)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path}: not a dynamics spec: {exc}") from exc


def noise_line(noise: NoiseModel) -> str:
    """A one-line summary of a noise model, for the CLI."""
    parts = [
        f"{name}={value:g}"
        for name, value in (
            ("depolarizing_1q", noise.depolarizing_1q),
            ("depolarizing_2q", noise.depolarizing_2q),
            ("amplitude_damping", noise.amplitude_damping),
        )
        if value
    ]
    parts += [f"readout[q{r.qubit}]={r.p01:g}/{r.p10:g}" for r in noise.readout]
    return ", ".join(parts) or "none"


def dynamics_table(result: DynamicsResult, rows: int = 12) -> str:
    """The first ``rows`` report times of a dynamics result as a table, for the CLI."""
    k = len(result.values)
    lines = [f"dynamics: {len(result.times)} times x {k} observable(s)"]
    lines.append("  " + "t".rjust(10) + "".join(f"{f'<O{i}>':>14}" for i in range(k)))
    for t_i, t in enumerate(result.times[:rows]):
        lines.append(f"  {t:>10.4g}" + "".join(f"{v[t_i]:>14.6g}" for v in result.values))
    if len(result.times) > rows:
        lines.append(f"  … {len(result.times) - rows} more times")
    return "\n".join(lines)


__all__ = ["dynamics_from_file", "dynamics_table", "noise_from_options", "noise_line"]


def observable_from_text(text: str, name: str = "") -> Observable:
    """The Observable of ``--observable``: terms joined by ``+`` (or `` - ``), each an
    optional coefficient and Pauli factors, e.g. ``"Z0 Z1 + 0.5 X2 - 0.25"``.

    Raises:
        ValueError: An empty term, a bad factor or a qubit named twice in a term.
    """
    terms = []
    for raw in text.replace(" - ", " + -").split("+"):
        words = raw.split()
        if not words:
            raise ValueError(f"{text!r}: empty term (write terms as 'Z0 Z1 + 0.5 X2')")
        coeff = 1.0
        try:
            coeff = float(words[0])
            words = words[1:]
        except ValueError:
            pass
        terms.append({"coeff": coeff, "pauli": " ".join(words)})
    try:
        return msgspec.convert({"terms": terms, "name": name or text.strip()}, Observable)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{text!r}: {exc}") from exc


def observables_from_file(path: str | Path) -> list[Observable]:
    """The observables in a JSON file: a list of ``{"terms": [{"coeff", "pauli"}], "name"}``.

    Raises:
        ValueError: Not JSON, or not that shape (the message says where).
    """
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=list[Observable])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"{path}: expected a JSON list of observables ({exc})") from exc
