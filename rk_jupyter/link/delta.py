"""A reversible delta filter for the decimal numbers of a payload, applied before the MEDIUM
compression context (compression.py).

Why: plots are the largest outputs of a notebook, and nearly all of an SVG plot's entropy is in
its coordinates, ``points="18.181818,123.606798 24.675325,111.025370 …"``: digits that no
dictionary coder predicts.  Consecutive points of a curve are close, so each number minus the
one two places before it (the same coordinate of the previous point) is small and repetitive.
On ``benchmarks/bench_link.py``'s workload this takes the ten plots above 8 kB from 28.5 kB to
18.6 kB after brotli quality 6 (brotli quality 11 alone: 22.7 kB, for 25–60 ms instead of ~3 ms
on the largest plot), and leaves the other results within 0.1 kB of what they were.  It costs
about 1 µs a number each way: 1.7 ms to encode and 2.0 ms to decode that plot's 2400 numbers,
22 and 28 ms for a 170 kB table of 20000 reals, which it makes 4× smaller after brotli.

Filtered form::

    varint n       how many numbers were taken out; 0: the rest is the payload as it is
    varint L       length of the skeleton (present when n > 0)
    skeleton       the payload with each number replaced by 0xFF; the payload's own bytes
                   0xFE and 0xFF are written 0xFE 0x01 and 0xFE 0x02 (neither occurs in UTF-8)
    n tokens       ``[D]R`` followed by a space: D the number's count of decimals as a letter
                   (``a`` = 1 … ``o`` = 15) where it differs from the previous number's, R in
                   decimal digits the number in units of 10^-D minus the number two places
                   before (0 before the first two)

A number is ``-?(0|[1-9][0-9]{0,14})\\.[0-9]{1,15}`` (so that its text comes back exactly from
its integer value and count of decimals; a ``-`` before a zero value stays in the skeleton).
Every payload with a number is filtered, whether or not it gets smaller by itself: the
context matches each frame against the earlier ones, which must be in the same form (a table
of 200 rows after the same table of 100 rows: 0.71 kB; 1.3 kB when the first had gone
unfiltered for not shrinking).  Only a filtered form longer than ``GROWTH`` times its payload,
which no real output comes near, is replaced by the payload itself, so that the decoder can
bound what it inflates (``bound``).  Decoding is bounded by the caller's limit like
decompression.
"""

from __future__ import annotations

import re

from .wxf import WXFError, read_varint, varint

_NUMBER = re.compile(rb"(-?)(0|[1-9][0-9]{0,14})\.([0-9]{1,15})")
_TOKEN = re.compile(rb"([a-o]?)(-?[0-9]{1,32}) ")
_SLOT = b"\xff"
_ESCAPE = b"\xfe"
#: A filtered form may be up to this many times its payload (so that the decoder can bound
#: its input); beyond, the payload goes unfiltered.
GROWTH = 2
_MAX_INT_DIGITS = 15


class DeltaError(ValueError):
    """The data is not a filtered form, or decodes to more than the caller's limit."""


def encode(payload: bytes | memoryview) -> bytes:
    """The filtered form of ``payload``: at most ``bound(len(payload))`` bytes."""
    raw = bytes(payload)
    data = raw
    if _ESCAPE in data or _SLOT in data:
        data = data.replace(_ESCAPE, b"\xfe\x01").replace(_SLOT, b"\xfe\x02")
    parts = _NUMBER.split(data)
    count = len(parts) // 4
    if not count:
        return b"\x00" + raw
    literals = [parts[0]]
    tokens = []
    before = previous = 0  # the numbers two places and one place back
    decimals = 0
    for i in range(1, len(parts), 4):
        sign, whole, fraction = parts[i], parts[i + 1], parts[i + 2]
        value = int(whole + fraction)
        if sign:
            if value:
                value = -value
            else:  # "-0.0": an integer has no negative zero; the sign stays text
                literals[-1] += b"-"
        literals.append(parts[i + 3])
        residual = value - before
        if len(fraction) != decimals:
            decimals = len(fraction)
            tokens.append(b"%c%d " % (96 + decimals, residual))
        else:
            tokens.append(b"%d " % residual)
        before, previous = previous, value
    skeleton = _SLOT.join(literals)
    out = b"".join((varint(count), varint(len(skeleton)), skeleton, *tokens))
    return out if len(out) <= GROWTH * len(raw) else b"\x00" + raw


def bound(limit: int) -> int:
    """The longest filtered form of a payload of at most ``limit`` bytes."""
    return max(GROWTH * limit, limit + 1)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return read_varint(data, pos)
    except (IndexError, WXFError):
        raise DeltaError("corrupt filtered frame: bad varint") from None


def decode(data: bytes, limit: int) -> bytes:
    """The payload ``encode`` made ``data`` from, which must be at most ``limit`` bytes;
    DeltaError when ``data`` is not a filtered form or decodes to more."""
    count, pos = _read_varint(data, 0)
    if count == 0:
        if len(data) - pos > limit:
            raise DeltaError(f"filtered frame decodes to more than {limit} bytes")
        return data[pos:]
    length, pos = _read_varint(data, pos)
    skeleton = data[pos : pos + length]
    if len(skeleton) != length or skeleton.count(_SLOT) != count:
        raise DeltaError("corrupt filtered frame: skeleton does not match its numbers")
    escapes = skeleton.count(_ESCAPE)
    if escapes and escapes != skeleton.count(b"\xfe\x01") + skeleton.count(b"\xfe\x02"):
        raise DeltaError("corrupt filtered frame: bad escape")
    at = pos + length
    tokens = _TOKEN.findall(data, at)
    # findall skips what does not match: the tokens must cover the rest exactly
    if len(tokens) != count or sum(len(d) + len(r) + 1 for d, r in tokens) != len(data) - at:
        raise DeltaError("corrupt filtered frame: numbers do not match the skeleton")
    literals = skeleton.split(_SLOT)
    out = [literals[0]]
    size = len(skeleton) - count - escapes  # the payload without the numbers
    before = previous = 0
    decimals = 0
    unit = top = 1
    for index, (letter, residual) in enumerate(tokens, 1):
        if letter:
            decimals = letter[0] - 96
            unit, top = 10**decimals, 10 ** (_MAX_INT_DIGITS + decimals)
        value = before + int(residual)
        if not decimals or not -top < value < top:
            raise DeltaError("corrupt filtered frame: number out of range")
        whole, fraction = divmod(-value if value < 0 else value, unit)
        text = b"%s%d.%0*d" % (b"-" if value < 0 else b"", whole, decimals, fraction)
        size += len(text)
        if size > limit:
            raise DeltaError(f"filtered frame decodes to more than {limit} bytes")
        out.append(text)
        out.append(literals[index])
        before, previous = previous, value
    joined = b"".join(out)
    if escapes:
        joined = joined.replace(b"\xfe\x02", _SLOT).replace(b"\xfe\x01", _ESCAPE)
    return joined
