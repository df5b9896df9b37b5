"""Engines by name, through the ``qbus.engines`` entry-point group.

An engine package declares itself in its ``pyproject.toml``::

    [project.entry-points."qbus.engines"]
    qiskit-aer = "qbus.engines.aer:AerEngine"

Nothing is imported until an engine is asked for (Qiskit's plugin pattern): listing
names reads package metadata only (``qbus.engines.catalog``), and ``get_engine`` imports
one engine module, whose heavy framework import may fail with
``MissingOptionalLibraryError``.
"""

from __future__ import annotations

import threading
from importlib.metadata import EntryPoint
from typing import Any

import msgspec

from qbus.engines.base import Engine
from qbus.engines.catalog import (
    BUILTIN_ENGINES,
    EXTRAS,
    GROUP,
    available_engines,
    engine_targets,
)
from qbus.errors import MissingOptionalLibraryError, QbusError, UnknownEngineError

__all__ = [
    "BUILTIN_ENGINES",
    "GROUP",
    "EngineInfo",
    "available_engines",
    "engine_table",
    "get_engine",
]

_instances: dict[str, Engine] = {}
# Reentrant: an engine that wraps another (a plugin adding noise, say) may ask the registry
# for it from its own constructor, which runs under this lock.
_lock = threading.RLock()


def _load(name: str, target: str) -> type[Engine]:
    try:
        cls = EntryPoint(name=name, value=target, group=GROUP).load()
    except MissingOptionalLibraryError:
        raise
    except ImportError as exc:
        # The engine module itself imported something that is not installed.
        library = getattr(exc, "name", None) or str(exc)
        raise MissingOptionalLibraryError(
            library, EXTRAS.get(name, name), f"the {name} engine"
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
    targets = engine_targets()
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
