"""Engines by name, through the ``qbus.engines`` entry-point group.

An engine package declares itself in its ``pyproject.toml``::

    [project.entry-points."qbus.engines"]
    qiskit-aer = "qbus.engines.aer:AerEngine"

Nothing is imported until an engine is asked for (Qiskit's plugin pattern): listing
names reads package metadata only, and ``get_engine`` imports one engine module, whose
heavy framework import may fail with ``MissingOptionalLibraryError``.

qbus's own engines are also known from a built-in map, so a source checkout that is not
pip-installed (no entry points yet) still finds them; an entry point of the same name
wins over the built-in one.
"""

from __future__ import annotations

import threading
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import msgspec

from qbus.engines.base import Engine
from qbus.errors import MissingOptionalLibraryError, QbusError, UnknownEngineError

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
}
"""qbus's own engines, as ``module:attribute`` targets."""

# The pip extra that provides each built-in engine's dependencies, for install hints.
_EXTRAS = {
    "qiskit-aer": "qiskit",
    "cirq": "cirq",
    "qsim": "cirq",
    "braket": "braket",
    "pennylane": "pennylane",
    "qutip": "qutip",
    "jax": "jax",
    "quest": "quest",
}

_instances: dict[str, Engine] = {}
# Reentrant: an engine that wraps another (a plugin adding noise, say) may ask the registry
# for it from its own constructor, which runs under this lock.
_lock = threading.RLock()


def _targets() -> dict[str, str]:
    targets = dict(BUILTIN_ENGINES)
    for ep in entry_points(group=GROUP):
        targets[ep.name] = ep.value
    return targets


def available_engines() -> list[str]:
    """Names of the installed engines, sorted. Imports no engine module."""
    return sorted(_targets())


def _load(name: str, target: str) -> type[Engine]:
    try:
        cls = EntryPoint(name=name, value=target, group=GROUP).load()
    except MissingOptionalLibraryError:
        raise
    except ImportError as exc:
        # The engine module itself imported something that is not installed.
        library = getattr(exc, "name", None) or str(exc)
        raise MissingOptionalLibraryError(
            library, _EXTRAS.get(name, name), f"the {name} engine"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise UnknownEngineError(
            f"entry point '{name}' = '{target}' is not a qbus Engine subclass",
            code="invalid_engine",
        )
    return cls


def get_engine(name: str) -> Engine:
    """The process-wide instance of engine ``name``, created on first use.

    Args:
        name: Registry name (``qiskit-aer``, ``reference`` …).

    Raises:
        UnknownEngineError: No engine of that name; the message lists the installed ones.
        MissingOptionalLibraryError: The engine's framework is not installed; the message
            carries the ``pip install 'qbus[extra]'`` hint.
    """
    engine = _instances.get(name)
    if engine is not None:
        return engine
    targets = _targets()
    target = targets.get(name)
    if target is None:
        raise UnknownEngineError(
            f"no engine named '{name}'; installed engines: {', '.join(sorted(targets))}"
        )
    with _lock:
        # Another thread may have built it while this one waited: one instance only.
        engine = _instances.get(name)
        if engine is None:
            engine = _load(name, target)()
            _instances[name] = engine
    return engine


class EngineInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of one ``engine_table`` row.

    Attributes:
        name: Registry name.
        version: Engine version, empty when it could not be loaded.
        available: Whether the engine loads in this environment.
        methods: Supported methods.
        max_qubits: Largest width per method.
        device: ``cpu`` or ``gpu``.
        error: Why the engine is unavailable (with the install hint), else empty.
    """

    name: str
    version: str = ""
    available: bool = False
    methods: tuple[str, ...] = ()
    max_qubits: dict[str, int] = {}
    device: str = ""
    error: str = ""


def engine_table() -> list[dict[str, Any]]:
    """Every installed engine with its version and capabilities, for ``qbus engines``.

    Loads each engine; one that fails to load is listed as unavailable with the reason.

    Returns:
        One dict per engine, sorted by name, with the fields of ``EngineInfo``.
    """
    rows = []
    for name in available_engines():
        try:
            engine = get_engine(name)
        except (ImportError, QbusError) as exc:
            rows.append(EngineInfo(name=name, error=str(exc)))
            continue
        caps = engine.capabilities
        rows.append(
            EngineInfo(
                name=name,
                version=engine.version,
                available=True,
                methods=caps.methods,
                max_qubits=dict(caps.max_qubits),
                device=caps.device,
            )
        )
    return [msgspec.structs.asdict(row) for row in rows]
