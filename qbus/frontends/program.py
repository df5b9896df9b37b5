"""One program text, in any accepted format, to the IR: what ingest and the CLI share.

The ingest stage and ``qbus submit`` (which checks a file before it connects) call the
same function, so a program the CLI accepts is one ingest accepts, and a syntax error
has the same message, code and line/column in both.
"""

from __future__ import annotations

from qbus.errors import QbusError
from qbus.frontends.bounds import check_json_depth
from qbus.frontends.parameters import check_parameters
from qbus.frontends.qasm import detect_format, parse_qasm
from qbus.frontends.quil import looks_like_quil, parse_quil
from qbus.schemas.enums import FORMATS
from qbus.schemas.ir import Circuit, decode_circuit

__all__ = ["parse_program"]


def parse_program(
    source: str, fmt: str = "auto", *, max_bytes: int = 1_000_000, max_ops: int = 1_000_000
) -> tuple[Circuit, str]:
    """Parse ``source`` into the IR.

    Args:
        source: OpenQASM 2/3, Quil or JSON IR text.
        fmt: One of ``qbus.schemas.enums.FORMATS`` (``auto`` detects it).
        max_bytes: Largest accepted OpenQASM text.
        max_ops: Most instructions in the circuit.

    Returns:
        The circuit and the format it was read as (``qasm2``, ``qasm3``, ``json``,
        ``quil``).

    Raises:
        QbusError: The text does not parse or breaks a limit (``too_deep``: JSON IR or
            Quil nested deeper than ``qbus.frontends.bounds`` allows); a
            ``QasmSyntaxError`` carries the line and column.
    """
    if fmt not in FORMATS:
        raise QbusError(
            f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}",
            code="unknown_format",
            where="$.format",
        )
    detected = detect_format(source) if fmt == "auto" else fmt
    if fmt == "auto" and looks_like_quil(source):
        detected = "quil"
    if detected == "json":
        # The text parsers resolve every name as they read it (QASM) or check it (Quil);
        # JSON IR is only decoded, so its parameter names are checked here; its depth is
        # bounded first, as msgspec's decoder recurses (qbus/frontends/bounds.py).
        check_json_depth(source.encode())
        circuit = decode_circuit(source)
        check_parameters(circuit)
        return circuit, "json"
    if detected == "quil":
        return parse_quil(source, max_ops=max_ops, max_bytes=max_bytes), "quil"
    return parse_qasm(source, max_bytes=max_bytes, max_ops=max_ops)
