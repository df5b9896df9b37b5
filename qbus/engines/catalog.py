"""Which engines are installed, from package metadata alone: nothing is imported.

An engine package declares itself in its ``pyproject.toml``::

    [project.entry-points."qbus.engines"]
    qiskit-aer = "qbus.engines.aer:AerEngine"

Listing names and versions reads entry points and distribution metadata (Qiskit's
plugin pattern), so ``qbus engines`` answers without importing a framework; loading an
engine is ``qbus.engines.registry``'s job.

qbus's own engines are also known from a built-in map, so a source checkout that is not
pip-installed (no entry points yet) still finds them; an entry point of the same name
wins over the built-in one.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, entry_points, version

import msgspec

__all__ = [
    "BUILTIN_ENGINES",
    "EXTRAS",
    "GROUP",
    "EngineListing",
    "available_engines",
    "engine_listing",
    "engine_targets",
]

GROUP = "qbus.engines"
"""The entry-point group engines register in."""

BUILTIN_ENGINES: dict[str, str] = {
    "qiskit-aer": "qbus.engines.aer:AerEngine",
    "reference": "qbus.engines.reference:ReferenceEngine",
    "cirq": "qbus.engines.cirq_engine:CirqEngine",
    "qsim": "qbus.engines.cirq_engine:QsimEngine",
    "braket": "qbus.engines.braket_engine:BraketEngine",
    "pennylane": "qbus.engines.pennylane_engine:PennylaneEngine",
    "qutip": "qbus.engines.qutip_engine:QutipEngine",
    "jax": "qbus.engines.jax_engine:JaxEngine",
    "quest": "qbus.engines.quest_engine:QuestEngine",
    "quimb-tn": "qbus.engines.tn_engine:TensorNetworkEngine",
}
"""qbus's own engines, as ``module:attribute`` targets."""

# The pip extra that provides each built-in engine's dependencies, for install hints.
EXTRAS = {
    "qiskit-aer": "qiskit",
    "cirq": "cirq",
    "qsim": "cirq",
    "braket": "braket",
    "pennylane": "pennylane",
    "qutip": "qutip",
    "jax": "jax",
    "quest": "quest",
    "quimb-tn": "tn",
}

# The distribution whose version each built-in engine reports (its framework's), so that
# `qbus engines` can list versions from package metadata without importing a framework.
FRAMEWORKS = {
    "qiskit-aer": "qiskit-aer",
    "reference": "qbus",
    "cirq": "cirq-core",
    "qsim": "qsimcirq",
    "braket": "amazon-braket-sdk",
    "pennylane": "pennylane",
    "qutip": "qutip",
    "jax": "jax",
    "quest": "qoqo-quest",
    "quimb-tn": "quimb",
}


def engine_targets() -> dict[str, str]:
    """Every installed engine name with its ``module:attribute`` target."""
    targets = dict(BUILTIN_ENGINES)
    for ep in entry_points(group=GROUP):
        targets[ep.name] = ep.value
    return targets


def available_engines() -> list[str]:
    """Names of the installed engines, sorted. Imports no engine module."""
    return sorted(engine_targets())


class EngineListing(msgspec.Struct, frozen=True, kw_only=True):
    """One installed engine as package metadata describes it (nothing imported).

    Attributes:
        name: Registry name.
        target: ``module:Class`` the name loads.
        distribution: The distribution whose version the engine reports: its framework's
            for qbus's own engines, the plugin package's for a third-party engine.
        version: That distribution's installed version; empty when it is not installed.
        installed: Whether that distribution is installed (the engine may still fail to
            load: ``engine_table`` loads it).
        hint: For a missing framework, the ``pip install`` that brings it.
    """

    name: str
    target: str
    distribution: str
    version: str = ""
    installed: bool = False
    hint: str = ""


def engine_listing() -> list[EngineListing]:
    """Every installed engine from entry-point metadata, sorted by name, in milliseconds.

    Versions come from ``importlib.metadata``; no engine module and no framework is
    imported (``engine_table`` loads them, for methods and widths).
    """
    plugins = {ep.name: ep for ep in entry_points(group=GROUP)}
    rows = []
    for name, target in sorted(engine_targets().items()):
        ep = plugins.get(name)
        own = ep is None or ep.dist is None or ep.dist.name == "qbus"
        distribution = FRAMEWORKS.get(name, name) if own else ep.dist.name  # type: ignore[union-attr]
        try:
            found = version(distribution)
        except PackageNotFoundError:
            found = ""
        hint = "" if found or name not in EXTRAS else f"pip install 'qbus[{EXTRAS[name]}]'"
        rows.append(
            EngineListing(
                name=name,
                target=target,
                distribution=distribution,
                version=found,
                installed=bool(found),
                hint=hint,
            )
        )
    return rows
