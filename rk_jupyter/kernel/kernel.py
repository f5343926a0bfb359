"""The Jupyter kernel: a thin front end, like ipykernel's wrapper kernels (bash_kernel).

Each ``do_*`` translates a Jupyter request into a call of the client layer
(``rk_jupyter.client``) and its answer into Jupyter messages; the evaluation loop, the link
and the status figures live there.  The kernel process imports neither the launch side nor
paramiko: ``%rkernel doctor`` runs in a process of its own (``kernel.magics``).  Only when no
provisioner launched it (VS Code, Positron) does its entry point (``__main__``) load the
launch side, and this module sees that launch through ``OwnLaunch`` alone.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import re
import sys
import threading
import time
from typing import Any, Protocol

from ipykernel._version import kernel_protocol_version
from ipykernel.kernelbase import Kernel
from traitlets import Float

from .. import __version__
from ..client import AgentClient, AgentError, EvaluationError, Evaluator, SessionLost
from ..client.agent import NOT_CONNECTED
from ..client.environment import BY_KERNEL, KernelEnvironment, NotLaunched
from ..client.evaluate import ABORTED_CODE, ENGINE_ENDED, SYNTAX
from ..client.status import agent_end
from ..errors import RKError
from ..link.packets import ENGINE_START_ERROR, ENGINE_STOPPED_ERROR, MANIPULATE_MIME, packet
from .history import History
from .magics import is_magic, run_magic
from .manipulate import Manipulate, Updates
from .syntax import is_complete, word_at

REQUEST_TIMEOUT = 30.0
#: Seconds the kernel process may take to exit after its shutdown reply before Python's own
#: watchdog (faulthandler) ends it, with every thread's stack on stderr for the record.  The
#: engine and agent side have ended by then; ipykernel 7.4's shutdown sometimes hangs (its
#: control thread flushes stdout while the main thread stops the IOPub thread: 10 s a flush,
#: seen > 90 s under load; cf. positron#7142).  KernelManager kills a kernel 5 s after its
#: shutdown request; VS Code and Positron must not be left waiting for one either.
EXIT_AFTER_SHUTDOWN = 15.0
#: Seconds after its shutdown reply at which the kernel process exits whatever its threads
#: are doing.  That hang is frequent (half of the restarts measured here: the control
#: thread's flush waits for the IOPub thread the main thread is joining), and KernelManager
#: waits 2.5 s for the process before it sends SIGTERM, which every restart then paid.  The
#: reply and the engine's end are done by then: nothing is left to do but exit.  Once the
#: reply is sent and the IOPub thread has passed its IOPub copy to ZeroMQ (``_at_shutdown``),
#: the process exits EXIT_SENT later: ZeroMQ's I/O thread writes both to their TCP sockets
#: meanwhile, and the exit's close still delivers what was written.  Every millisecond here
#: is one a restart waits, and clients reconnect 0.1-0.2 s after the old kernel's sockets
#: close (ZeroMQ's reconnect interval): 0.05 s before, restarts took 0.07-0.1 s longer.
EXIT_GRACE = 0.5
EXIT_SENT = 0.005
#: How long a magic cell waits for the engine to take its In[n] before it lets the next
#: request collect that answer (a link being re-established must not hold the cell).
MAGIC_LINE_WAIT = 2.0
#: A cell that asks for help on a name (``?Plot``, ``??Plot``, ``?Plo*``): its result is
#: shown as Jupyter shows help, in the pager payload of the reply.
HELP = re.compile(r"\s*\?\??\s*[\w$`*]+\s*")

#: The ename of an error reply, by the code of what the client raised.
ENAMES = {SYNTAX: "SyntaxError", ABORTED_CODE: "$Aborted", ENGINE_ENDED: "EngineEnded",
          NOT_CONNECTED: "LinkDown", ENGINE_STOPPED_ERROR: "EngineStopped",
          ENGINE_START_ERROR: "EngineStartFailed"}


class OwnLaunch(Protocol):
    """The engine launch of a kernel process that no provisioner launched
    (``provisioning.selflaunch.SelfLaunch``; the kernel does not import the launch side)."""

    def wait(self) -> None:
        """Return once the launch has set the kernel's environment (or why it failed)."""

    def stop(self) -> None:
        """End the session and the agent side (bounded; idempotent)."""


class JupyterOutput:
    """An evaluation's output as Jupyter messages of the current request (nothing when the
    request is ``silent``); Input[] asks the front end when it accepts input.  With ``page``
    the result goes to the reply's pager payload instead (``?Plot``, as Jupyter's help).

    Temporary displays (``live``) are display_data with a display id, replaced in place by
    update_display_data; removing one clears the cell's output (clear_output) and sends again
    what else the cell showed, in its order: Jupyter has no message that removes one output.
    A Manipulate result becomes its widgets (``manipulate``)."""

    def __init__(self, kernel: RKernel, silent: bool, allow_stdin: bool,
                 page: bool = False) -> None:
        self.kernel = kernel
        self.silent = silent
        self.allow_stdin = allow_stdin
        self.page = page
        self.result: dict[str, str] | None = None  # the last result's bundle
        # What the cell showed, in order, kept only while a temporary display may need it
        # sent again: (msg_type, content), or ("live", display id).
        self.shown: list[tuple[str, Any]] = []
        self.lives: dict[str, dict[str, str]] = {}

    def stdout(self, text: str) -> None:
        self._send("stream", stream_content("stdout", text))

    def stderr(self, text: str) -> None:
        self._send("stream", stream_content("stderr", text))

    def display(self, bundle: dict[str, str], line: int | None) -> None:
        self.result = bundle
        if self.silent or self.page:
            return
        live = self.kernel.manipulate(bundle) if MANIPULATE_MIME in bundle else None
        if live is not None:  # the controls, then the view under them (updated in place)
            bundle = live.controls_bundle()
        elif MANIPULATE_MIME in bundle:  # no widgets here: the first view alone
            bundle = {k: v for k, v in bundle.items() if k != MANIPULATE_MIME}
        self._send("execute_result", {"execution_count": line or self.kernel.execution_count,
                                      "data": bundle, "metadata": {}})
        if live is not None:
            self._send("display_data", live.view_content())

    def live(self, display_id: str, bundle: dict[str, str] | None) -> None:
        if self.silent:
            return
        if bundle is not None:
            kind = "update_display_data" if display_id in self.lives else "display_data"
            if kind == "display_data":
                self.shown.append(("live", display_id))
            self.lives[display_id] = bundle
            self.kernel.send_response(self.kernel.iopub_socket, kind,
                                      live_content(display_id, bundle))
            return
        if self.lives.pop(display_id, None) is None:
            return
        self.shown.remove(("live", display_id))
        self.kernel.send_response(self.kernel.iopub_socket, "clear_output",
                                  {"wait": bool(self.shown)})
        for kind, content in self.shown:
            if kind == "live":
                kind, content = "display_data", live_content(content, self.lives[content])
            self.kernel.send_response(self.kernel.iopub_socket, kind, content)

    def _send(self, kind: str, content: dict[str, Any]) -> None:
        if not self.silent:
            self.kernel.send_response(self.kernel.iopub_socket, kind, content)
            self.shown.append((kind, content))

    def read_input(self, prompt: str) -> str:
        if not self.allow_stdin:
            self.stderr("Input[] needs a front end that accepts input; returning an empty "
                        "string")
            return ""
        return self.kernel.raw_input(prompt)

    def next_line(self, line: int) -> None:
        self.kernel.execution_count = line - 1  # Jupyter adds one before the next cell


def stream_content(name: str, text: str) -> dict[str, str]:
    """A stream message's content: one line, so a newline is added even to text that ends
    in one (``Print["a\n"]`` shows a blank line, as in Mathics3)."""
    return {"name": name, "text": text + "\n"}


def live_content(display_id: str, bundle: dict[str, str]) -> dict[str, Any]:
    return {"data": bundle, "metadata": {}, "transient": {"display_id": f"rk-{display_id}"}}


class RKernel(Kernel):
    """A Wolfram Language kernel whose engine runs behind an agent (``KernelEnvironment``
    says where; the provisioner opened the session, this process attaches to it)."""

    implementation = "rk_jupyter"
    implementation_version = __version__
    language = "wolfram-language"
    language_version = "14"
    language_info = {
        "name": "wolfram-language",
        "mimetype": "application/vnd.wolfram.m",
        "file_extension": ".wl",
        "pygments_lexer": "mathematica",
        "codemirror_mode": "mathematica",
    }
    banner = "Wolfram Language through rk_jupyter"
    #: Set by the entry point when this process launches its own engine (no provisioner).
    engine_launch: OwnLaunch | None = None
    # ipykernel sleeps 0.5 ms before each execute_reply, for text printed to sys.stdout that
    # once reached clients late; this kernel's output goes out as IOPub messages, in order
    # with the status that ends the cell, so the sleep only delayed every cell.
    _execute_sleep = Float(0.0)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client: AgentClient | None = None
        self.evaluator: Evaluator | None = None
        self.env: KernelEnvironment | None = None
        self.persistent = False  # the session outlives this process (kernelspec persistent)
        self.start_error: str | None = None
        self.history = History()
        # The link carries one evaluation at a time: a cell, a magic, a completion or a
        # Manipulate's view each hold this while they use the evaluator.
        self.turn = threading.RLock()
        self.updates = Updates(self._view, lambda: self.turn, self._publish)
        self._serve_comms()
        if self.engine_launch is not None:
            self.engine_launch.wait()
        try:
            self.env = KernelEnvironment.from_env()
            state = self.env.transport_state
            client = AgentClient(self.env.endpoint, self.env.kernel_id,
                                 grace=self.env.reconnect_grace, reopen=True,
                                 agent_end=lambda: agent_end(state))
            # A persistent session waits for its notebook as long as its kernelspec says.
            self.persistent = bool(self.env.settings.get("persistent"))
            keep = float(self.env.settings.get("persist_for") or 0) if self.persistent \
                else self.env.reconnect_grace
            info = client.open(keep=keep)
        except (AgentError, NotLaunched, ValueError) as exc:
            code = getattr(exc, "code", "")  # the launch's own error code, shown with it
            self.start_error = f"{exc} [{code}]" if code else str(exc)
            self.log.error("rk_jupyter: cannot start the engine: %s", exc)
            return
        self.client = client
        self.evaluator = Evaluator(client)
        if self.persistent:  # a session an earlier kernel left: what it missed, In[n]
            taken = client.taken_over
            self.evaluator.adopt(taken.owed, taken.forgotten)
            if taken.line:
                self.execution_count = taken.line - 1
        self.banner = f"{info.get('name')} {info.get('version')} through rk_jupyter"

    @property
    def kernel_info(self) -> dict[str, Any]:
        """What a kernel_info_reply says: ipykernel's, but no debugger.  ipykernel claims one
        wherever debugpy is installed, and JupyterLab then offers its debugger, whose requests
        this kernel cannot serve (there is no Wolfram Language debugger here).  Looking for
        debugpy also imported it, at the first request of every kernel process: 45 ms of a
        start, and four warnings of debugpy's on the notebook's IOPub."""
        features = ["kernel subshells"] if getattr(self, "_supports_kernel_subshells", False) \
            else []
        return {
            "protocol_version": kernel_protocol_version,
            "implementation": self.implementation,
            "implementation_version": self.implementation_version,
            "language_info": self.language_info,
            "banner": self.banner,
            "help_links": self.help_links,
            "supported_features": features,
        }

    def _serve_comms(self) -> None:
        """Widgets (Manipulate) need comms, which ipykernel sets up only in its IPython
        kernel: the same here, without loading IPython until a widget is made."""
        import comm
        from ipykernel.comm import Comm, CommManager

        self.comm_manager = CommManager(kernel=self)
        comm.create_comm = lambda *args, **kwargs: Comm(*args, kernel=self, **kwargs)
        comm.get_comm_manager = lambda: self.comm_manager
        for msg_type in ("comm_open", "comm_msg", "comm_close"):
            self.shell_handlers[msg_type] = getattr(self.comm_manager, msg_type)

    def manipulate(self, bundle: dict[str, str]) -> Manipulate | None:
        """The live Manipulate of a result's bundle, shown by the current request; None when
        widgets are not installed (the first view is then shown alone)."""
        return self.updates.create(bundle[MANIPULATE_MIME], self.get_parent("shell"))

    def _publish(self, parent: dict[str, Any], display_id: str, bundle: dict[str, str]) -> None:
        """A Manipulate's new view, replacing the one its cell shows (from the updates'
        thread): sent as part of that cell's request, whose output area JupyterLab keeps
        after the cell ends, so the notebook holds the last view as ordinary output."""
        if self.session is not None:
            self.session.send(self.iopub_socket, "update_display_data",
                              {"data": bundle, "metadata": {},
                               "transient": {"display_id": display_id}},
                              parent=parent, ident=self._topic("update_display_data"))

    def _view(self, code: str, output: Any) -> Any:
        """A Manipulate's view: an EvaluatePacket (called by ``Updates`` holding ``turn``)."""
        if self.evaluator is None:
            raise AgentError(f"the engine is not running: {self.start_error}")
        return self.evaluator.run(code, output, expression=True)

    @property
    def launched_by(self) -> str:
        """Who launched the engine (``KernelEnvironment.launched_by``): the environment says
        so once read; without it, this process tried itself, or nobody did ('')."""
        if self.env is not None:
            return self.env.launched_by
        return BY_KERNEL if self.engine_launch is not None else ""

    # -- execution ------------------------------------------------------------------------

    async def do_execute(
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict | None = None,
        allow_stdin: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        self._allow_stdin = allow_stdin
        if is_magic(code):
            return self._magic(code, silent)
        if self.evaluator is None:
            return self._error("EngineUnavailable",
                               f"the engine is not running: {self.start_error}")
        output = JupyterOutput(self, silent, allow_stdin, page=bool(HELP.fullmatch(code)))
        line = self.execution_count
        try:
            with self.turn:
                self.evaluator.run(code, output)
        except EvaluationError as exc:
            return self._error(ENAMES.get(exc.code, "EvaluationError"), str(exc))
        except SessionLost as exc:
            return self._error(ENAMES.get(exc.code, "LinkDown"), str(exc))
        except AgentError as exc:  # the agent refused the request (RKError)
            return self._error(ENAMES.get(exc.code, "RKError"), str(exc))
        finally:
            if store_history:
                self.history.record(line, code, (output.result or {}).get("text/plain"))
            if self.persistent:  # a server killed now: its next kernel shows nothing again
                self.evaluator.client.acknowledge()
        if output.page and output.result and not silent:
            return self._ok([{"source": "page", "data": output.result, "start": 0}])
        return self._ok()

    def _magic(self, code: str, silent: bool) -> dict[str, Any]:
        with self.turn:
            try:
                bundle = run_magic(code, self.client, self.start_error, self.env,
                                   self.launched_by)
            except RKError as exc:
                return self._error("RKernelMagic", str(exc))
            if not silent:
                self.send_response(self.iopub_socket, "display_data",
                                   {"data": bundle, "metadata": {}})
            self._take_line()
        return self._ok()

    def _take_line(self) -> None:
        """A magic cell takes an In[n] like any other, so that Jupyter's execution count and
        the engine's $Line stay one and the same: it evaluates Null, but waits for that only
        briefly, and not at all while the link is being re-established (``%rkernel status``
        must answer then); the next request collects the answer.  With the engine gone it
        takes none: that would start a fresh engine, whose In[n] starts at 1 anyway; nor
        while the engine waits in a queue (the next cell waits for it, and shows the wait)."""
        evaluator = self.evaluator
        if evaluator is None or evaluator.client.engine_gone or evaluator.client.engine_queued:
            return
        if evaluator.defer("Null"):
            if evaluator.client.reconnecting_since is None:
                evaluator.settle(MAGIC_LINE_WAIT)

    def _interrupt(self) -> None:
        if self.client is not None:
            try:
                self.client.interrupt()
            except AgentError as exc:
                self.log.warning("rk_jupyter: interrupt not delivered: %s", exc)

    def _ok(self, payload: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"status": "ok", "execution_count": self.execution_count,
                "payload": payload or [], "user_expressions": {}}

    def _error(self, ename: str, evalue: str) -> dict[str, Any]:
        content = {"ename": ename, "evalue": evalue, "traceback": [f"{ename}: {evalue}"]}
        self.send_response(self.iopub_socket, "error", content)
        return {"status": "error", "execution_count": self.execution_count, **content}

    # -- introspection --------------------------------------------------------------------

    def _request(self, pkt: Any, answer: str) -> Any:
        """The answer to a completion or inspection request, once earlier cells' answers are
        in; None when there is none (logged), also at once while the link is being
        re-established (an editor's Tab must not hang on a network or an agent that is
        coming back)."""
        if self.evaluator is None or self.evaluator.client.reconnecting_since is not None \
                or not self.turn.acquire(timeout=REQUEST_TIMEOUT):
            return None
        try:
            if not self.evaluator.settle(REQUEST_TIMEOUT):
                return None
            return self.evaluator.client.request(pkt, answer, REQUEST_TIMEOUT)
        except AgentError as exc:
            self.log.warning("rk_jupyter: %s failed: %s", answer, exc)
            return None
        finally:
            self.turn.release()

    async def do_complete(self, code: str, cursor_pos: int) -> dict[str, Any]:
        _, start, _ = word_at(code, cursor_pos)
        prefix = code[start:cursor_pos]
        matches = self._request(packet("RKComplete", prefix), "RKCompletions") if prefix else None
        return {"status": "ok", "matches": matches or [], "cursor_start": start,
                "cursor_end": cursor_pos, "metadata": {}}

    async def do_inspect(
        self, code: str, cursor_pos: int, detail_level: int = 0, omit_sections: Any = ()
    ) -> dict[str, Any]:
        word, _, _ = word_at(code, cursor_pos)
        data = self._request(packet("RKInspect", word), "RKInspection") if word else None
        return {"status": "ok", "found": bool(data), "data": data or {}, "metadata": {}}

    async def do_history(self, hist_access_type: str, output: bool, raw: bool,
                         session: int | None = None, start: int | None = None,
                         stop: int | None = None, n: int | None = None,
                         pattern: str | None = None, unique: bool = False) -> dict[str, Any]:
        """This kernel's cells (``history.History``); ``raw`` changes nothing (no cell is
        transformed before it is sent)."""
        return {"status": "ok", "history": self.history.query(
            hist_access_type, output, session=session, start=start, stop=stop, n=n,
            pattern=pattern, unique=unique)}

    async def do_is_complete(self, code: str) -> dict[str, Any]:
        status = is_complete(code)
        return {"status": status, "indent": ""} if status == "incomplete" else {"status": status}

    # -- control --------------------------------------------------------------------------

    async def interrupt_request(self, stream: Any, ident: Any, parent: Any) -> None:
        """An interrupt message goes straight to the agent; no signal games in this process."""
        self._interrupt()
        if self.session:
            self.session.send(stream, "interrupt_reply", {"status": "ok"}, parent, ident=ident)

    async def _at_shutdown(self) -> None:
        """ipykernel's last step of a shutdown request (the reply sent, its IOPub copy queued
        for the IOPub thread): exit as soon as that thread has passed the copy to ZeroMQ (its
        queue runs in order), not when the threads agree to (``EXIT_GRACE``)."""
        await super()._at_shutdown()
        handed = threading.Event()
        if self.iopub_thread is not None:
            self.iopub_thread.schedule(handed.set)
        handed.wait(EXIT_GRACE)
        _exit_in(EXIT_SENT)

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        self.updates.close()
        if self.client is not None:
            # A persistent session is left for the provisioner's cleanup to end, or to keep
            # when the Jupyter server is stopping; a restart starts afresh.
            self.client.close(end_session=restart or not self.persistent, restart=restart)
        if self.engine_launch is not None:  # before the reply: the client may kill us then
            self.engine_launch.stop()
        _exit_in(EXIT_GRACE)
        # Its thread runs even while the interpreter finalizes, where a hang may also be
        # (where no Python thread, the timer's included, runs any more).
        faulthandler.dump_traceback_later(EXIT_AFTER_SHUTDOWN, exit=True,
                                          file=sys.__stderr__ or sys.stderr)
        return {"status": "ok", "restart": restart}


#: The monotonic times at which a shutdown asked this process to exit (``_exit_in``).
_exit_due: list[float] = []


def _exit_now() -> None:
    logging.shutdown()
    os._exit(0)


def _exit_in(seconds: float) -> None:
    """End the kernel process ``seconds`` from now (after its shutdown reply): logs
    flushed, status 0."""
    _exit_due.append(time.monotonic() + seconds)
    timer = threading.Timer(seconds, _exit_now)
    timer.daemon = True
    timer.start()


def exit_when_due() -> None:
    """Called by the entry point once the kernel application has returned.  After a
    shutdown request it exits the process at the earliest time ``_exit_in`` set, and does not
    return: the timer threads cannot be relied on for it then, as the interpreter's
    finalization stops daemon threads and itself took 0.1-0.15 s more (half of the restarts
    measured waited for it).  Without a shutdown request it returns (a normal exit)."""
    if _exit_due:
        time.sleep(max(0.0, min(_exit_due) - time.monotonic()))
        _exit_now()
