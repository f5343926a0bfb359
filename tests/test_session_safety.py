"""A bug that meets a request answers it: never a thread that dies and a cell that waits.

The agent's side is pure logic: an in-process Session with a stand-in engine whose evaluate
raises what no engine should (a programming error), as an AttributeError in the Slurm code
once did: the session thread died and the cell waited for ever.  The kernel's side uses a
real agent: its link reader meets a programming error, and the cell gets the cause.
"""

from __future__ import annotations

import queue
from typing import Any

import pytest

from rk_jupyter.agent import session as session_module
from rk_jupyter.agent.engines.base import Engine, EngineInfo
from rk_jupyter.client import AgentClient, Collected, Endpoint, SessionLost, run
from rk_jupyter.link.packets import INTERNAL_ERROR, packet, packet_name

from kernel_helpers import local_agent


class BuggyEngine(Engine):
    """Evaluates "ok" and fails with a programming error on anything else."""

    def start(self, timeout: float) -> EngineInfo:
        return EngineInfo(name="Buggy", version="1")

    def evaluate(self, code: str) -> None:
        if code != "ok":
            raise AttributeError("'SlurmStep' object has no attribute '_closing'")
        self.host.emit(packet("InputNamePacket", "In[2]:= "))

    def evaluate_expression(self, code: str) -> None:
        self.evaluate(code)

    def complete(self, prefix: str) -> list[str]:
        return []

    def inspect(self, name: str) -> Any:
        return None

    def interrupt(self) -> None:
        pass

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        pass


def test_a_bug_while_serving_answers_the_request_and_the_session_lives(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "create_engine",
                        lambda name, host, options: BuggyEngine(host, options))
    sent: queue.Queue[Any] = queue.Queue()
    session = session_module.Session("s", "buggy", {}, on_closed=lambda s: None)
    monkeypatch.setattr(session, "emit", sent.put)
    session.start()
    try:
        assert packet_name(sent.get(timeout=5)) == "RKSessionReady"
        session.handle(packet("EnterTextPacket", "boom"))
        answer = sent.get(timeout=5)
        assert packet_name(answer) == "RKError", answer
        assert answer.args[1] == INTERNAL_ERROR and "AttributeError" in answer.args[0]
        session.handle(packet("EnterTextPacket", "ok"))
        assert packet_name(sent.get(timeout=5)) == "InputNamePacket", "the session lives on"
    finally:
        session.close()


def test_a_bug_in_the_kernels_link_reader_ends_the_cell_with_its_cause() -> None:
    token = b"safety-token-0123456789abcdef01"
    with local_agent(token) as (port, _):
        client = AgentClient(Endpoint("127.0.0.1", port, token))
        client.open(timeout=120)
        try:
            def boom(expr: Any) -> None:
                raise RuntimeError("a bug")

            client._outbox.take = boom  # the reader calls it for every session packet
            with pytest.raises(SessionLost) as lost:
                run(client, "1 + 1", Collected(), timeout=30)
            assert "link reader failed" in str(lost.value) and "a bug" in str(lost.value)
        finally:
            client.close()
