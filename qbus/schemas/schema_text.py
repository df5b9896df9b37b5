"""JSON Schema whose text does not depend on the msgspec release that wrote it.

msgspec puts each Struct's docstring into its schema's ``description``. Up to 0.22 it
copied ``__doc__`` as written, with the source's indentation after the first line;
0.23 dedents it. The committed protocol files (``schemas/``) are compared byte for
byte with what the code generates, so the same code gave two answers depending on
which msgspec pip picked. Every description here goes through ``inspect.cleandoc``
(PEP 257's rule, which is also what 0.23 does and what Python 3.13 does to docstrings
at compile time): both releases then give the same files.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import msgspec

__all__ = ["normalize_descriptions", "schema", "schema_components"]


def normalize_descriptions(node: Any) -> Any:
    """``node`` with every ``description`` string cleaned by ``inspect.cleandoc``.

    Args:
        node: A JSON Schema (or any JSON-ready tree of dicts, lists and scalars).

    Returns:
        A new tree; ``node`` is not changed.
    """
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else normalize_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [normalize_descriptions(item) for item in node]
    return node


def schema(type_: Any) -> dict[str, Any]:
    """``msgspec.json.schema(type_)`` with normalised descriptions."""
    return normalize_descriptions(msgspec.json.schema(type_))


def schema_components(
    types: Iterable[Any], ref_template: str
) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """``msgspec.json.schema_components`` with normalised descriptions."""
    refs, components = msgspec.json.schema_components(types, ref_template=ref_template)
    return refs, normalize_descriptions(components)
