"""The one reader of msgspec's error path (qbus.errors.validation_path)."""

from __future__ import annotations

import msgspec
import pytest

from qbus.errors import validation_message, validation_path


class _Inner(msgspec.Struct):
    shots: int


class _Outer(msgspec.Struct):
    items: list[_Inner]


def test_the_path_and_message_of_a_nested_validation_error() -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(b'{"items": [{"shots": 1}, {"shots": "x"}]}', type=_Outer)
    # If msgspec ever words its errors differently, this test is the one that says so.
    assert validation_path(caught.value) == "$.items[1].shots"
    assert validation_message(caught.value) == "Expected `int`, got `str`"


def test_an_error_without_a_path() -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(b'"x"', type=int)
    assert validation_path(caught.value) is None
    assert validation_message(caught.value) == str(caught.value)
