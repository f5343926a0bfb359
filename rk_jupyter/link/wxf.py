"""WXF, the Wolfram Language's binary expression format: a fast, hostile-input-safe codec.

The agent and the kernel exchange MathLink-style packets as WXF expressions, so this codec sits on
every message; it is standard library only (numpy is used when importable) so that it can travel
with the agent.  Format: reference.wolfram.com/language/tutorial/WXFFormatDescription.html.

Python ↔ Wolfram Language mapping (``dumps`` / ``loads``):

=============================  ===========================================================
Python                         Wolfram Language (WXF token)
=============================  ===========================================================
int                            Integer8/16/32/64 (smallest that fits), else BigInteger
float                          Real64; ``inf``/``-inf`` → ``DirectedInfinity[±1]`` and
                               ``nan`` → ``Indeterminate`` (as wolframclient does; the kernel
                               has no machine infinities), which decode as Function/Symbol
decimal.Decimal                BigReal "d.ddd`n.*^e" whose precision n is the Decimal's
                               digit count (zero: "0``a." with a its decimal places), so
                               Decimals round-trip digit for digit; decoding pads the mantissa
                               with zeros up to the declared precision or accuracy (at most
                               ``_MAX_BIGREAL_PAD`` zeros, so a short token cannot expand)
complex                        ``Complex[re, im]`` with Real64 parts; only that form decodes
                               back to complex (``Complex[1, 2]`` stays a Function)
str                            String (UTF-8; invalid UTF-8 is an error)
bytes, bytearray, memoryview   ByteArray ('B'); decodes to bytes
list, tuple                    ``List[...]``; ``List[...]`` decodes to list
dict                           Association of Rule ('-'); a ``Delayed(v)`` value is written
                               as RuleDelayed (':') and RuleDelayed decodes to ``Delayed``.
                               Keys that decode unhashable are frozen: list → tuple,
                               dict → ``Association[Rule[k, v], ...]`` Function,
                               array → nested tuples.  Keys Python deems equal (1, 1.0,
                               True) merge, the later value winning as in the language
True, False, None              symbols True, False, Null (Symbol("None") stays a Symbol)
Symbol, Function               themselves (expr.py); ``Function(Symbol("List"), …)`` decodes
                               as a list
numpy.ndarray                  PackedArray for int8..int64, float32/64, complex64/128;
                               NumericArray for uint8..uint64; other dtypes (bool, str, object,
                               float16, …) and arrays with a zero dimension as nested lists
                               via ``tolist()``; numpy scalars via ``.item()``
NumericArray (this module)     PackedArray or NumericArray as its ``packed`` flag says
=============================  ===========================================================

Decoding PackedArray and NumericArray gives numpy arrays (own, writable copies) when numpy is
importable, else ``NumericArray`` objects; ``loads(..., use_numpy=False)`` forces the latter,
which also keeps the PackedArray/NumericArray distinction that numpy arrays lose.

Decoding never raises anything but ``WXFError``: every length is checked against the bytes left
before anything is allocated, nesting is bounded by ``max_depth``, ``8C:`` bodies are inflated
with a ``max_size`` cap, and one message holds exactly one expression (trailing bytes are an
error).  Within one decoded message, equal symbols are the same ``Symbol`` object.
"""

from __future__ import annotations

import re
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from .expr import Function, Symbol

__all__ = [
    "Delayed",
    "Function",
    "NumericArray",
    "Symbol",
    "WXFError",
    "dumps",
    "loads",
]


class WXFError(ValueError):
    """Bytes that are not valid WXF, or a Python value that has no WXF form."""


class Delayed:
    """A dict value that travels as ``key :> value`` (RuleDelayed) instead of ``key -> value``.

    Associations coming from the kernel may hold delayed rules; wrapping the value keeps that
    distinction through a loads/dumps round trip while keeping the value reachable as ``.value``.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Delayed) and other.value == self.value

    def __hash__(self) -> int:
        return hash((Delayed, self.value))

    def __repr__(self) -> str:
        return f"Delayed({self.value!r})"


# WXF array element types: code -> (name, item size, struct code, numpy dtype).
_ARRAY_TYPES: dict[int, tuple[str, int, str, str]] = {
    0x00: ("Integer8", 1, "b", "<i1"),
    0x01: ("Integer16", 2, "h", "<i2"),
    0x02: ("Integer32", 4, "i", "<i4"),
    0x03: ("Integer64", 8, "q", "<i8"),
    0x10: ("UnsignedInteger8", 1, "B", "<u1"),
    0x11: ("UnsignedInteger16", 2, "H", "<u2"),
    0x12: ("UnsignedInteger32", 4, "I", "<u4"),
    0x13: ("UnsignedInteger64", 8, "Q", "<u8"),
    0x22: ("Real32", 4, "f", "<f4"),
    0x23: ("Real64", 8, "d", "<f8"),
    0x33: ("ComplexReal32", 8, "f", "<c8"),
    0x34: ("ComplexReal64", 16, "d", "<c16"),
}
_PACKED_CODES = frozenset((0x00, 0x01, 0x02, 0x03, 0x22, 0x23, 0x33, 0x34))
_TYPE_CODES = {name: code for code, (name, *_) in _ARRAY_TYPES.items()}
# numpy (dtype.kind, itemsize) -> WXF array type code
_NUMPY_CODES = {
    ("i", 1): 0x00,
    ("i", 2): 0x01,
    ("i", 4): 0x02,
    ("i", 8): 0x03,
    ("u", 1): 0x10,
    ("u", 2): 0x11,
    ("u", 4): 0x12,
    ("u", 8): 0x13,
    ("f", 4): 0x22,
    ("f", 8): 0x23,
    ("c", 8): 0x33,
    ("c", 16): 0x34,
}


class NumericArray:
    """A PackedArray (``packed=True``) or NumericArray held as little-endian bytes.

    What arrays decode to without numpy; also a way to send a NumericArray of a signed or real
    type, which a numpy array would be sent as a PackedArray.  ``data`` is immutable ``bytes``
    so that the value is hashable and cannot change under the caller.
    """

    __slots__ = ("type", "dims", "data", "packed")

    def __init__(
        self, type: str, dims: Sequence[int], data: bytes, *, packed: bool = False
    ) -> None:
        code = _TYPE_CODES.get(type)
        if code is None:
            raise WXFError(f"unknown array type {type!r}")
        if packed and code not in _PACKED_CODES:
            raise WXFError(f"a PackedArray cannot hold {type}")
        dims = tuple(int(d) for d in dims)
        if not dims or min(dims) <= 0:
            raise WXFError("array dimensions must be a non-empty list of positive integers")
        count = 1
        for d in dims:
            count *= d
        data = bytes(data)
        if len(data) != count * _ARRAY_TYPES[code][1]:
            raise WXFError(f"{len(data)} bytes do not make a {type} array of shape {dims}")
        self.type = type
        self.dims = dims
        self.data = data
        self.packed = packed

    def tolist(self) -> list:
        """Nested lists of int, float or complex, like ``numpy.ndarray.tolist``."""
        _, size, fmt, _ = _ARRAY_TYPES[_TYPE_CODES[self.type]]
        count = len(self.data) // struct.calcsize(fmt)
        flat: list = list(struct.unpack(f"<{count}{fmt}", self.data))
        if self.type.startswith("Complex"):
            flat = [complex(a, b) for a, b in zip(flat[0::2], flat[1::2], strict=True)]
        for d in reversed(self.dims[1:]):
            flat = [flat[i : i + d] for i in range(0, len(flat), d)]
        return flat

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, NumericArray)
            and other.type == self.type
            and other.dims == self.dims
            and other.packed == self.packed
            and other.data == self.data
        )

    def __hash__(self) -> int:
        return hash((NumericArray, self.type, self.dims, self.packed, self.data))

    def __repr__(self) -> str:
        kind = "packed" if self.packed else "numeric"
        return f"NumericArray({self.type!r}, {self.dims!r}, <{len(self.data)} bytes>, {kind})"


# ---------------------------------------------------------------------------------------------
# Encoding: one recursive function appending to a bytearray; the common types are tested inline
# (cheaper than a call), the rest dispatched through _ENCODERS by exact type.

_ST_J = struct.Struct("<Bh").pack
_ST_I = struct.Struct("<Bi").pack
_ST_L = struct.Struct("<Bq").pack
_ST_R = struct.Struct("<Bd").pack
_SMALL_INTS = [bytes((0x43, i & 0xFF)) for i in range(-128, 128)]
_LIST_HEADS = [bytes((0x66, n)) + b"s\x04List" for n in range(128)]
_MAX_SYMBOL_CACHE = 4096
_symbol_bytes: dict[str, bytes] = {}
#: In ``_dump_parts``, binary data (ByteArray, array bodies) at least this long is referenced,
#: not copied into the encoded bytes.
_PART_MIN = 64 * 1024


class _Parts(bytearray):
    """The output of ``_dump_parts``: encoded bytes so far, plus ``parts`` already cut off."""

    __slots__ = ("parts",)

    def __init__(self, initial: bytes) -> None:
        super().__init__(initial)
        self.parts: list[bytes | memoryview] = []

    def add_view(self, view: memoryview) -> None:
        """Cut the bytes so far off as a part, then reference ``view`` (a byte-format view)."""
        if self:
            self.parts.append(bytes(self))
            del self[:]
        self.parts.append(view)


def varint(n: int) -> bytes:
    """Little-endian base-128 length prefix (also the frame header's and delta.py's)."""
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _sym(name: str) -> bytes:
    """Token bytes of a symbol; cached because packets reuse a few names over and over."""
    b = _symbol_bytes.get(name)
    if b is None:
        if name.__class__ is not str:
            raise WXFError(f"symbol name must be a str, not {type(name).__name__}")
        raw = _utf8(name)
        b = b"s" + varint(len(raw)) + raw
        if len(_symbol_bytes) < _MAX_SYMBOL_CACHE:
            _symbol_bytes[name] = b
    return b


def _utf8(s: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise WXFError(f"string is not encodable as UTF-8 (lone surrogate?): {e}") from None


_SYM_TRUE = _sym("True")
_SYM_FALSE = _sym("False")
_SYM_NULL = _sym("Null")
_SYM_INDETERMINATE = _sym("Indeterminate")
_INF = b"f\x01" + _sym("DirectedInfinity") + b"C\x01"
_NEG_INF = b"f\x01" + _sym("DirectedInfinity") + b"C\xff"
_COMPLEX_HEAD = b"f\x02" + _sym("Complex")


def _enc(o: Any, out: bytearray) -> None:
    """Append the WXF form of ``o`` (without header) to ``out``."""
    t = o.__class__
    if t is int:
        if -128 <= o < 128:
            out += _SMALL_INTS[o + 128]
        elif -32768 <= o < 32768:
            out += _ST_J(0x6A, o)
        elif -2147483648 <= o < 2147483648:
            out += _ST_I(0x69, o)
        elif -9223372036854775808 <= o < 9223372036854775808:
            out += _ST_L(0x4C, o)
        else:
            raw = _int_to_str(o).encode("ascii")
            out.append(0x49)
            out += varint(len(raw))
            out += raw
    elif t is str:
        raw = o.encode("utf-8")
        n = len(raw)
        out.append(0x53)
        if n < 128:
            out.append(n)
        else:
            out += varint(n)
        out += raw
    elif t is float:
        if o - o == 0.0:
            out += _ST_R(0x72, o)
        else:
            out += _special_float(o)
    elif t is list or t is tuple:
        n = len(o)
        out += _LIST_HEADS[n] if n < 128 else b"f" + varint(n) + b"s\x04List"
        for x in o:
            t = x.__class__
            if t is int:
                if -128 <= x < 128:
                    out += _SMALL_INTS[x + 128]
                elif -32768 <= x < 32768:
                    out += _ST_J(0x6A, x)
                elif -2147483648 <= x < 2147483648:
                    out += _ST_I(0x69, x)
                elif -9223372036854775808 <= x < 9223372036854775808:
                    out += _ST_L(0x4C, x)
                else:
                    _enc(x, out)
            elif t is float and x - x == 0.0:
                out += _ST_R(0x72, x)
            elif t is str:
                raw = x.encode("utf-8")
                n = len(raw)
                out.append(0x53)
                if n < 128:
                    out.append(n)
                else:
                    out += varint(n)
                out += raw
            else:
                _enc(x, out)
    elif t is Function:
        args = o.args
        n = len(args)
        out.append(0x66)
        if n < 128:
            out.append(n)
        else:
            out += varint(n)
        head = o.head
        if head.__class__ is Symbol:
            out += _sym(head.name)
        else:
            _enc(head, out)
        for x in args:
            t = x.__class__
            if t is Symbol:
                out += _sym(x.name)
            elif t is int and -128 <= x < 128:
                out += _SMALL_INTS[x + 128]
            else:
                _enc(x, out)
    elif t is Symbol:
        out += _sym(o.name)
    else:
        enc = _ENCODERS.get(t)
        if enc is None:
            enc = _ENCODERS[t] = _encoder_for(o)  # raises WXFError if there is none
        enc(o, out)


def _special_float(o: float) -> bytes:
    if o != o:
        return _SYM_INDETERMINATE
    return _INF if o > 0 else _NEG_INF


def _enc_dict(o: dict, out: bytearray) -> None:
    out.append(0x41)
    out += varint(len(o))
    for k, v in o.items():
        if v.__class__ is Delayed:
            out.append(0x3A)
            _enc(k, out)
            _enc(v.value, out)
        else:
            out.append(0x2D)
            _enc(k, out)
            _enc(v, out)


def _enc_bytes(o: Any, out: bytearray) -> None:
    if o.__class__ is memoryview and not (o.c_contiguous and o.format in ("B", "b", "c")):
        o = o.tobytes()
    n = o.nbytes if o.__class__ is memoryview else len(o)
    out.append(0x42)
    out += varint(n)
    if n >= _PART_MIN and out.__class__ is _Parts:
        out.add_view(memoryview(o).cast("B"))
    else:
        out += o


def _enc_bool(o: bool, out: bytearray) -> None:
    out += _SYM_TRUE if o else _SYM_FALSE


def _enc_none(o: None, out: bytearray) -> None:
    out += _SYM_NULL


def _enc_str(o: str, out: bytearray) -> None:
    raw = _utf8(o)
    out.append(0x53)
    out += varint(len(raw))
    out += raw


def _enc_complex(o: complex, out: bytearray) -> None:
    out += _COMPLEX_HEAD
    _enc(o.real, out)
    _enc(o.imag, out)


_MAX_BIGREAL_PAD = 256


def _enc_decimal(o: Decimal, out: bytearray) -> None:
    if not o.is_finite():
        if o.is_nan():
            out += _SYM_INDETERMINATE
        else:
            out += _INF if o > 0 else _NEG_INF
        return
    sign, digits, exp = o.as_tuple()
    ds = "".join(map(str, digits)).lstrip("0")
    minus = "-" if sign else ""
    if not ds:
        # Zero has no significant digits: its accuracy (``) says how many decimals it has.
        text = f"{minus}0``{-exp}."
    else:
        n = len(ds)
        e10 = exp + n - 1
        text = f"{minus}{ds[0]}.{ds[1:]}`{n}." + (f"*^{e10}" if e10 else "")
    raw = text.encode("ascii")
    out.append(0x52)
    out += varint(len(raw))
    out += raw


def _enc_numeric_array(o: NumericArray, out: bytearray) -> None:
    out.append(0xC1 if o.packed else 0xC2)
    out.append(_TYPE_CODES[o.type])
    out += varint(len(o.dims))
    for d in o.dims:
        out += varint(d)
    if len(o.data) >= _PART_MIN and out.__class__ is _Parts:
        out.add_view(memoryview(o.data))
    else:
        out += o.data


def _enc_delayed(o: Delayed, out: bytearray) -> None:
    raise WXFError("a Delayed value can only be a dict value (RuleDelayed exists only there)")


def _enc_ndarray(o: Any, out: bytearray) -> None:
    shape = o.shape
    code = _NUMPY_CODES.get((o.dtype.kind, o.dtype.itemsize))
    if not shape:
        _enc(o.item(), out)
        return
    if code is None or 0 in shape:
        # WXF arrays must have positive dimensions and a numeric element type.
        _enc(o.tolist(), out)
        return
    out.append(0xC2 if o.dtype.kind == "u" else 0xC1)
    out.append(code)
    out += varint(len(shape))
    for d in shape:
        out += varint(d)
    le = o.astype(o.dtype.newbyteorder("<"), copy=False)
    if o.nbytes >= _PART_MIN and out.__class__ is _Parts:
        np = sys.modules["numpy"]
        out.add_view(memoryview(np.ascontiguousarray(le).reshape(-1).view(np.uint8)))
    else:
        out += le.tobytes()


def _enc_numpy_scalar(o: Any, out: bytearray) -> None:
    item = o.item()
    if item.__class__ is o.__class__:  # e.g. longdouble: no Python equivalent
        raise WXFError(f"cannot encode numpy scalar of type {type(o).__name__}")
    _enc(item, out)


def _enc_list(o: Any, out: bytearray) -> None:
    _enc(list(o), out)


_ENCODERS: dict[type, Callable[[Any, bytearray], None]] = {
    int: _enc,
    str: _enc,
    float: _enc,
    list: _enc,
    tuple: _enc,
    Function: _enc,
    Symbol: _enc,
    dict: _enc_dict,
    bool: _enc_bool,
    type(None): _enc_none,
    bytes: _enc_bytes,
    bytearray: _enc_bytes,
    memoryview: _enc_bytes,
    complex: _enc_complex,
    Decimal: _enc_decimal,
    NumericArray: _enc_numeric_array,
    Delayed: _enc_delayed,
}


def _encoder_for(o: Any) -> Callable[[Any, bytearray], None]:
    """Encoder of a type not in _ENCODERS: numpy types, or subclasses of supported types."""
    np = sys.modules.get("numpy")  # if numpy is not imported, o cannot be a numpy object
    if np is not None:
        if isinstance(o, np.ndarray):
            return _enc_ndarray
        if isinstance(o, np.generic):
            return _enc_numpy_scalar
    for base in type(o).__mro__[1:]:
        enc = _ENCODERS.get(base)
        if enc is not None:
            if enc is _enc:  # _enc dispatches on the exact type: convert the subclass first
                return _SUBCLASS_ENCODERS[base]
            return enc
    raise WXFError(f"cannot encode object of type {type(o).__module__}.{type(o).__qualname__}")


_SUBCLASS_ENCODERS: dict[type, Callable[[Any, bytearray], None]] = {
    int: lambda o, out: _enc(int(o), out),
    str: _enc_str,
    float: lambda o, out: _enc(float(o), out),
    list: _enc_list,
    tuple: _enc_list,
    Function: lambda o, out: _enc(Function(o.head, *o.args), out),
    Symbol: lambda o, out: _enc(Symbol(o.name), out),
}


def _int_to_str(n: int) -> str:
    """str(n) without tripping the interpreter's int/str conversion length limit."""
    limit = _int_str_limit()
    if not limit or n.bit_length() < limit * 3:  # 3 bits per digit: safely below the limit
        return str(n)
    if n < 0:
        return "-" + _int_to_str(-n)
    k = max(1, int(n.bit_length() * 0.30103) // 2)
    hi, lo = divmod(n, 10**k)
    return _int_to_str(hi) + _int_to_str(lo).rjust(k, "0")


def _int_str_limit() -> int:
    get = getattr(sys, "get_int_max_str_digits", None)
    return get() if get is not None else 0


def _str_to_int(s: str) -> int:
    """int(s) for an ASCII string of digits, however long (divide and conquer past the limit)."""
    limit = _int_str_limit()
    if not limit or len(s) <= limit:
        return int(s)
    if s[0] == "-":
        return -_str_to_int(s[1:])
    k = len(s) // 2
    return _str_to_int(s[:-k]) * 10**k + _str_to_int(s[-k:])


def dumps(expr: Any, *, compress: bool = False) -> bytes:
    """Serialize ``expr`` to WXF (``8:`` header, or zlib-compressed ``8C:`` if ``compress``).

    Raises WXFError, naming the type, for values with no WXF form (see the module docstring).
    """
    if compress:
        out = bytearray()
        _enc_top(expr, out)
        return b"8C:" + zlib.compress(out)
    parts = _dump_parts(expr)
    return parts[0] if len(parts) == 1 else b"".join(parts)  # one copy of big binary data


def _dump_parts(expr: Any) -> list[bytes | memoryview]:
    """``dumps(expr)`` as a list of pieces to be sent one after the other: ByteArray and array
    bodies of at least ``_PART_MIN`` bytes stay views of the caller's objects (no copy), so a
    large payload can go to the socket, or to a compressor, straight from where it lies.  The
    views are only valid while the caller's objects are unchanged (the link uses them at once).
    """
    out = _Parts(b"8:")
    _enc_top(expr, out)
    if out or not out.parts:
        out.parts.append(bytes(out))
    return out.parts


def _enc_top(expr: Any, out: bytearray) -> None:
    try:
        _enc(expr, out)
    except RecursionError:
        raise WXFError("expression nested too deeply (or recursive) to encode") from None
    except UnicodeEncodeError as e:
        raise WXFError(f"string is not encodable as UTF-8 (lone surrogate?): {e}") from None


# ---------------------------------------------------------------------------------------------
# Decoding: a recursive-descent parser over bytes with an integer offset; values are built as
# they are parsed (no token objects).  Leaf tokens inside functions are decoded inline.

_U_H = struct.Struct("<h").unpack_from
_U_I = struct.Struct("<i").unpack_from
_U_Q = struct.Struct("<q").unpack_from
_U_D = struct.Struct("<d").unpack_from
_MISSING = object()
_SPECIAL_SYMBOLS = {b"True": True, b"False": False, b"Null": None}
_DIGITS = re.compile(rb"-?[0-9]+")
_BIGREAL = re.compile(
    rb"(-?)([0-9]*)(?:\.([0-9]*))?"  # sign, integer digits, fraction digits
    rb"(?:(``?)(-?[0-9]*(?:\.[0-9]*)?))?"  # precision (`) or accuracy (``)
    rb"(?:\*\^(-?[0-9]{1,20}))?"  # exponent
)
_DEFAULT_MAX_SIZE = 1 << 30
_LIST = object()  # marks a List head while its arguments are parsed
_new_function = object.__new__
_numpy: Any = _MISSING


def _get_numpy() -> Any:
    global _numpy
    if _numpy is _MISSING:
        try:
            import numpy
        except ImportError:
            numpy = None
        _numpy = numpy
    return _numpy


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A varint at ``pos`` and the position after it (the decoder handles single-byte ones
    itself; delta.py reads its header with it); IndexError when ``buf`` ends inside it."""
    n = 0
    shift = 0
    for i in range(pos, pos + 10):
        b = buf[i]
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i + 1
        shift += 7
    raise WXFError(f"varint at offset {pos} is longer than 10 bytes")


def _parse_bigreal(raw: bytes) -> Decimal:
    m = _BIGREAL.fullmatch(raw)
    if m is None or not (m.group(2) or m.group(3)):
        raise WXFError(f"invalid BigReal {raw[:40]!r}")
    sign, ints, frac, mark, prec, exp = m.groups()
    frac = frac or b""
    digits = (ints + frac).lstrip(b"0")
    e = -len(frac) + (int(exp) if exp else 0)
    if prec and prec not in (b"-", b".", b"-."):
        p = float(prec)
        if mark == b"`":  # precision: significant digits
            pad = p - len(digits) if digits else 0.0
        else:  # accuracy: digits after the decimal point
            pad = e + p
        pad = int(min(max(pad, 0.0), _MAX_BIGREAL_PAD))
        if pad:
            digits += b"0" * pad
            e -= pad
    text = b"%s%sE%d" % (sign, digits or b"0", e)
    return Decimal(text.decode("ascii"))


def _freeze(v: Any) -> Any:
    """A hashable stand-in for a decoded association key that is a list, dict or array."""
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        rule = Symbol("Rule")
        return Function(
            Symbol("Association"), *(Function(rule, k, _freeze(x)) for k, x in v.items())
        )
    if isinstance(v, Function):
        return Function(_freeze(v.head), *(_freeze(a) for a in v.args))
    if hasattr(v, "tolist") and not isinstance(v, NumericArray):  # numpy array
        return _freeze(v.tolist())
    return v


def _decode(buf: Any, start: int, max_depth: int, use_numpy: bool) -> Any:
    """Parse one expression that must span ``buf[start:]``.  ``buf`` is ``bytes`` or an
    ``mmap`` (the link's receive buffer): both index to int and slice to ``bytes``, so binary
    data is copied once, when it is sliced out; offsets in messages are positions in ``buf``."""
    end = len(buf)
    symbols: dict[bytes, Any] = dict(_SPECIAL_SYMBOLS)
    symbol_get = symbols.get
    np = _get_numpy() if use_numpy else None

    def array(tok: int, pos: int) -> tuple[Any, int]:
        code = buf[pos]
        info = _ARRAY_TYPES.get(code)
        if info is None or (tok == 0xC1 and code not in _PACKED_CODES):
            kind = "PackedArray" if tok == 0xC1 else "NumericArray"
            raise WXFError(f"invalid {kind} element type 0x{code:02x} at offset {pos}")
        rank = buf[pos + 1]
        pos += 2
        if rank & 0x80:
            rank, pos = read_varint(buf, pos - 1)
        if rank == 0 or rank > end - pos:
            raise WXFError(f"invalid array rank {rank}")
        size = info[1]
        left = end - pos
        dims = []
        for _ in range(rank):
            d = buf[pos]
            pos += 1
            if d & 0x80:
                d, pos = read_varint(buf, pos - 1)
            if d == 0:
                raise WXFError("array dimension 0")
            size *= d
            if size > left:  # checked per dimension: the product never grows huge
                raise WXFError(f"array of {size}+ bytes overruns the input")
            dims.append(d)
        stop = pos + size
        if stop > end:
            raise WXFError("array data overruns the input")
        if np is not None:
            value = np.frombuffer(buf, info[3], size // info[1], pos).reshape(dims).copy()
        else:
            value = NumericArray(info[0], dims, buf[pos:stop], packed=tok == 0xC1)
        return value, stop

    def parse(pos: int, depth: int) -> tuple[Any, int]:
        tok = buf[pos]
        pos += 1
        if tok == 0x66:  # f: Function
            n = buf[pos]
            pos += 1
            if n & 0x80:
                n, pos = read_varint(buf, pos - 1)
            if n > end - pos:
                raise WXFError(f"function of {n} arguments overruns the input")
            if not depth:
                raise WXFError(f"expression nested deeper than max_depth={max_depth}")
            depth -= 1
            if buf[pos] == 0x73:  # the head is nearly always a symbol: decode it here
                k = buf[pos + 1]
                pos += 2
                if k & 0x80:
                    k, pos = read_varint(buf, pos - 1)
                stop = pos + k
                if stop > end:
                    raise WXFError(f"symbol at offset {pos} overruns the input")
                raw = buf[pos:stop]
                pos = stop
                if raw == b"List":
                    head = _LIST
                else:
                    head = symbol_get(raw, _MISSING)
                    if head is _MISSING:
                        head = symbols[raw] = Symbol(raw.decode("utf-8"))
            else:
                head, pos = parse(pos, depth)
            args = []
            append = args.append
            for _ in range(n):
                t = buf[pos]
                if t == 0x43:
                    v = buf[pos + 1]
                    append(v - 256 if v > 127 else v)
                    pos += 2
                elif t == 0x66:
                    v, pos = parse(pos, depth)
                    append(v)
                elif t == 0x72:
                    append(_U_D(buf, pos + 1)[0])
                    pos += 9
                elif t == 0x53:
                    k = buf[pos + 1]
                    pos += 2
                    if k & 0x80:
                        k, pos = read_varint(buf, pos - 1)
                    stop = pos + k
                    if stop > end:
                        raise WXFError(f"string at offset {pos} overruns the input")
                    append(buf[pos:stop].decode("utf-8"))
                    pos = stop
                elif t == 0x73:
                    k = buf[pos + 1]
                    pos += 2
                    if k & 0x80:
                        k, pos = read_varint(buf, pos - 1)
                    stop = pos + k
                    if stop > end:
                        raise WXFError(f"symbol at offset {pos} overruns the input")
                    raw = buf[pos:stop]
                    v = symbol_get(raw, _MISSING)
                    if v is _MISSING:
                        v = symbols[raw] = Symbol(raw.decode("utf-8"))
                    append(v)
                    pos = stop
                elif t == 0x69:
                    append(_U_I(buf, pos + 1)[0])
                    pos += 5
                elif t == 0x6A:
                    append(_U_H(buf, pos + 1)[0])
                    pos += 3
                elif t == 0x4C:
                    append(_U_Q(buf, pos + 1)[0])
                    pos += 9
                else:
                    v, pos = parse(pos, depth)
                    append(v)
            if head is _LIST:
                return args, pos
            if (
                n == 2
                and head.__class__ is Symbol
                and head.name == "Complex"
                and args[0].__class__ is float
                and args[1].__class__ is float
            ):
                return complex(args[0], args[1]), pos
            f = _new_function(Function)
            f.head = head
            f.args = tuple(args)
            return f, pos
        if tok == 0x43:  # C: Integer8
            v = buf[pos]
            return (v - 256 if v > 127 else v), pos + 1
        if tok == 0x72:  # r: Real64
            return _U_D(buf, pos)[0], pos + 8
        if tok == 0x53 or tok == 0x73 or tok == 0x42 or tok == 0x49 or tok == 0x52:
            n = buf[pos]
            pos += 1
            if n & 0x80:
                n, pos = read_varint(buf, pos - 1)
            stop = pos + n
            if stop > end:
                raise WXFError(f"{chr(tok)} of {n} bytes at offset {pos} overruns the input")
            raw = buf[pos:stop]
            if tok == 0x53:  # S: String
                return raw.decode("utf-8"), stop
            if tok == 0x73:  # s: Symbol
                v = symbol_get(raw, _MISSING)
                if v is _MISSING:
                    v = symbols[raw] = Symbol(raw.decode("utf-8"))
                return v, stop
            if tok == 0x42:  # B: ByteArray
                return raw, stop
            if tok == 0x49:  # I: BigInteger
                if _DIGITS.fullmatch(raw) is None:
                    raise WXFError(f"invalid BigInteger {raw[:40]!r}")
                return _str_to_int(raw.decode("ascii")), stop
            return _parse_bigreal(raw), stop  # R: BigReal
        if tok == 0x69:  # i: Integer32
            return _U_I(buf, pos)[0], pos + 4
        if tok == 0x6A:  # j: Integer16
            return _U_H(buf, pos)[0], pos + 2
        if tok == 0x4C:  # L: Integer64
            return _U_Q(buf, pos)[0], pos + 8
        if tok == 0x41:  # A: Association
            n = buf[pos]
            pos += 1
            if n & 0x80:
                n, pos = read_varint(buf, pos - 1)
            if n > end - pos:
                raise WXFError(f"association of {n} rules overruns the input")
            if not depth:
                raise WXFError(f"expression nested deeper than max_depth={max_depth}")
            depth -= 1
            d: dict = {}
            for _ in range(n):
                rule = buf[pos]
                if rule != 0x2D and rule != 0x3A:
                    raise WXFError(f"expected a rule in an association at offset {pos}")
                k, pos = parse(pos + 1, depth)
                v, pos = parse(pos, depth)
                if rule == 0x3A:
                    v = Delayed(v)
                try:
                    d[k] = v
                except TypeError:
                    d[_freeze(k)] = v
            return d, pos
        if tok == 0xC1 or tok == 0xC2:
            return array(tok, pos)
        if tok == 0x2D or tok == 0x3A:
            raise WXFError(f"rule outside an association at offset {pos - 1}")
        raise WXFError(f"unknown WXF token 0x{tok:02x} at offset {pos - 1}")

    value, pos = parse(start, max_depth)
    if pos != end:
        if pos > end:
            raise WXFError("truncated WXF input")
        raise WXFError(f"{end - pos} trailing bytes after the expression")
    return value


def loads(
    data: bytes | bytearray | memoryview,
    *,
    max_depth: int = 512,
    max_size: int = _DEFAULT_MAX_SIZE,
    use_numpy: bool | None = None,
) -> Any:
    """Deserialize one WXF expression (``8:`` or ``8C:``); raises only WXFError on bad input.

    ``max_depth`` bounds nesting of functions and associations; ``max_size`` bounds the body
    (after inflating ``8C:``); ``use_numpy`` picks numpy arrays or ``NumericArray`` objects for
    packed/numeric arrays (default: numpy if importable).
    """
    try:
        if data.__class__ is bytes:
            view = data  # immutable: decoded in place, binary data is copied once when sliced
        else:
            view = memoryview(data)  # TypeError (→ WXFError) for non-buffers
        head = bytes(view[:3])
        start = 0
        if head[:2] == b"8:":
            start = 2
            if len(view) - 2 > max_size:
                body = None
            elif view is data:
                body = data
            else:
                body = bytes(view)  # our own copy, as the caller's buffer may change under us
        elif head == b"8C:":
            inflater = zlib.decompressobj()
            body = inflater.decompress(view[3:], max(max_size, 0) + 1)
            if len(body) > max_size:
                body = None
            elif not inflater.eof:
                raise WXFError("truncated 8C: (zlib) body")
            elif inflater.unused_data:
                raise WXFError("trailing bytes after the 8C: (zlib) body")
        else:
            raise WXFError(f"not WXF: header {head!r} is neither b'8:' nor b'8C:'")
        if body is None:
            raise WXFError(f"WXF body larger than max_size={max_size} bytes")
        return _decode_checked(body, start, max_depth, use_numpy)
    except WXFError:
        raise
    except MemoryError:
        raise WXFError("out of memory while decoding") from None
    except (zlib.error, ValueError, TypeError) as e:
        # zlib.error: corrupt 8C: body; ValueError, TypeError: not a buffer or bad sizes.
        raise WXFError(f"invalid WXF input: {type(e).__name__}: {e}") from None


def _loads_buffer(buf: Any, *, max_size: int = _DEFAULT_MAX_SIZE) -> Any:
    """``loads`` for the link's own receive buffers (``bytes`` or ``mmap``), decoded in place:
    the caller owns ``buf`` and does not change it while this runs."""
    head = buf[:3]
    if head[:2] == b"8:" and len(buf) - 2 <= max_size:
        return _decode_checked(buf, 2, 512, None)
    return loads(bytes(buf), max_size=max_size)  # 8C:, or an error to report


def _decode_checked(body: Any, start: int, max_depth: int, use_numpy: bool | None) -> Any:
    """``_decode`` with ``loads``'s argument checks, mapping every failure to WXFError."""
    try:
        if len(body) <= start:
            raise WXFError("empty WXF body")
        if use_numpy is None:
            use_numpy = _get_numpy() is not None
        elif use_numpy and _get_numpy() is None:
            raise WXFError("use_numpy=True but numpy is not importable")
        return _decode(body, start, max(max_depth, 0), use_numpy)
    except WXFError:
        raise
    except IndexError:
        raise WXFError("truncated WXF input") from None
    except struct.error:
        raise WXFError("truncated WXF input") from None
    except UnicodeDecodeError as e:
        raise WXFError(f"invalid UTF-8 in a string or symbol: {e}") from None
    except RecursionError:
        raise WXFError("expression nested too deeply for the Python stack") from None
    except MemoryError:
        raise WXFError("out of memory while decoding") from None
    except (zlib.error, ArithmeticError, ValueError, TypeError) as e:
        # zlib.error: corrupt 8C: body; ArithmeticError: decimal.InvalidOperation (a BigReal
        # exponent beyond Decimal's range) or OverflowError; ValueError: e.g. int digits.
        raise WXFError(f"invalid WXF input: {type(e).__name__}: {e}") from None
