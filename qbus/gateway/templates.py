"""Programs for the console's submit form (``GET /v1/templates``): small circuits whose
answer a person knows, so a run shows at a glance that the bus works."""

from __future__ import annotations

import msgspec

from qbus.schemas.enums import SourceFormat


class Template(msgspec.Struct, frozen=True, kw_only=True):
    """One program the submit form offers.

    Attributes:
        name: Short name.
        description: What it is and what its counts should show.
        source: The program text, submitted as it is.
        format: Its language (a ``job.submitted`` ``format``).
    """

    name: str
    description: str
    source: str
    format: SourceFormat


TEMPLATES: tuple[Template, ...] = (
    Template(
        name="bell",
        description="Bell state: about half 00 and half 11, never 01 or 10.",
        format="qasm3",
        source=(
            'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\n'
            "h q[0];\ncx q[0], q[1];\nc = measure q;\n"
        ),
    ),
    Template(
        name="ghz-5",
        description="Five-qubit GHZ state: about half 00000 and half 11111.",
        format="qasm3",
        source=(
            'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[5] q;\nbit[5] c;\nh q[0];\n'
            + "".join(f"cx q[{i}], q[{i + 1}];\n" for i in range(4))
            + "c = measure q;\n"
        ),
    ),
    Template(
        name="bell-qasm2",
        description="The Bell state in OpenQASM 2.0.",
        format="qasm2",
        source=(
            'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\n'
            "h q[0];\ncx q[0],q[1];\nmeasure q -> c;\n"
        ),
    ),
    Template(
        name="rotation",
        description="ry(pi/3) on one qubit: 1 about a quarter of the time (sin²(π/6)).",
        format="qasm3",
        source=(
            'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit q;\nbit c;\n'
            "ry(pi/3) q;\nc = measure q;\n"
        ),
    ),
    Template(
        name="bell-quil",
        description="The Bell state in Quil.",
        format="quil",
        source="DECLARE ro BIT[2]\nH 0\nCNOT 0 1\nMEASURE 0 ro[0]\nMEASURE 1 ro[1]\n",
    ),
)
