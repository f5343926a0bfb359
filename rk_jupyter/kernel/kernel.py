"""The Jupyter kernel: a thin translator between Jupyter messages and link packets."""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from ipykernel.kernelbase import Kernel

from .. import __version__
from ..client import AgentClient, AgentError, Endpoint, LinkDown
from ..link.packets import ABORTED, packet, packet_name
from .magics import is_magic, run_magic
from .syntax import is_complete, word_at

_LINE = re.compile(r"\[(\d+)\]")
POLL = 1.0
REQUEST_TIMEOUT = 30.0
#: How long a magic cell waits for the engine to take its In[n] before it lets the next
#: request collect that answer (a link being re-established must not hold the cell).
MAGIC_LINE_WAIT = 2.0


def endpoint_from_environment() -> Endpoint:
    """The provisioner passes the agent's endpoint through the environment (never argv);
    the token is removed from the environment once read."""
    env = os.environ
    return Endpoint(
        host=env.get("RK_AGENT_HOST", "127.0.0.1"),
        port=int(env["RK_AGENT_PORT"]),
        token=env.pop("RK_AGENT_TOKEN", "").encode(),
        transport=env.get("RK_TRANSPORT", "local"),
        description=env.get("RK_ENDPOINT", ""),
        codec=env.get("RK_COMPRESSION", "brotli"),
        engine=env.get("RK_ENGINE", "mathics"),
        engine_options=json.loads(env.get("RK_ENGINE_OPTIONS", "{}")),
        session=env.get("RK_SESSION", ""),
        attach=bool(env.get("RK_SESSION")),
    )


def _line_number(text: Any) -> int | None:
    match = _LINE.search(text) if isinstance(text, str) else None
    return int(match.group(1)) if match else None


class WolframKernel(Kernel):
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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client: AgentClient | None = None
        self.start_error: str | None = None
        self._owed = 0  # evaluations sent but not waited for (magic cells' Null)
        try:
            grace = float(os.environ.get("RK_RECONNECT_GRACE", "0"))
            client = AgentClient(endpoint_from_environment(), os.environ.get("RK_KERNEL_ID", ""),
                                 grace=grace)
            info = client.open(keep=grace)
        except (AgentError, KeyError, ValueError) as exc:
            self.start_error = str(exc)
            self.log.error("rk_jupyter: cannot start the engine: %s", exc)
            return
        self.client = client
        self.banner = f"{info.get('name')} {info.get('version')} through rk_jupyter"

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
        return self._evaluate(code, silent, allow_stdin)

    def _evaluate(self, code: str, silent: bool, allow_stdin: bool) -> dict[str, Any]:
        if self.client is None:
            return self._error("EngineUnavailable",
                               f"the engine is not running: {self.start_error}")
        try:
            self.client.send(packet("EnterTextPacket", code))
        except AgentError as exc:
            return self._error("LinkDown", str(exc))
        out_line: int | None = None
        error: tuple[str, str] | None = None
        messages: list[str] = []
        while True:
            try:
                pkt = self.client.next_packet(POLL)
            except KeyboardInterrupt:
                self._interrupt()
                continue
            name = packet_name(pkt)
            if pkt is None:
                continue
            if isinstance(pkt, LinkDown):
                return self._error("LinkDown", pkt.reason)
            if name == "TextPacket":
                self._stream("stdout", pkt.args[0], silent)
            elif name == "MessagePacket":
                symbol, tag, text = (list(pkt.args) + ["", "", ""])[:3]
                message = f"{symbol}::{tag}: {text}"
                messages.append(message)
                self._stream("stderr", message, silent)
            elif name == "SyntaxPacket":
                error = ("SyntaxError", messages[-1] if messages else "syntax error")
            elif name == "OutputNamePacket":
                out_line = _line_number(pkt.args[0])
            elif name == "ReturnPacket":
                result = pkt.args[0] if pkt.args else None
                if result == ABORTED:
                    error = ("$Aborted", "the evaluation was aborted")
                elif isinstance(result, dict) and not silent:
                    self.send_response(self.iopub_socket, "execute_result", {
                        "execution_count": out_line or self.execution_count,
                        "data": result,
                        "metadata": {},
                    })
            elif name in ("InputPacket", "InputStringPacket"):
                self._answer_input(pkt.args[0] if pkt.args else "", allow_stdin)
            elif name == "InputNamePacket" and self._owed:
                self._owed -= 1  # the end of an earlier magic cell's Null, sent before ours
            elif name == "InputNamePacket":
                next_line = _line_number(pkt.args[0])
                if next_line is not None:
                    self.execution_count = next_line - 1
                break
            elif name == "RKEngineDied":
                return self._error("EngineDied", pkt.args[0])
        if error:
            return self._error(*error)
        return {"status": "ok", "execution_count": self.execution_count,
                "payload": [], "user_expressions": {}}

    def _answer_input(self, prompt: str, allow_stdin: bool) -> None:
        if not allow_stdin:
            self._stream("stderr", "Input[] needs a front end that accepts input; "
                         "returning an empty string", False)
            answer = ""
        else:
            try:
                answer = self.raw_input(prompt)
            except KeyboardInterrupt:
                self._interrupt()
                return
        assert self.client is not None
        self.client.send(packet("TextPacket", answer))

    def _interrupt(self) -> None:
        if self.client is not None:
            try:
                self.client.interrupt()
            except AgentError as exc:
                self.log.warning("rk_jupyter: interrupt not delivered: %s", exc)

    def _magic(self, code: str, silent: bool) -> dict[str, Any]:
        try:
            bundle = run_magic(code, self.client, self.start_error)
        except (ValueError, AgentError) as exc:
            return self._error("RKernelMagic", str(exc))
        if not silent:
            self.send_response(self.iopub_socket, "display_data",
                               {"data": bundle, "metadata": {}})
        if self.client is not None:
            self._take_line(self.client)
        return {"status": "ok", "execution_count": self.execution_count,
                "payload": [], "user_expressions": {}}

    def _take_line(self, client: AgentClient) -> None:
        """A magic cell takes an In[n] like any other, so that Jupyter's execution count and
        the engine's $Line stay one and the same: it evaluates Null, but waits for that only
        briefly, and not at all while the link is being re-established (``%rkernel status``
        must answer then); the next request collects the answer (``_settle``)."""
        try:
            client.send(packet("EnterTextPacket", "Null"))
        except AgentError:
            return
        self._owed += 1
        if client.reconnecting_since is None:
            self._settle(client, MAGIC_LINE_WAIT)

    def _settle(self, client: AgentClient, timeout: float) -> bool:
        """Read the answers of the evaluations not waited for, up to their In[n] names;
        False if they did not all come within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self._owed:
            pkt = client.next_packet(max(deadline - time.monotonic(), 0.0))
            if pkt is None:
                return False
            if isinstance(pkt, LinkDown):
                self._owed = 0  # nothing more comes; requests will report why
                return False
            if packet_name(pkt) == "InputNamePacket":
                self._owed -= 1
        return True

    def _stream(self, name: str, text: str, silent: bool) -> None:
        if not silent:
            if not text.endswith("\n"):
                text += "\n"
            self.send_response(self.iopub_socket, "stream", {"name": name, "text": text})

    def _error(self, ename: str, evalue: str) -> dict[str, Any]:
        content = {"ename": ename, "evalue": evalue, "traceback": [f"{ename}: {evalue}"]}
        self.send_response(self.iopub_socket, "error", content)
        return {"status": "error", "execution_count": self.execution_count, **content}

    # -- introspection --------------------------------------------------------------------

    async def do_complete(self, code: str, cursor_pos: int) -> dict[str, Any]:
        word, start, _ = word_at(code, cursor_pos)
        prefix = code[start:cursor_pos]
        matches: list[str] = []
        if prefix and self.client is not None and self._settle(self.client, REQUEST_TIMEOUT):
            try:
                matches = self.client.request(packet("RKComplete", prefix), "RKCompletions",
                                              REQUEST_TIMEOUT)
            except AgentError as exc:
                self.log.warning("rk_jupyter: completion failed: %s", exc)
        return {"status": "ok", "matches": matches, "cursor_start": start,
                "cursor_end": cursor_pos, "metadata": {}}

    async def do_inspect(
        self, code: str, cursor_pos: int, detail_level: int = 0, omit_sections: Any = ()
    ) -> dict[str, Any]:
        word, _, _ = word_at(code, cursor_pos)
        data = None
        if word and self.client is not None and self._settle(self.client, REQUEST_TIMEOUT):
            try:
                data = self.client.request(packet("RKInspect", word), "RKInspection",
                                           REQUEST_TIMEOUT)
            except AgentError as exc:
                self.log.warning("rk_jupyter: inspection failed: %s", exc)
        return {"status": "ok", "found": bool(data), "data": data or {}, "metadata": {}}

    async def do_is_complete(self, code: str) -> dict[str, Any]:
        status = is_complete(code)
        return {"status": status, "indent": ""} if status == "incomplete" else {"status": status}

    # -- control --------------------------------------------------------------------------

    async def interrupt_request(self, stream: Any, ident: Any, parent: Any) -> None:
        """An interrupt message goes straight to the agent; no signal games in this process."""
        self._interrupt()
        if self.session:
            self.session.send(stream, "interrupt_reply", {"status": "ok"}, parent, ident=ident)

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        if self.client is not None:
            self.client.close()
        return {"status": "ok", "restart": restart}
