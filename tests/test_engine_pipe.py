"""The Mathics3 worker's pipe (engines/mathics/pipe.py): WXF messages in length-prefixed frames."""

from __future__ import annotations

import pytest

from rk_jupyter.agent.engines.mathics.pipe import HEADER, STARTED, encode_frame, take_frame
from rk_jupyter.link import wxf
from rk_jupyter.link.expr import Function, Symbol
from rk_jupyter.link.wxf import Delayed, NumericArray


def test_frames_are_taken_whole_and_in_order() -> None:
    value = {"a": [1, 2**80, 2.5, "s", None, True], Symbol("x"): Delayed(Function(Symbol("f"))),
             "array": NumericArray("Real64", [2], b"\0" * 16, packed=True), "bytes": b"\x00\xff"}
    first, second = encode_frame(["done", 3, ["value", value]]), encode_frame(["print", "hi"])
    buffer = bytearray(first[:-1])
    assert take_frame(buffer) is None and len(buffer) == len(first) - 1  # not whole yet
    buffer += first[-1:] + second + STARTED
    assert take_frame(buffer) == ["done", 3, ["value", value]]
    assert take_frame(buffer) == ["print", "hi"]
    assert take_frame(buffer) == ["started"]
    assert take_frame(buffer) is None and not buffer


def test_arrays_stay_numeric_arrays() -> None:
    """The agent passes values on to the kernel as they are: no numpy on the way."""
    array = NumericArray("ComplexReal64", [1, 2], b"\1" * 32, packed=True)
    [_, got] = take_frame(bytearray(encode_frame(["value", array])))  # type: ignore[misc]
    assert type(got) is NumericArray and got == array


@pytest.mark.parametrize("payload", [
    b"not wxf", wxf.dumps({"ev": "done"}), wxf.dumps([]), wxf.dumps([1, 2]), b"8:f\x05",
])
def test_a_broken_frame_is_a_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        take_frame(bytearray(HEADER.pack(len(payload)) + payload))


def test_lone_surrogates_travel_as_replacement_characters() -> None:
    """WXF strings are UTF-8, which has no lone surrogates; Mathics3 strings can hold them
    (FromCharacterCode[55296]): the message goes anyway, with U+FFFD in their place."""
    message = ["done", 1, ["value", {("\ud800",): ["a\udfffb", Function(Symbol("f"), "\ud801")],
                                     "k": Delayed("\ud802")}]]
    assert take_frame(bytearray(encode_frame(message))) == [
        "done", 1, ["value", {("\ufffd",): ["a\ufffdb", Function(Symbol("f"), "\ufffd")],
                              "k": Delayed("\ufffd")}]]
