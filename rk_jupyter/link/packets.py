"""The packet vocabulary spoken over the link.

Packets are MathLink/WSTP packets (same names, same numeric codes as ``wstp.h``) carried as
WXF expressions ``Function(Symbol(name), *args)``.  Where a WSTP packet holds an expression the
front end would format itself, rk_jupyter's dialect carries what Jupyter needs instead:

======================  =====================  ===================================================
packet                  direction              arguments in rk_jupyter's dialect
======================  =====================  ===================================================
EnterTextPacket         kernel → agent         cell text (str)
EvaluatePacket          kernel → agent         code (str), evaluated like ``ToExpression[code]``:
                                               no In/Out, $Line, $Pre or $Post.  Answered by
                                               live TextPacket/MessagePacket (SyntaxPacket on a
                                               syntax error: nothing is evaluated), then exactly
                                               one ReturnPacket(value) and nothing else (no
                                               OutputNamePacket, no InputNamePacket); or by
                                               RKError[text, code] alone if the engine has no
                                               support
TextPacket              both                   agent → kernel: Print output; kernel → agent: the
                                               answer to an InputPacket/InputStringPacket
MessagePacket           agent → kernel         symbol (str), tag (str), formatted message (str)
SyntaxPacket            agent → kernel         1-based character position of the syntax error
InputNamePacket         agent → kernel         "In[n]:= "; ends every EnterTextPacket
OutputNamePacket        agent → kernel         "Out[n]= "; precedes a ReturnPacket
ReturnPacket            agent → kernel         for EnterTextPacket: MIME bundle (dict str → str);
                                               for EvaluatePacket: the value (see below), or
                                               $Failed after a syntax error; Symbol("$Aborted")
                                               when interrupted
ReturnTextPacket        agent → kernel         OutputForm text (engines that have no MIME bundle)
InputPacket             agent → kernel         prompt of ``Input[]``
InputStringPacket       agent → kernel         prompt of ``InputString[]``
MenuPacket              agent → kernel         (code, title) of an interrupt menu
======================  =====================  ===================================================

Control messages (not WSTP packets; WSTP sends these out of band as ``WSPutMessage``):

``RKInterrupt[]``/``RKAbort[]``/``RKTerminate[]`` (kernel → agent) stop an evaluation or end the
session (``RKTerminate[<|"restart" -> True|>]``: the kernel restarts, and a Slurm engine may
keep its job for the kernel's next session); ``RKPing[t]`` is answered by ``RKPong[t]``.
On channel 0, ``RKOpenSession[<|"channel", "engine", "options", "session", "keep", "kernel",
"label"|>]`` starts a named session with its own engine and binds it to that channel (``label``:
what the launcher says it is, e.g. a persistent kernel's notebook, shown by ``RKSessions``);
``RKAttachSession[<|"channel", "session", "keep"|>]`` binds an existing one (the provisioner
opens a session before the kernel process exists, so that engine failures reach JupyterLab's
start dialog, and the kernel attaches to it); RKOpenSession is answered on the channel by
``RKSessionReady[info]`` or ``RKError[text, code]``, RKAttachSession by ``RKAttached[<|info,
"received", "acknowledged", "owed", "line", "forgotten"|>]`` (how many of the kernel's packets
arrived; how many of the session's were acknowledged by any link, from which a kernel attaching
for the first time counts on; the evaluations whose ends are not acknowledged, the last In[n]
and how many packets were forgotten unacknowledged — for a kernel process that takes over a
persistent session) or ``RKError[text, code]``; ``keep`` is how many seconds a session outlives
its link waiting to be attached again (0: it ends with its link); ``RKCloseSession[name,
<|"restart"|>]`` ends a session (``restart`` as for RKTerminate).
Both sides count a session's packets (all on its channel but RKAck and RKAttached) and keep
what they sent until ``RKAck[count]`` says it arrived (the agent acknowledges in the frame that
ends each request, the kernel with its next request or heartbeat); an attach carries the
kernel's count ("received") and RKAttached the agent's, and each side then sends again what
the other lacks, so that a dropped network loses and duplicates nothing.
``RKComplete[prefix]`` is answered by ``RKCompletions[list]``;
``RKInspect[name]`` by ``RKInspection[bundle or Null]``; ``RKEngineDied[text, requested]`` ends
a request whose engine ended (``requested``: by Quit[]/Exit[]); the session goes on, and the
next request that needs an engine starts a fresh one, announced by
``RKEngineRestarted[<|info, "restarts", "cause"|>]`` before its answer; the same packet says
that an engine which waited in a scheduler's queue (``RKSessionReady`` with
``extra.queued``) can now evaluate (``extra.queued.waited``).  ``RKEngineState[]`` is
answered at once (also while a cell runs) by ``RKEngineStatus[<|"state", "memory", "limit",
"pid", "restarts", "last_end"|>]``.  On channel 0, ``RKLog[n]`` is answered by
``RKLogLines[lines, path]``, and ``RKSessions[]`` by ``RKSessionList[{<|"name", "label",
"engine", "started", "last_active", "state", "attached", "keep", "expires", "line",
"restarts"|>, ...}]`` (``rk-jupyter sessions``).  ``RKLog``'s answer:
the last ``n`` lines of the agent's log file and its path on the agent's host (no lines and
"" when the agent logs to stderr only).

Output that a front end shows only for a while (``PrintTemporary``, ``Monitor``'s display):
``RKDisplay[id, bundle]`` (agent → kernel, during a request) shows a MIME bundle at once, or
replaces in place the one shown under the same ``id``; ``RKDisplay[id, Null]`` removes it, and
the end of the request removes every one still shown (``client.evaluate`` does that, so that
no front end keeps one).

Manipulate: a result whose bundle has ``MANIPULATE_MIME`` is live: its value is JSON
``{"id", "controls", "continuous", "view"}``; each control is ``{"name", "label", "kind",
"value", ...}`` with kind ``slider`` (``min``, ``max``, ``step`` or null, ``integer``),
``choice`` (``labels``; the value is a 1-based index) or ``checkbox`` (the value a boolean);
``view`` is the bundle of the expression at the initial values.  A front end gets the view at
other values with an EvaluatePacket of ``manipulate_request(id, values)``, answered like any
EvaluatePacket but with the view's MIME bundle (a dict) as its value.

``RKError[text, code]``: ``text`` is the message a user reads, ``code`` one of the ``*_ERROR``
codes below, on which the kernel side decides (retry or not); an RKError with no code (an
agent before codes) reads as ``GENERIC_ERROR``.

The value an EvaluatePacket returns is the last expression's result in the Python values of the
WXF mapping (``rk_jupyter.link.wxf``): Integer → int, machine Real → float, arbitrary-precision
Real → Decimal, machine Complex → complex, String → str, ByteArray → bytes, True/False/Null →
True/False/None, Association → dict (RuleDelayed values as ``Delayed``), a rectangular array of
machine reals (or of machine complex numbers) → PackedArray, which the kernel side decodes as a
numpy array when numpy is importable, any other List → list (so integer lists stay lists),
other symbols → Symbol (System symbols without their context: ``Symbol("Pi")``, but
``Symbol("Global`x")``), anything else → ``Function(head, *args)`` (``Rational[1, 3]``,
``Complex[1, 2]``, ``Graphics[...]``).
"""

from __future__ import annotations

from typing import Any

from .expr import Function, Symbol

# Packet codes, as in wstp.h (and mathlink.h before it).
PACKET_CODES: dict[str, int] = {
    "IllegalPacket": 0,
    "InputPacket": 1,
    "TextPacket": 2,
    "ReturnPacket": 3,
    "ReturnTextPacket": 4,
    "MessagePacket": 5,
    "MenuPacket": 6,
    "CallPacket": 7,
    "InputNamePacket": 8,
    "OutputNamePacket": 9,
    "SyntaxPacket": 10,
    "DisplayPacket": 11,
    "DisplayEndPacket": 12,
    "EvaluatePacket": 13,
    "EnterTextPacket": 14,
    "EnterExpressionPacket": 15,
    "ReturnExpressionPacket": 16,
    "SuspendPacket": 17,
    "ResumePacket": 18,
    "BeginDialogPacket": 19,
    "EndDialogPacket": 20,
    "InputStringPacket": 21,
}
PACKET_NAMES: dict[int, str] = {code: name for name, code in PACKET_CODES.items()}

# Out-of-band message codes, as in wstp.h (WSTerminateMessage, ...).
MESSAGE_CODES: dict[str, int] = {"RKTerminate": 1, "RKInterrupt": 2, "RKAbort": 3}

CONTROL_NAMES = frozenset(
    {
        "RKInterrupt",
        "RKAbort",
        "RKTerminate",
        "RKPing",
        "RKPong",
        "RKOpenSession",
        "RKAttachSession",
        "RKAttached",
        "RKAck",
        "RKCloseSession",
        "RKSessionReady",
        "RKError",
        "RKComplete",
        "RKCompletions",
        "RKInspect",
        "RKInspection",
        "RKEngineDied",
        "RKEngineRestarted",
        "RKEngineState",
        "RKEngineStatus",
        "RKLog",
        "RKLogLines",
        "RKSessions",
        "RKSessionList",
        "RKDisplay",
    }
)

ABORTED = Symbol("$Aborted")

#: The MIME type of a live Manipulate's specification (see above), and the function that
#: evaluates its expression at given control values.
MANIPULATE_MIME = "application/vnd.rk-jupyter.manipulate+json"
MANIPULATE_VIEW = "RKJupyter`ManipulateView"

# RKError codes: what a client may decide on (the text is for people).
GENERIC_ERROR = "agent.error"
NO_SESSION_ERROR = "agent.no-session"  # attach: the session ended (or never was)
SESSION_EXISTS_ERROR = "agent.session-exists"  # open: the name is taken
BAD_REQUEST_ERROR = "agent.bad-request"  # malformed request, busy channel, non-string code
ENGINE_START_ERROR = "engine.start-failed"  # open: the engine did not start
UNSUPPORTED_ERROR = "engine.unsupported"  # e.g. EvaluatePacket on an engine without it
ENGINE_STOPPED_ERROR = "engine.stopped"  # its process is stopped (SIGSTOP): nothing answers
INTERNAL_ERROR = "agent.internal"  # a bug in the agent met a request: it is answered anyway

#: The packet that ends an evaluation, by the evaluation's packet: EnterTextPacket's ends with
#: the next line's InputNamePacket, EvaluatePacket's with its ReturnPacket.  Any request also
#: ends with one of ``ENDS_ANY_REQUEST`` (refused, or its engine gone).
END_OF = {"EnterTextPacket": "InputNamePacket", "EvaluatePacket": "ReturnPacket"}
ENDS_ANY_REQUEST = frozenset({"RKError", "RKEngineDied"})


def packet(name: str, *args: Any) -> Function:
    """Build the packet or control message ``name[args...]``."""
    if name not in PACKET_CODES and name not in CONTROL_NAMES:
        raise ValueError(f"unknown packet {name!r}")
    return Function(Symbol(name), *args)


def packet_name(expr: Any) -> str | None:
    """The packet's name, or None when ``expr`` is not ``Symbol[...]``."""
    if isinstance(expr, Function) and isinstance(expr.head, Symbol):
        return expr.head.name
    return None


def error_packet(text: str, code: str) -> Function:
    """``RKError[text, code]``: a request the agent cannot serve, with a stable code."""
    return packet("RKError", text, code)


def error_code(expr: Any) -> str:
    """The code of an RKError packet (``GENERIC_ERROR`` when it has none)."""
    args = getattr(expr, "args", ())
    return args[1] if len(args) > 1 and isinstance(args[1], str) else GENERIC_ERROR


def is_packet(expr: Any, name: str) -> bool:
    return packet_name(expr) == name


def manipulate_request(manipulate_id: str, values: list[Any]) -> str:
    """The EvaluatePacket text that asks for a Manipulate's view at ``values`` (numbers,
    booleans, 1-based choice indices), in the control order of its specification."""
    return f'{MANIPULATE_VIEW}["{manipulate_id}", {{{", ".join(map(_literal, values))}}}]'


def _literal(value: Any) -> str:
    """A control's value as Wolfram Language input (``1.5*^-7``, ``True``)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return repr(value).replace("e", "*^")
    raise ValueError(f"not a control value: {value!r}")


def line_number(name: Any) -> int | None:
    """n of an "In[n]:= " or "Out[n]= " name (InputNamePacket, OutputNamePacket)."""
    if not isinstance(name, str) or "[" not in name:
        return None
    digits = name[name.index("[") + 1:].split("]", 1)[0]
    return int(digits) if digits.isdigit() else None
