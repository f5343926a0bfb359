"""A thin ctypes binding to the WSTP C library, and one link to a kernel.

Only the functions rk_jupyter uses are bound, each with the restype and argtypes of its C
prototype in the WSTP reference (``WSLINK``/``WSENV`` are pointers: left to ctypes' int default
they would be truncated on 64-bit hosts).  Strings cross as UTF-8 (``WSGetUTF8String``,
``WSPutUTF8String``): the older ``WSPutString`` escapes backslashes and would change cell text.
Libraries of Wolfram versions 9 and older (MathLink) export the same functions as ML*.

WSTP links are not safe for concurrent use: every ``Link`` method must be called with
``Link.lock`` held, except ``put_message``.  Out-of-band messages (abort, interrupt,
terminate) are meant to be sent by another thread while one blocks reading (.NET/Link's
``AbortEvaluation``: "typically called from a different thread than the one … blocking in
WaitForAnswer … it simply uses PutMessage"), so ``put_message`` has a lock of its own,
``Link.message_lock``: an abort never waits for a read that may not end.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
from ctypes import POINTER, c_char_p, c_double, c_int, c_int64, c_void_p
from pathlib import Path
from typing import Any

from ....link.expr import Function, Symbol
from ....link.packets import PACKET_NAMES
from ..base import EngineError

# Token types (wstp.h): what WSGetType says the next object on a link is.
WSTKERR = 0
WSTKSTR, WSTKSYM, WSTKREAL, WSTKINT, WSTKFUNC = 34, 35, 42, 43, 70
WSTKOLDINT, WSTKOLDREAL, WSTKOLDSTR, WSTKOLDSYM = 73, 82, 83, 89
WSTKOPTSYM, WSTKOPTSTR = 79, 81
STRING_TOKENS = frozenset({WSTKSTR, WSTKOLDSTR, WSTKOPTSTR})
SYMBOL_TOKENS = frozenset({WSTKSYM, WSTKOLDSYM, WSTKOPTSYM})
INTEGER_TOKENS = frozenset({WSTKINT, WSTKOLDINT})
REAL_TOKENS = frozenset({WSTKREAL, WSTKOLDREAL})

# Out-of-band messages (WSPutMessage).
TERMINATE_MESSAGE, INTERRUPT_MESSAGE, ABORT_MESSAGE = 1, 2, 3

WSEOK, WSEDEAD, WSECLOSED = 0, 1, 11

_P = c_void_p
_PP = POINTER(c_void_p)
_PI = POINTER(c_int)

# Function name without its WS/ML prefix -> (restype, argtypes), from the C prototypes.
SIGNATURES: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "Initialize": (_P, (_P,)),  # WSENV WSInitialize(WSEnvironmentParameter)
    "OpenArgcArgv": (_P, (_P, c_int, POINTER(c_char_p), _PI)),  # WSLINK (env, argc, argv, &err)
    "LinkName": (_P, (_P,)),  # const char *WSLinkName(WSLINK)
    "ReleaseLinkName": (None, (_P, _P)),
    "Activate": (c_int, (_P,)),
    "Close": (None, (_P,)),
    "Error": (c_int, (_P,)),
    "ClearError": (c_int, (_P,)),
    "ErrorMessage": (_P, (_P,)),  # const char *WSErrorMessage(WSLINK)
    "ReleaseErrorMessage": (None, (_P, _P)),
    "Ready": (c_int, (_P,)),
    "Flush": (c_int, (_P,)),
    "PutMessage": (c_int, (_P, c_int)),
    "NextPacket": (c_int, (_P,)),
    "NewPacket": (c_int, (_P,)),
    "EndPacket": (c_int, (_P,)),
    "GetType": (c_int, (_P,)),
    "GetArgCount": (c_int, (_P, _PI)),
    "GetUTF8String": (c_int, (_P, _PP, _PI, _PI)),  # (link, &s, &bytes, &chars)
    "ReleaseUTF8String": (None, (_P, _P, c_int)),
    "GetUTF8Symbol": (c_int, (_P, _PP, _PI, _PI)),
    "ReleaseUTF8Symbol": (None, (_P, _P, c_int)),
    "GetInteger64": (c_int, (_P, POINTER(c_int64))),
    "GetReal64": (c_int, (_P, POINTER(c_double))),
    "PutFunction": (c_int, (_P, c_char_p, c_int)),
    "PutUTF8String": (c_int, (_P, c_char_p, c_int)),
    "PutUTF8Symbol": (c_int, (_P, c_char_p, c_int)),
    "PutInteger64": (c_int, (_P, c_int64)),
    "PutReal64": (c_int, (_P, c_double)),
    "StopHandlingSignal": (None, (_P, c_int)),  # void WSStopHandlingSignal(WSENV, int)
}
# Added in Wolfram 10 (2014); before it the library owned these strings (and had no signal
# handling of its own to stop).
OPTIONAL = frozenset({"ReleaseLinkName", "ReleaseErrorMessage", "StopHandlingSignal"})
#: Signals that are the agent's own: how it is stopped (SIGTERM, SIGHUP), that it ignores
#: SIGINT (interrupts go to engines) and that a closed socket is an error, not a death.
AGENT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP",
                                                         "SIGPIPE") if hasattr(signal, name))
#: A value the link could not decode (an integer wider than 64 bits): the packet is skipped
#: and this stands in for it, instead of the link being taken for broken.
UNDECODABLE = Symbol("RKJupyter`Undecodable")

# How many arguments each packet the kernel sends carries (WSNextPacket reads only the head).
PACKET_ARITY = {
    "InputPacket": 1,
    "TextPacket": 1,
    "ReturnPacket": 1,
    "ReturnTextPacket": 1,
    "MessagePacket": 2,
    "MenuPacket": 2,
    "CallPacket": 2,
    "InputNamePacket": 1,
    "OutputNamePacket": 1,
    "SyntaxPacket": 1,
    "DisplayPacket": 1,
    "DisplayEndPacket": 1,
    "ReturnExpressionPacket": 1,
    "BeginDialogPacket": 1,
    "EndDialogPacket": 1,
    "InputStringPacket": 1,
}

_INT64 = (-(2**63), 2**63 - 1)


class WSTPError(Exception):
    """A failed WSTP call; ``code`` is WSError's value (0 when the library gave none)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class Library:
    """The loaded WSTP (or MathLink) library, with every function we use bound and typed."""

    def __init__(self, path: Path, api: str = "WS") -> None:
        self.path = path
        self.api = api
        try:
            self._dll = ctypes.CDLL(str(path))
        except OSError as exc:
            raise EngineError(
                f"cannot load the WSTP library {path}: {exc}. It must be the shared library "
                "of the installed kernel (libWSTP64i4.so, wstp.framework/wstp or "
                "wstp64i4.dll) built for this machine's architecture."
            ) from None
        missing = []
        self.functions: dict[str, Any] = {}
        for name, (restype, argtypes) in SIGNATURES.items():
            function = getattr(self._dll, api + name, None)
            if function is None:
                if name not in OPTIONAL:
                    missing.append(api + name)
                continue
            function.restype = restype
            function.argtypes = argtypes
            self.functions[name] = function
        if missing:
            raise EngineError(
                f"{path} is not a usable WSTP library: it lacks {', '.join(missing)}. Point "
                "rk_jupyter at the kernel of a complete Wolfram installation (version 10 or "
                "newer for WSTP)."
            )
        self._env: int | None = None
        self._env_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["functions"][name]
        except KeyError:
            raise AttributeError(f"{self.api}{name} is not bound") from None

    def environment(self) -> int:
        """The process-wide WSENV: WSInitialize once, never deinitialized (links outlive
        sessions, and a WSActivate stuck on a kernel that never came may still use it).

        WSInitialize may install handlers for signals the agent relies on (``AGENT_SIGNALS``;
        the reference leaves the set unstated).  WSTP is told to stop handling them
        (``WSStopHandlingSignal``, where the library has it), and the handlers the process
        had before are put back as they were, whatever the library did."""
        with self._env_lock:
            if self._env is None:
                before = _SignalState.save(AGENT_SIGNALS)
                env = self.Initialize(None)
                if not env:
                    raise EngineError(f"WSInitialize failed in {self.path}")
                stop = self.functions.get("StopHandlingSignal")
                for signum in AGENT_SIGNALS:
                    if stop is not None:
                        stop(env, signum)
                before.restore()
                self._env = env
            return self._env


class _SignalState:
    """The process's signal dispositions as the C library holds them (``sigaction``), which
    Python's ``signal`` module cannot read for handlers it did not set, nor set off the main
    thread (an engine starts on a session thread)."""

    _SIZE = 512  # bytes: larger than struct sigaction on every POSIX system

    def __init__(self, libc: Any, saved: dict[int, Any]) -> None:
        self.libc = libc
        self.saved = saved

    @classmethod
    def save(cls, signals: tuple[int, ...]) -> _SignalState:
        libc = None
        if sys.platform != "win32":
            libc = getattr(ctypes.CDLL(None, use_errno=True), "sigaction", None)
        saved = {}
        if libc is not None:
            for signum in signals:
                buffer = ctypes.create_string_buffer(cls._SIZE)
                if libc(signum, None, buffer) == 0:
                    saved[signum] = buffer
        return cls(libc, saved)

    def restore(self) -> None:
        for signum, buffer in self.saved.items():
            self.libc(signum, buffer, None)


_libraries: dict[tuple[str, str], Library] = {}
_libraries_lock = threading.Lock()


def load(path: Path, api: str = "WS") -> Library:
    """The library at ``path``, loaded once per process."""
    key = (str(path), api)
    with _libraries_lock:
        if key not in _libraries:
            _libraries[key] = Library(path, api)
        return _libraries[key]


class Link:
    """One WSTP link.  Hold ``lock`` around every call (see the module docstring)."""

    def __init__(self, library: Library, handle: int) -> None:
        self.lib = library
        self.handle = handle
        self.lock = threading.Lock()
        self.message_lock = threading.Lock()  # put_message's own (see the module docstring)
        self.closed = False

    @classmethod
    def listen(cls, library: Library, protocol: str) -> Link:
        """A link waiting for a kernel to connect (``-linkmode listen``), named by WSTP.

        ``MLDontInteract`` stops the library from printing "Link created on: ..." on stdout.
        """
        args = [b"-wstp", b"-linkmode", b"listen", b"-linkprotocol", protocol.encode(),
                b"-linkoptions", b"MLDontInteract"]
        argv = (c_char_p * len(args))(*args)
        error = c_int(WSEOK)
        handle = library.OpenArgcArgv(library.environment(), len(args), argv, ctypes.byref(error))
        if not handle or error.value != WSEOK:
            raise WSTPError(
                f"cannot create a {protocol} link to listen on (WSTP error {error.value})",
                error.value,
            )
        return cls(library, handle)

    # -- state ----------------------------------------------------------------------------

    def name(self) -> str:
        """The name a kernel must be given (``-linkname``) to connect to this link."""
        raw = self.lib.LinkName(self.handle)
        if not raw:
            raise WSTPError("the link has no name")
        try:
            return ctypes.string_at(raw).decode("utf-8")
        finally:
            release = self.lib.functions.get("ReleaseLinkName")
            if release is not None:
                release(self.handle, raw)

    def activate(self) -> None:
        """Wait for the other side (blocks until it connects: call it under a watchdog)."""
        if not self.lib.Activate(self.handle):
            raise self.failure("the kernel did not complete the WSTP connection")

    def ready(self) -> bool:
        """Whether a read would find data at once."""
        return bool(self.lib.Ready(self.handle))

    def error(self) -> int:
        return int(self.lib.Error(self.handle))

    def error_message(self) -> str:
        raw = self.lib.ErrorMessage(self.handle)
        if not raw:
            return f"WSTP error {self.error()}"
        try:
            return ctypes.string_at(raw).decode("utf-8", "replace")
        finally:
            release = self.lib.functions.get("ReleaseErrorMessage")
            if release is not None:
                release(self.handle, raw)

    def failure(self, what: str) -> WSTPError:
        """The exception for a failed call: ``what`` plus the library's own explanation."""
        code = self.error()
        return WSTPError(f"{what}: {self.error_message()} (WSTP error {code})", code)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.lib.Close(self.handle)

    # -- writing --------------------------------------------------------------------------

    def put_message(self, code: int) -> None:
        """Send an out-of-band message (abort, interrupt, terminate).  Call it with
        ``message_lock`` held, not ``lock``: it is meant to reach a kernel while another thread
        reads.  (No WSFlush: that belongs to the data stream, which the reader may hold.)"""
        if self.closed:
            raise WSTPError("the link is closed")
        if not self.lib.PutMessage(self.handle, code):
            raise WSTPError(f"cannot send WSTP message {code}")

    def put_packet(self, expr: Any) -> None:
        """Write one complete packet (a Function whose head is the packet's symbol), flushed."""
        self.put_expr(expr)
        if not self.lib.EndPacket(self.handle) or not self.lib.Flush(self.handle):
            raise self.failure("cannot send a packet to the kernel")

    def put_answer(self, text: str) -> None:
        """A bare string as a packet of its own: the reply to a MenuPacket or InputPacket."""
        self.put_expr(text)
        if not self.lib.EndPacket(self.handle) or not self.lib.Flush(self.handle):
            raise self.failure("cannot answer the kernel")

    def put_expr(self, expr: Any) -> None:
        """Write ``expr``: Function/Symbol/str/int/float/bool/None/list, as their WL forms."""
        lib, handle = self.lib, self.handle
        if isinstance(expr, Function):
            if not isinstance(expr.head, Symbol):
                raise TypeError(f"only symbol heads can be sent, not {expr.head!r}")
            ok = lib.PutFunction(handle, expr.head.name.encode("utf-8"), len(expr.args))
            if not ok:
                raise self.failure(f"cannot send {expr.head.name}[...]")
            for arg in expr.args:
                self.put_expr(arg)
            return
        if isinstance(expr, bool) or expr is None:
            expr = Symbol({True: "True", False: "False", None: "Null"}[expr])
        if isinstance(expr, Symbol):
            data = expr.name.encode("utf-8")
            ok = lib.PutUTF8Symbol(handle, data, len(data))
        elif isinstance(expr, str):
            data = expr.encode("utf-8")
            ok = lib.PutUTF8String(handle, data, len(data))
        elif isinstance(expr, int):
            if not _INT64[0] <= expr <= _INT64[1]:
                raise ValueError(f"integer {expr} does not fit in 64 bits")
            ok = lib.PutInteger64(handle, expr)
        elif isinstance(expr, float):
            ok = lib.PutReal64(handle, expr)
        elif isinstance(expr, list):
            self.put_expr(Function(Symbol("List"), *expr))
            return
        else:
            raise TypeError(f"cannot send {type(expr).__name__} to the kernel")
        if not ok:
            raise self.failure(f"cannot send {expr!r}")

    # -- reading --------------------------------------------------------------------------

    def read_packet(self) -> tuple[str, tuple[Any, ...]]:
        """The next packet as (name, arguments); WSTPError when the link died.

        A packet WSNextPacket cannot read (ILLEGALPKT, as can follow an abort) is skipped and
        reported as ``("IllegalPacket", (why,))`` when the error can be cleared.
        """
        code = self.lib.NextPacket(self.handle)
        if code == 0:
            error = self.error()
            if error in (WSEDEAD, WSECLOSED) or not self.lib.ClearError(self.handle):
                raise self.failure("the link to the kernel failed")
            self.lib.NewPacket(self.handle)
            return "IllegalPacket", (f"WSTP error {error}",)
        name = PACKET_NAMES.get(code, f"Packet{code}")
        args = []
        try:
            for _ in range(PACKET_ARITY.get(name, 0)):
                if self.lib.GetType(self.handle) == WSTKERR:
                    break  # fewer arguments than usual: keep what was read
                args.append(self.get_expr())
        except WSTPError as exc:
            # A value that cannot be read into Python (an integer wider than 64 bits) leaves
            # the link in error; if the error clears, only this packet is lost.
            if exc.code in (WSEDEAD, WSECLOSED) or not self.lib.ClearError(self.handle):
                raise
            args = [UNDECODABLE]
        finally:
            self.lib.ClearError(self.handle)
            self.lib.NewPacket(self.handle)
        return name, tuple(args)

    def get_expr(self) -> Any:
        """Read one expression: strings, integers, reals, Symbol (System` symbols by their
        short names) and Function."""
        lib, handle = self.lib, self.handle
        token = lib.GetType(handle)
        if token == WSTKFUNC:
            count = c_int(0)
            if not lib.GetArgCount(handle, ctypes.byref(count)):
                raise self.failure("cannot read a function")
            head = self.get_expr()
            return Function(head, *(self.get_expr() for _ in range(count.value)))
        if token in STRING_TOKENS:
            return self._get_utf8(lib.GetUTF8String, lib.ReleaseUTF8String, "string")
        if token in SYMBOL_TOKENS:
            name = self._get_utf8(lib.GetUTF8Symbol, lib.ReleaseUTF8Symbol, "symbol")
            return Symbol(name.removeprefix("System`"))  # $Aborted however it is written
        if token in INTEGER_TOKENS:
            integer = c_int64(0)
            if not lib.GetInteger64(handle, ctypes.byref(integer)):
                raise self.failure("cannot read an integer (wider than 64 bits?)")
            return integer.value
        if token in REAL_TOKENS:
            real = c_double(0.0)
            if not lib.GetReal64(handle, ctypes.byref(real)):
                raise self.failure("cannot read a real number")
            return real.value
        raise self.failure(f"unexpected object of type {token} from the kernel")

    def _get_utf8(self, get: Any, release: Any, what: str) -> str:
        data = c_void_p()
        size = c_int(0)
        chars = c_int(0)
        if not get(self.handle, ctypes.byref(data), ctypes.byref(size), ctypes.byref(chars)):
            raise self.failure(f"cannot read a {what}")
        try:
            return ctypes.string_at(data, size.value).decode("utf-8", "replace")
        finally:
            release(self.handle, data, size.value)


def to_python(expr: Any) -> Any:
    """WL data to Python: List -> list, Association -> dict, True/False/Null -> bool/None."""
    if isinstance(expr, Symbol):
        return {"True": True, "False": False, "Null": None}.get(expr.name, expr)
    if isinstance(expr, Function) and isinstance(expr.head, Symbol):
        head = expr.head.name
        if head == "List":
            return [to_python(x) for x in expr.args]
        rules = [a for a in expr.args if isinstance(a, Function) and len(a.args) == 2]
        if head == "Association" and len(rules) == len(expr.args):
            return {to_python(r.args[0]): to_python(r.args[1]) for r in rules}
    return expr
