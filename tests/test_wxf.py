"""Tests of the WXF codec: exact encodings, wolframclient as an oracle both ways, hostile input."""

from __future__ import annotations

import enum
import math
import struct
import time
import tracemalloc
import zlib
from collections import OrderedDict, namedtuple
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from wolframclient.deserializers import WXFConsumerNumpy, binary_deserialize
from wolframclient.language.expression import WLFunction, WLSymbol
from wolframclient.serializers import export
from wolframclient.utils.packedarray import PackedArray as WCPackedArray

from rk_jupyter.link import wxf
from rk_jupyter.link.wxf import Delayed, Function, NumericArray, Symbol, WXFError, dumps, loads

ORACLE = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HOSTILE = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tok(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def same(a: Any, b: Any) -> bool:
    """Equality that also tells 1 from 1.0 from True, -0.0 from 0.0, int8 from int16 arrays."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(k1, k2) and same(v1, v2)
            for (k1, v1), (k2, v2) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, Function):
        return same(a.head, b.head) and same(list(a.args), list(b.args))
    if isinstance(a, Delayed):
        return same(a.value, b.value)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return a == b


# --- conversions to and from wolframclient's representation --------------------------------


def to_wc(v: Any, packed: bool = False) -> Any:
    """wolframclient's form of a value; ``packed`` makes it send PackedArray where it can."""
    if isinstance(v, Symbol):
        return WLSymbol(v.name)
    if isinstance(v, Function):
        return WLFunction(to_wc(v.head, packed), *(to_wc(a, packed) for a in v.args))
    if isinstance(v, list):
        return [to_wc(x, packed) for x in v]
    if isinstance(v, dict):
        return {to_wc(k, packed): to_wc(x, packed) for k, x in v.items()}
    if packed and isinstance(v, np.ndarray) and v.dtype.kind != "u":
        return v.view(WCPackedArray)
    return v


def from_wc(v: Any) -> Any:
    if isinstance(v, WLSymbol):
        return Symbol(v.name)
    if isinstance(v, WLFunction):
        args = [from_wc(a) for a in v.args]
        head = from_wc(v.head)
        if head == Symbol("Complex") and len(args) == 2 and all(type(a) is float for a in args):
            return complex(*args)
        return Function(head, *args)
    if isinstance(v, (list, tuple)):
        return [from_wc(x) for x in v]
    if isinstance(v, dict):
        return {from_wc(k): from_wc(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        return np.asarray(v)
    return v


# --- strategies -----------------------------------------------------------------------------

# Symbols that decode to something else (True/False/Null, List/Complex heads) or that
# wolframclient maps to Python values (None, Indeterminate) are tested separately.
RESERVED = {"True", "False", "Null", "None", "Indeterminate", "List", "Complex"}
names = st.from_regex(r"[A-Za-z$][A-Za-z0-9$]{0,7}(`[A-Za-z][A-Za-z0-9]{0,7}){0,2}", fullmatch=True)
symbols = st.builds(Symbol, names.filter(lambda n: n not in RESERVED))
BOUNDARIES = [s * (2**k) + d for k in (7, 15, 31, 63) for s in (1, -1) for d in (-1, 0, 1)]
ints = st.one_of(
    st.integers(-300, 300),
    st.integers(-(2**70), 2**70),
    st.integers(-(10**400), 10**400),
    st.sampled_from(BOUNDARIES),
)
floats = st.floats(allow_nan=False, allow_infinity=False)
decimals = st.builds(
    lambda m, e: Decimal(f"{m}E{e}"), st.integers(-(10**30), 10**30), st.integers(-40, 40)
)
complexes = st.complex_numbers(allow_nan=False, allow_infinity=False)
ARRAY_DTYPES = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8", "c8", "c16"]
arrays = hnp.arrays(
    dtype=st.sampled_from(ARRAY_DTYPES).map(np.dtype),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
)
text = st.text(st.characters(codec="utf-8"), max_size=20)  # non-BMP included, no surrogates
keys = st.one_of(st.integers(-(2**70), 2**70), text, symbols)


def values(leaves: st.SearchStrategy, delayed: bool = False) -> st.SearchStrategy:
    """Nested lists, dicts and Functions; with ``delayed``, dict values may be Delayed."""
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(
                keys,
                st.one_of(children, children.map(Delayed)) if delayed else children,
                max_size=4,
            ),
            st.builds(
                lambda head, args: Function(head, *args),
                # (wolframclient cannot decode a numpy array as a head)
                st.one_of(
                    symbols, symbols, children.filter(lambda c: not isinstance(c, np.ndarray))
                ),
                st.lists(children, max_size=4),
            ),
        ),
        max_leaves=25,
    )


common_leaves = st.one_of(
    ints, floats, text, st.binary(max_size=20), st.booleans(), st.none(), symbols, complexes
)
common = values(common_leaves)  # what wolframclient writes byte for byte as we do
everything = values(st.one_of(common_leaves, decimals, arrays))


# --- exact encodings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "body"),
    [
        (0, b"C\x00"),
        (127, b"C\x7f"),
        (-128, b"C\x80"),
        (128, b"j\x80\x00"),
        (-129, b"j\x7f\xff"),
        (32767, b"j\xff\x7f"),
        (32768, b"i\x00\x80\x00\x00"),
        (-(2**31), b"i\x00\x00\x00\x80"),
        (2**31, b"L" + (2**31).to_bytes(8, "little")),
        (2**63 - 1, b"L" + (2**63 - 1).to_bytes(8, "little")),
        (-(2**63), b"L" + (2**63).to_bytes(8, "little")),
        (2**63, b"I\x139223372036854775808"),
        (-(2**63) - 1, b"I\x14-9223372036854775809"),
        (1.5, b"r" + struct.pack("<d", 1.5)),
        ("", b"S\x00"),
        ("a😀", b"S\x05a\xf0\x9f\x98\x80"),
        (b"\x00\xff", b"B\x02\x00\xff"),
        (bytearray(b"ab"), b"B\x02ab"),
        (memoryview(b"ab"), b"B\x02ab"),
        (True, b"s\x04True"),
        (False, b"s\x05False"),
        (None, b"s\x04Null"),
        (Symbol("Global`x"), b"s\x08Global`x"),
        ([], b"f\x00s\x04List"),
        ((1, "a"), b"f\x02s\x04ListC\x01S\x01a"),
        (Function(Symbol("f"), 1), b"f\x01s\x01fC\x01"),
        (Function(Function(Symbol("g"), 2)), b"f\x00f\x01s\x01gC\x02"),
        ({"a": 1}, b"A\x01-S\x01aC\x01"),
        ({"a": Delayed(Symbol("x"))}, b"A\x01:S\x01as\x01x"),
        (1 + 2j, b"f\x02s\x07Complexr" + struct.pack("<d", 1) + b"r" + struct.pack("<d", 2)),
        (Decimal("1.50"), b"R\x071.50`3."),
        (Decimal("-12.5E+30"), b"R\x0c-1.25`3.*^31"),
        (Decimal("0.000"), b"R\x050``3."),
        (float("inf"), b"f\x01s\x10DirectedInfinityC\x01"),
        (float("-inf"), b"f\x01s\x10DirectedInfinityC\xff"),
        (float("nan"), b"s\x0dIndeterminate"),
        ("x" * 200, b"S\xc8\x01" + b"x" * 200),
    ],
)
def test_exact_encoding(value: Any, body: bytes) -> None:
    assert dumps(value) == b"8:" + body


@pytest.mark.parametrize(
    "value",
    [0, -1, 2**63, "x", [1, [2.5, "s"]], {"k": [True, None]}, float("inf"), float("nan"), 1j],
)
def test_encoding_matches_wolframclient(value: Any) -> None:
    assert dumps(value) == export(value, target_format="wxf")


def test_compressed_encoding() -> None:
    value = ["abc" * 100, list(range(300))]
    data = dumps(value, compress=True)
    assert data[:3] == b"8C:"
    assert zlib.decompress(data[3:]) == dumps(value)[2:]
    assert len(data) < len(dumps(value))
    assert loads(data) == value


# --- mapping choices ----------------------------------------------------------------------------


def test_special_symbols_and_heads() -> None:
    assert loads(b"8:s\x04True") is True
    assert loads(b"8:s\x05False") is False
    assert loads(b"8:s\x04Null") is None
    assert loads(b"8:s\x04None") == Symbol("None")
    assert loads(b"8:s\x0dIndeterminate") == Symbol("Indeterminate")
    assert loads(dumps(Function(Symbol("List"), 1, 2))) == [1, 2]
    # a List head whose length varint is not minimal is still a list
    assert loads(b"8:f\x01s\x84\x00ListC\x07") == [7]
    assert loads(b"8:f\x01s\x04ListS\x01a") == ["a"]


def test_complex_mapping() -> None:
    assert same(loads(dumps(1.5 - 2j)), 1.5 - 2j)
    exact = Function(Symbol("Complex"), 1, 2)  # Gaussian integer: stays exact
    assert same(loads(dumps(exact)), exact)
    assert same(loads(dumps(Function(Symbol("Complex"), 1.0))), Function(Symbol("Complex"), 1.0))


def test_non_finite_floats_follow_wolframclient() -> None:
    assert loads(dumps(float("inf"))) == Function(Symbol("DirectedInfinity"), 1)
    assert loads(export(float("-inf"), target_format="wxf")) == Function(
        Symbol("DirectedInfinity"), -1
    )
    assert loads(export(float("nan"), target_format="wxf")) == Symbol("Indeterminate")
    assert loads(dumps(Decimal("-Infinity"))) == Function(Symbol("DirectedInfinity"), -1)
    assert loads(dumps(Decimal("NaN"))) == Symbol("Indeterminate")
    # Real64 bytes holding inf/nan (which the kernel never sends) decode as floats
    assert loads(b"8:r" + struct.pack("<d", math.inf)) == math.inf
    assert math.isnan(loads(b"8:r" + struct.pack("<d", math.nan)))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"1.5`20.", "1.5000000000000000000"),
        (b"1.5``5.", "1.50000"),
        (b"-2.25`3.*^10", "-2.25E+10"),
        (b"3.`*^-5", "0.00003"),
        (b"1000``28", "1000." + "0" * 28),
        (b"0.``3.", "0.000"),
        (b"-0``0", "-0"),
        (b"12345678901234567890123.5`10.", "12345678901234567890123.5"),
        (b"1.`100000000.", "1." + "0" * wxf._MAX_BIGREAL_PAD),
        (b"5", "5"),
        (b".5`1.", "0.5"),
    ],
)
def test_bigreal_decoding(raw: bytes, expected: str) -> None:
    value = loads(b"8:R" + varint(len(raw)) + raw)
    assert type(value) is Decimal
    assert value.as_tuple() == Decimal(expected).as_tuple()


@pytest.mark.parametrize(
    "d", ["1.50", "-0.001", "1E+5", "0", "-0.00", "0E+3", "123456789012345678901234567890.123"]
)
def test_decimal_round_trip_keeps_digits(d: str) -> None:
    value = Decimal(d)
    back = loads(dumps(value))
    assert back == value
    if value:
        assert back.as_tuple() == value.as_tuple()


def test_huge_integers_beyond_str_limit() -> None:
    for n in (10**5000 + 17, -(7**20000), 3**70000):
        data = dumps(n)
        assert data[2:3] == b"I"
        back = loads(data)
        assert type(back) is int and back == n


def test_dict_details() -> None:
    d = {"a": Delayed([1, 2]), Symbol("b"): {"c": None}, 3: Delayed({"x": Delayed(4)})}
    assert same(loads(dumps(d)), d)
    assert same(loads(dumps(OrderedDict(x=1))), {"x": 1})
    # keys that decode unhashable are frozen, so the association still decodes
    assert same(loads(b"8:A\x01-f\x01s\x04ListC\x01C\x02"), {(1,): 2})
    nested = b"8:A\x01-A\x01-C\x01C\x02S\x01v"
    rule = Function(Symbol("Rule"), 1, 2)
    assert same(loads(nested), {Function(Symbol("Association"), rule): "v"})
    array_key = b"8:A\x01-\xc1\x00\x01\x02\x05\x06C\x00"
    assert same(loads(array_key), {(5, 6): 0})
    assert same(loads(dumps({(1, 2): "t"})), {(1, 2): "t"})
    # later duplicate keys win, like in the Wolfram Language
    assert loads(b"8:A\x02-C\x01C\x02-C\x01C\x03") == {1: 3}


def test_delayed_outside_a_dict_is_an_error() -> None:
    with pytest.raises(WXFError, match="Delayed"):
        dumps([Delayed(1)])


def test_subclasses_and_numpy_scalars() -> None:
    class Color(enum.IntEnum):
        RED = 300

    class Name(str):
        pass

    Point = namedtuple("Point", "x y")
    assert dumps(Color.RED) == dumps(300)
    assert dumps(Name("n")) == dumps("n")
    assert dumps(Point(1, 2)) == dumps([1, 2])
    assert same(loads(dumps([np.int64(5), np.float32(1.5), np.bool_(True)])), [5, 1.5, True])
    assert dumps(np.uint64(2**64 - 1)) == dumps(2**64 - 1)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "object"),
        ({1, 2}, "set"),
        ([1, frozenset()], "frozenset"),
        ({"k": len}, "builtin_function_or_method"),
        ((x for x in ()), "generator"),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), "date"),
        (np.longdouble(1), "longdouble"),
    ],
)
def test_unsupported_objects_name_their_type(value: Any, type_name: str) -> None:
    with pytest.raises(WXFError, match=type_name):
        dumps(value)


def test_unencodable_strings_and_recursion() -> None:
    with pytest.raises(WXFError, match="UTF-8"):
        dumps(["ok", "\ud800"])
    with pytest.raises(WXFError, match="UTF-8"):
        dumps(Symbol("\udfff"))
    loop: list = []
    loop.append(loop)
    with pytest.raises(WXFError, match="deep"):
        dumps(loop)


# --- arrays -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ARRAY_DTYPES)
def test_numpy_arrays(dtype: str) -> None:
    a = (np.arange(24) % 100).astype(dtype).reshape(2, 3, 4)
    data = dumps(a)
    assert data[2] == (0xC2 if dtype.startswith("u") else 0xC1)
    back = loads(data)
    assert same(back, a)
    assert back.flags.writeable and back.flags.owndata
    # big-endian and non-contiguous inputs are written as little-endian C order
    assert dumps(a.astype(np.dtype(dtype).newbyteorder(">"))) == data
    assert dumps(np.asfortranarray(a)) == data
    assert same(loads(dumps(a[:, ::2, 1:])), np.ascontiguousarray(a[:, ::2, 1:]))
    # without numpy: a NumericArray carrying the same bytes, and the same encoding
    raw = loads(data, use_numpy=False)
    assert isinstance(raw, NumericArray)
    assert raw.packed == (not dtype.startswith("u"))
    assert raw.dims == (2, 3, 4)
    assert raw.tolist() == a.tolist()
    assert dumps(raw) == data


def test_arrays_numpy_cannot_send_packed() -> None:
    assert same(loads(dumps(np.array([True, False]))), [True, False])
    assert same(loads(dumps(np.array([1.5], dtype=np.float16))), [1.5])
    assert same(loads(dumps(np.zeros((2, 0)))), [[], []])
    assert same(loads(dumps(np.array(7, dtype=np.int16))), 7)
    assert same(loads(dumps(np.array(["a", "b"]))), ["a", "b"])


def test_numeric_array_class() -> None:
    na = NumericArray("Real64", [2], struct.pack("<2d", 1.0, 2.0))
    data = dumps(na)
    assert data == b"8:\xc2\x23\x01\x02" + struct.pack("<2d", 1.0, 2.0)
    assert same(loads(data), np.array([1.0, 2.0]))
    assert loads(data, use_numpy=False) == na
    assert hash(loads(data, use_numpy=False)) == hash(na)
    c = NumericArray("ComplexReal32", (1,), struct.pack("<2f", 1, -1), packed=True)
    assert c.tolist() == [1 - 1j]
    for args, kwargs in [
        (("Real128", [1], b""), {}),
        (("UnsignedInteger8", [1], b"\x00"), {"packed": True}),
        (("Integer8", [], b""), {}),
        (("Integer8", [0], b""), {}),
        (("Integer16", [2], b"\x00\x00"), {}),
    ]:
        with pytest.raises(WXFError):
            NumericArray(*args, **kwargs)


def test_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wxf, "_numpy", None)
    data = dumps(np.arange(3, dtype=np.int8))
    assert loads(data) == NumericArray("Integer8", [3], b"\x00\x01\x02", packed=True)
    with pytest.raises(WXFError, match="numpy"):
        loads(data, use_numpy=True)


def test_decoded_arrays_do_not_alias_the_input() -> None:
    buf = bytearray(dumps(np.arange(4, dtype=np.int32)))
    a = loads(buf)
    buf[-1] = 0x7F
    assert a.tolist() == [0, 1, 2, 3]
    s = loads(memoryview(buf)[:])
    assert s[-1] != 3


# --- oracle: wolframclient, both directions -----------------------------------------------------


@ORACLE
@given(value=everything, compress=st.booleans())
def test_ours_to_wolframclient(value: Any, compress: bool) -> None:
    decoded = binary_deserialize(dumps(value, compress=compress), consumer=WXFConsumerNumpy())
    assert same(from_wc(decoded), value)


@ORACLE
@given(value=everything, compress=st.booleans(), packed=st.booleans())
def test_wolframclient_to_ours(value: Any, compress: bool, packed: bool) -> None:
    data = export(to_wc(value, packed), target_format="wxf", compress=compress)
    assert data.startswith(b"8C:" if compress else b"8:")
    assert same(loads(data), value)


@ORACLE
@given(value=common)
def test_same_bytes_as_wolframclient(value: Any) -> None:
    assert dumps(value) == export(to_wc(value), target_format="wxf")


@ORACLE
@given(value=values(st.one_of(common_leaves, decimals, arrays), delayed=True))
def test_self_round_trip(value: Any) -> None:
    assert same(loads(dumps(value)), value)
    assert same(loads(bytearray(dumps(value, compress=True))), value)


# --- hostile input --------------------------------------------------------------------------


def decodes_or_wxf_error(data: bytes, **kwargs: Any) -> None:
    """The only acceptable outcomes on arbitrary bytes: a value or WXFError."""
    for use_numpy in (True, False):
        try:
            loads(data, use_numpy=use_numpy, **kwargs)
        except WXFError:
            pass


TOKENS = b"fsSCjiLIrRBA-:\xc1\xc2"
token_soup = st.lists(
    st.one_of(st.sampled_from(list(TOKENS)), st.integers(0, 255), st.sampled_from([0x80, 0xFF])),
    max_size=60,
).map(bytes)


@HOSTILE
@given(body=st.one_of(st.binary(max_size=80), token_soup), header=st.sampled_from([b"8:", b""]))
def test_random_bytes(body: bytes, header: bytes) -> None:
    decodes_or_wxf_error(header + body)
    decodes_or_wxf_error(b"8C:" + zlib.compress(body))


@HOSTILE
@given(value=everything, data=st.data())
def test_mutated_encodings(value: Any, data: st.DataObject) -> None:
    enc = bytearray(dumps(value))
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        i = data.draw(st.integers(0, len(enc)))
        if kind == "flip" and i < len(enc):
            enc[i] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            enc[i:i] = data.draw(st.binary(min_size=1, max_size=9))
        elif kind == "delete":
            del enc[i : i + data.draw(st.integers(1, 9))]
        else:
            del enc[i:]
    decodes_or_wxf_error(bytes(enc))


@HOSTILE
@given(value=everything, extra=st.binary(min_size=1, max_size=8))
def test_prefixes_and_trailing_bytes_are_errors(value: Any, extra: bytes) -> None:
    # WXF is prefix-free: no strict prefix of an expression is an expression
    enc = dumps(value)
    for n in range(len(enc)) if len(enc) < 200 else range(0, len(enc), len(enc) // 150):
        with pytest.raises(WXFError):
            loads(enc[:n])
    with pytest.raises(WXFError, match="trailing"):
        loads(enc + extra)


HUGE = [
    b"f" + varint(2**60) + b"s\x01f",
    b"f" + varint(2**63 - 1) + b"s\x04List",
    b"A" + varint(2**62) + b"-C\x01C\x02",
    b"S" + varint(2**62) + b"abc",
    b"s" + varint(2**40) + b"abc",
    b"B" + varint(2**50) + b"abc",
    b"I" + varint(2**50) + b"123",
    b"R" + varint(2**50) + b"1.5",
    b"\xc1\x03" + varint(3) + varint(2**40) * 3 + b"\x00" * 16,
    b"\xc2\x34" + varint(2) + varint(2**62) + varint(2**62) + b"\x00" * 16,
    b"\xc1\x00" + varint(2**60) + b"\x01" * 30,
    b"\xc1\x00\x02" + varint(2**33) + varint(2**33) + b"\x00" * 64,
    b"f" + b"\xff" * 10 + b"\x01",  # varint longer than 10 bytes
]


@pytest.mark.parametrize("body", HUGE)
def test_huge_declared_lengths_fail_fast_and_small(body: bytes) -> None:
    plain, packed = b"8:" + body, b"8C:" + zlib.compress(body)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(WXFError):
            loads(plain)
        with pytest.raises(WXFError):
            loads(packed)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 256 * 1024


def test_nesting_limit() -> None:
    def nested_functions(n: int) -> bytes:
        return b"8:" + b"f\x01s\x01f" * n + b"C\x00"

    def nested_heads(n: int) -> bytes:
        return b"8:" + b"f\x00" * n + b"s\x01f"

    def nested_assocs(n: int) -> bytes:
        return b"8:" + b"A\x01-C\x00" * n + b"C\x00"

    for make in (nested_functions, nested_heads, nested_assocs):
        loads(make(512))
        with pytest.raises(WXFError, match="max_depth"):
            loads(make(513))
        loads(make(10), max_depth=10)
        with pytest.raises(WXFError, match="max_depth"):
            loads(make(11), max_depth=10)
        # a max_depth beyond the Python stack still ends in WXFError
        with pytest.raises(WXFError):
            loads(make(100_000), max_depth=10**9)
    with pytest.raises(WXFError, match="max_depth"):
        loads(dumps([[[1]]]), max_depth=2)


def test_zip_bomb_is_capped() -> None:
    body = b"B" + varint(16 << 20) + bytes(16 << 20)
    bomb = b"8C:" + zlib.compress(body, 9)
    assert len(bomb) < 50_000
    tracemalloc.start()
    try:
        with pytest.raises(WXFError, match="max_size"):
            loads(bomb, max_size=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert loads(bomb) == bytes(16 << 20)  # within the default 1 GiB cap it is just data
    with pytest.raises(WXFError, match="max_size"):
        loads(dumps(b"x" * 100), max_size=50)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"8",
        b"8:",
        b"7:C\x01",
        b"8X:C\x01",
        b"8C",
        b"8C:",
        b"8C:" + zlib.compress(b"C\x01")[:-2],  # truncated zlib stream
        b"8C:" + zlib.compress(b"C\x01") + b"junk",  # bytes after the zlib stream
        b"8C:not zlib at all",
        b"8:Z",  # unknown token
        b"8:C\x01\x00",  # trailing garbage
        b"8:S\x02\xc3\x28",  # invalid UTF-8
        b"8:s\x03\xed\xa0\x80",  # UTF-8-encoded surrogate
        b"8:f\x01S\x01\xffC\x01",
        b"8:f\x01s\x01fS\x01\x80",
        b"8:-C\x01C\x02",  # rule outside an association
        b"8:A\x01C\x01C\x02",  # association entry that is not a rule
        b"8:I\x00",
        b"8:" + tok(b"I", b"1a2"),
        b"8:" + tok(b"I", b"+12"),
        b"8:" + tok(b"I", b" 12"),
        b"8:" + tok(b"I", b"1_00"),
        b"8:" + tok(b"I", "١٢".encode()),  # non-ASCII digits
        b"8:" + tok(b"I", b"-"),
        b"8:R\x00",
        b"8:" + tok(b"R", b"abc"),
        b"8:" + tok(b"R", b"-"),
        b"8:" + tok(b"R", b"nan`2."),
        b"8:" + tok(b"R", b"1.5`2.3.4"),
        b"8:" + tok(b"R", b"1.`*^9999999999999999999"),  # beyond Decimal's exponents
        b"8:" + tok(b"R", b"1.`*^" + b"9" * 30),
        b"8:\xc1\x10\x01\x01\x00",  # unsigned type in a PackedArray
        b"8:\xc2\x99\x01\x01\x00",  # unknown NumericArray type
        b"8:\xc1\x00\x00",  # rank 0
        b"8:\xc1\x00\x01\x00",  # dimension 0
        b"8:\xc1\x03\x01\x02" + b"\x00" * 15,  # one byte short
        b"8:j\x01",
        b"8:L\x01\x02\x03",
        b"8:r\x00",
    ],
)
def test_invalid_input(data: bytes) -> None:
    with pytest.raises(WXFError):
        loads(data)
    with pytest.raises(WXFError):
        loads(data, use_numpy=False)


@pytest.mark.parametrize("data", ["8:C\x01", 17, None, [b"8:C\x01"]])
def test_non_bytes_input(data: Any) -> None:
    with pytest.raises(WXFError):
        loads(data)


def test_input_buffer_types() -> None:
    enc = dumps({"a": [1, 2.5, "x"]})
    for data in (enc, bytearray(enc), memoryview(enc), memoryview(b"pad" + enc)[3:]):
        assert loads(data) == {"a": [1, 2.5, "x"]}


def test_wxf_error_is_a_value_error() -> None:
    assert issubclass(WXFError, ValueError)
    with pytest.raises(ValueError):
        loads(b"nope")
