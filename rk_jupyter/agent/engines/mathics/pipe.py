"""The pipe between ``MathicsEngine`` (the agent) and its worker: frames of WXF messages.

Frames go on the worker's original stdin (agent → worker) and stdout (worker → agent), each a
4-byte big-endian length and one WXF expression (``rk_jupyter.link.wxf``, the codec of the
link): a message (below), whose fields are any WXF-able Python values.  Stray output cannot
corrupt it: the worker moves the protocol to private descriptors at once and points fd 0 at
/dev/null and fd 1 (and ``sys.stdout``) at stderr (``Channel.claim_stdio``).

Messages are lists: a name, then the fields in their order (lists decode faster than
associations, and a cell's few messages are on the path of every cell; ``match`` reads them).

Agent → worker: ``["eval", code]``, ``["expr", code]`` (evaluate for the value, outside
In/Out: EvaluatePacket), ``["complete", id, prefix]``, ``["inspect", id, name]``,
``["input", id, text]`` (answer to an input request; ``text`` None means it was aborted).

Worker → agent: ``["ready", version, python, pid]`` or ``["fatal", missing, error,
externally_managed]`` once at start; per cell ``["started"]``, then any of ``["print", text]``,
``["message", symbol, tag, text]``, ``["syntax", position]``, ``["input", id, kind, prompt]``,
``["display", id, bundle or None]`` (a temporary display: PrintTemporary, Monitor), and
last ``["done", next_line, outcome]``, whose outcome is ``["result", line, bundle]``,
``["aborted"]`` or None (the result is Null).  An ``expr`` request is answered the same way, except
that its outcome is ``["value", value]`` unless aborted, also for Null and (as $Failed) after a
syntax error.  ``["reply", id, value]`` answers complete/inspect.

Values (``["value", value]``) are the Python values of the WXF mapping (``values.to_wxf``),
so they cross the pipe in the link's own format and the agent passes them on as they are.

Interrupts: frames are written, and read, with SIGINT deferred, so that none is cut in half.
"""

from __future__ import annotations

import os
import re
import select
import signal
import struct
import sys
from typing import Any

from ....link import wxf
from ....link.expr import Function
from ....link.wxf import Delayed

HEADER = struct.Struct(">I")
SIGINT = {signal.SIGINT}
Message = list[Any]  # [name, *fields], see above
_SURROGATE = re.compile("[\ud800-\udfff]")


def encode_frame(message: Message) -> bytes:
    """One protocol frame: length prefix + WXF.

    A string with a lone surrogate (``FromCharacterCode[55296]``) is no UTF-8, so WXF cannot
    carry it: such a message is sent with U+FFFD in its place rather than not at all."""
    try:
        data = wxf.dumps(message)
    except wxf.WXFError:
        data = wxf.dumps(_encodable(message))
    return HEADER.pack(len(data)) + data


def _encodable(value: Any) -> Any:
    """``value`` with each lone surrogate of its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_encodable(item) for item in value]
    if isinstance(value, tuple):  # a frozen association key
        return tuple(_encodable(item) for item in value)
    if isinstance(value, dict):
        return {_encodable(key): Delayed(_encodable(item.value)) if isinstance(item, Delayed)
                else _encodable(item) for key, item in value.items()}
    if isinstance(value, Function):
        return Function(_encodable(value.head), *(_encodable(arg) for arg in value.args))
    return value


def take_frame(buffer: bytearray) -> Message | None:
    """Remove the first whole frame from ``buffer`` and decode it; None if none is whole yet.
    Both ends of the pipe read this way (ValueError: a broken frame)."""
    if len(buffer) < HEADER.size:
        return None
    (size,) = HEADER.unpack_from(buffer)
    if len(buffer) < HEADER.size + size:
        return None
    with memoryview(buffer) as view:  # one copy of the payload, not two
        payload = bytes(view[HEADER.size : HEADER.size + size])
    del buffer[: HEADER.size + size]
    return decode_payload(payload)


# The frame every cell starts with, encoded once and recognised without decoding: it is on
# the path of every cell.
STARTED = encode_frame(["started"])
_STARTED_PAYLOAD = STARTED[HEADER.size :]


def decode_payload(data: bytes) -> Message:
    """The message of one frame's payload; arrays stay ``NumericArray``s."""
    if data == _STARTED_PAYLOAD:
        return ["started"]
    message = wxf.loads(data, use_numpy=False)
    if not (isinstance(message, list) and message and isinstance(message[0], str)):
        raise ValueError(f"protocol frame is not a message: {message!r:.200}")
    return message


class Channel:
    """The worker's end of the protocol, on descriptors no stray print can reach."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self._buffer = bytearray()

    @classmethod
    def claim_stdio(cls) -> Channel:
        """Move the protocol off fds 0/1 and point them at /dev/null and stderr."""
        rfd, wfd = os.dup(0), os.dup(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        return cls(rfd, wfd)

    def send(self, message: Message) -> None:
        """Write one message as one frame (one write: one wake-up of the agent)."""
        self.send_frame(encode_frame(message))

    def send_frame(self, frame: bytes) -> None:
        """Write an encoded frame (``STARTED``, ...) whole; an interrupt arriving meanwhile fires
        right after it."""
        view = memoryview(frame)
        old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGINT)
        try:
            while view:
                view = view[os.write(self.wfd, view) :]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def recv(self) -> Message | None:
        """The next frame, None at end of input.

        The wait (select) is interruptible when SIGINT is open, as during Input[]; reading is
        not, so a KeyboardInterrupt never leaves half a frame consumed.
        """
        while True:
            if (message := take_frame(self._buffer)) is not None:
                return message
            select.select([self.rfd], [], [])
            old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGINT)
            try:
                chunk = os.read(self.rfd, 1 << 16)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
            if not chunk:
                return None
            self._buffer += chunk
