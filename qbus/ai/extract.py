"""Pull the program out of a model's answer: a fenced block, or bare OpenQASM."""

from __future__ import annotations

import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_QASM_LANGS = {"qasm", "openqasm", "qasm3", "openqasm3", "qasm2"}
_YAML_LANGS = {"yaml", "yml"}


def _blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]


def extract_qasm(text: str) -> str | None:
    """The OpenQASM program in ``text``, or None when there is none.

    Prefers a block fenced as ``qasm``/``openqasm``; then any fenced block that starts
    with ``OPENQASM``; then the text from an ``OPENQASM`` header on (models often skip
    the fence). A closing fence without an opening one is cut off.
    """
    blocks = _blocks(text)
    for lang, body in blocks:
        if lang in _QASM_LANGS:
            return body.strip() + "\n"
    for _, body in blocks:
        if body.lstrip().upper().startswith("OPENQASM"):
            return body.strip() + "\n"
    at = text.find("OPENQASM")
    if at >= 0:
        return text[at:].split("```", 1)[0].strip() + "\n"
    return None


def extract_yaml(text: str) -> str | None:
    """The YAML document in ``text``: a ``yaml`` block, any single block, or the text."""
    blocks = _blocks(text)
    for lang, body in blocks:
        if lang in _YAML_LANGS:
            return body
    if len(blocks) == 1:
        return blocks[0][1]
    stripped = text.strip()
    return stripped or None
