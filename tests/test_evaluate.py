"""The one evaluation loop (rk_jupyter.client.evaluate) against a scripted client: pure logic,
so an in-process fake stands in for the agent (the real one is driven by test_kernel_local,
test_ipython_magics, test_agent_sessions and test_reconnect through the same loop)."""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest

from rk_jupyter.client import (
    AgentError,
    Collected,
    EvaluationError,
    Evaluator,
    LinkDown,
    SessionLost,
    run,
)
from rk_jupyter.client.agent import AGENT_GONE, LINK_DOWN
from rk_jupyter.client.evaluate import (
    ABORTED_CODE,
    ENGINE_ENDED,
    INTERRUPT_TIMEOUT,
    SYNTAX,
    TIMEOUT,
)
from rk_jupyter.link.expr import Symbol
from rk_jupyter.link.packets import UNSUPPORTED_ERROR, error_packet, packet, packet_name


class ScriptedClient:
    """Answers each request with the next scripted list of packets."""

    def __init__(self, *answers: list[Any]) -> None:
        self.answers = list(answers)
        self.sent: list[Any] = []
        self.interrupts = 0
        self.reconnecting_since = None
        self.queue: queue.Queue[Any] = queue.Queue()

    def send(self, pkt: Any) -> None:
        self.sent.append(pkt)
        if packet_name(pkt) in ("EnterTextPacket", "EvaluatePacket") and self.answers:
            for answer in self.answers.pop(0):
                self.queue.put(answer)

    def answer(self, *pkts: Any) -> None:
        for pkt in pkts:
            self.queue.put(pkt)

    def next_packet(self, timeout: float) -> Any:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def interrupt(self) -> None:
        self.interrupts += 1


def cell(line: int, *body: Any) -> list[Any]:
    return [*body, packet("InputNamePacket", f"In[{line}]:= ")]


class Recorder(Collected):
    """Collected, plus the order of the calls."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[str, Any]] = []

    def stdout(self, text: str) -> None:
        self.calls.append(("stdout", text))
        super().stdout(text)

    def stderr(self, text: str) -> None:
        self.calls.append(("stderr", text))
        super().stderr(text)

    def display(self, bundle: dict[str, str], line: int | None) -> None:
        self.calls.append(("display", (bundle, line)))
        super().display(bundle, line)

    def next_line(self, line: int) -> None:
        self.calls.append(("next_line", line))
        super().next_line(line)


def test_a_cell_streams_in_order_and_ends_at_the_next_in() -> None:
    client = ScriptedClient(cell(
        8, packet("TextPacket", "early"), packet("MessagePacket", "Power", "infy", "1/0."),
        packet("OutputNamePacket", "Out[7]= "), packet("ReturnPacket", {"text/plain": "42"})))
    out = Recorder()
    assert run(client, "Print[early]; 42", out) is None
    assert client.sent == [packet("EnterTextPacket", "Print[early]; 42")]
    assert out.calls == [("stdout", "early"), ("stderr", "Power::infy: 1/0."),
                         ("display", ({"text/plain": "42"}, 7)), ("next_line", 8)]


def test_a_syntax_error_ends_the_cell_then_raises_the_message() -> None:
    message = packet("MessagePacket", "Syntax", "sntxi", "Incomplete expression")
    client = ScriptedClient(cell(3, message, packet("SyntaxPacket", 4)))
    out = Collected()
    with pytest.raises(EvaluationError) as failure:
        run(client, "1 +", out)
    assert failure.value.code == SYNTAX
    assert str(failure.value) == "Syntax::sntxi: Incomplete expression"
    assert out.line == 3, "the count follows the engine also after an error"
    assert out.messages == [], "the message is the error, not an output of its own too"


def test_a_syntax_warning_before_the_syntax_error_is_part_of_the_error() -> None:
    warning = packet("MessagePacket", "Syntax", "com", "comma with no adjacent expression")
    error = packet("MessagePacket", "Syntax", "sntxi", "Incomplete expression")
    client = ScriptedClient(cell(3, warning, error, packet("SyntaxPacket", 5)))
    out = Collected()
    with pytest.raises(EvaluationError) as failure:
        run(client, "f[1,,", out)
    assert str(failure.value) == ("Syntax::com: comma with no adjacent expression\n"
                                  "Syntax::sntxi: Incomplete expression")
    assert out.messages == []


def test_a_syntax_message_without_a_syntax_error_is_shown_as_it_comes() -> None:
    """ToExpression["1+"] gives a Syntax message but the cell is fine: the message is shown,
    in its place among the outputs."""
    client = ScriptedClient(cell(
        4, packet("MessagePacket", "Syntax", "sntxi", "Incomplete expression"),
        packet("TextPacket", "after"),
        packet("OutputNamePacket", "Out[3]= "), packet("ReturnPacket", {"text/plain": "$Failed"})))
    out = Recorder()
    run(client, 'ToExpression["1+"]; Print[after]; $Failed', out)
    assert out.calls[:2] == [("stderr", "Syntax::sntxi: Incomplete expression"),
                             ("stdout", "after")]


def test_an_aborted_cell() -> None:
    client = ScriptedClient(cell(2, packet("ReturnPacket", Symbol("$Aborted"))))
    with pytest.raises(EvaluationError) as failure:
        run(client, "While[True]", Collected())
    assert failure.value.code == ABORTED_CODE and "aborted" in str(failure.value)


def test_an_expression_returns_its_value_at_its_return_packet() -> None:
    client = ScriptedClient([packet("TextPacket", "side"), packet("ReturnPacket", [1, 2, 3])])
    out = Collected()
    assert run(client, "Range[3]", out, expression=True) == [1, 2, 3]
    assert client.sent == [packet("EvaluatePacket", "Range[3]")]
    assert out.prints == ["side"] and out.results == []


def test_input_is_asked_and_answered() -> None:
    client = ScriptedClient([packet("InputStringPacket", "name? ")])
    out = Collected(answers=["Ada"])
    evaluator = Evaluator(client, poll=0.05)

    def answer_then_end(pkt: Any, send=client.send) -> None:
        send(pkt)
        if packet_name(pkt) == "TextPacket":
            client.answer(packet("ReturnPacket", {"text/plain": "Ada!"}),
                          packet("InputNamePacket", "In[2]:= "))

    client.send = answer_then_end  # type: ignore[method-assign]
    evaluator.run('InputString["name? "] <> "!"', out)
    assert out.prompts == ["name? "] and out.text == "Ada!"
    assert client.sent[-1] == packet("TextPacket", "Ada")


def test_deferred_cells_are_collected_before_the_next_one_and_never_shown() -> None:
    client = ScriptedClient(cell(5), cell(6, packet("ReturnPacket", {"text/plain": "1"})))
    evaluator = Evaluator(client, poll=0.05)
    assert evaluator.defer("Null") and evaluator.owed == 1
    out = Recorder()
    evaluator.run("1", out)
    assert out.calls == [("display", ({"text/plain": "1"}, None)), ("next_line", 6)]
    assert evaluator.owed == 0


def test_a_timed_out_cell_is_owed_and_its_rest_dropped_later() -> None:
    client = ScriptedClient([packet("TextPacket", "slow")], cell(9))
    evaluator = Evaluator(client, poll=0.05)
    with pytest.raises(EvaluationError) as failure:
        evaluator.run("Pause[100]", Collected(), timeout=0.3)
    assert failure.value.code == TIMEOUT
    assert evaluator.owed == 1
    client.answer(packet("TextPacket", "late"), packet("InputNamePacket", "In[8]:= "))
    assert evaluator.settle(1.0) and evaluator.owed == 0
    out = Collected()
    evaluator.run("x", out)
    assert out.prints == [] and out.line == 9, "the late output did not land here"


def test_a_keyboard_interrupt_interrupts_and_the_grace_bounds_the_wait() -> None:
    client = ScriptedClient([packet("InputPacket", "? ")])

    class Interrupted(Collected):
        def read_input(self, prompt: str) -> str:
            raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(EvaluationError) as failure:
        Evaluator(client, poll=0.05).run("Input[]", Interrupted(), interrupt_grace=0.3)
    assert client.interrupts == 1
    assert failure.value.code == INTERRUPT_TIMEOUT and "0 s of the interrupt" in str(failure.value)
    assert time.monotonic() - started < 5


def test_a_lost_session_raises_session_lost_with_the_reason() -> None:
    answer = LinkDown("the link to the agent ended: reset")
    client = ScriptedClient([packet("TextPacket", "a"), answer])
    evaluator = Evaluator(client, poll=0.05)
    with pytest.raises(SessionLost) as failure:
        evaluator.run("x", Collected())
    assert failure.value.code == LINK_DOWN
    assert str(failure.value) == answer.reason


class RestartingClient(ScriptedClient):
    restarted: list[dict[str, Any]]

    def engine_restarted(self, info: dict[str, Any]) -> None:
        self.restarted = [*getattr(self, "restarted", []), info]


def test_an_engine_that_ends_ends_the_cell_and_the_next_cell_says_it_is_fresh() -> None:
    """A crash ends its cell with ENGINE_ENDED (the session goes on); the next cell's answer
    starts with RKEngineRestarted, said once on stderr; Quit[] ends its cell quietly."""
    client = RestartingClient(
        [packet("TextPacket", "a"), packet("RKEngineDied", "killed by signal SIGKILL", False)],
        [packet("RKEngineRestarted", {"name": "M", "restarts": 1, "cause": "killed by SIGKILL"}),
         *cell(2, packet("OutputNamePacket", "Out[1]= "),
                 packet("ReturnPacket", {"text/plain": "2"}))],
        [packet("RKEngineDied", "exited (Quit[] and Exit[] end the engine)", True)],
    )
    evaluator = Evaluator(client, poll=0.05)
    with pytest.raises(EvaluationError) as failure:
        evaluator.run("x", Collected())
    assert failure.value.code == ENGINE_ENDED and "SIGKILL" in str(failure.value)
    assert "fresh engine" in str(failure.value)
    out = Collected()
    evaluator.run("1 + 1", out)
    assert out.text == "2" and out.line == 2
    assert len(out.messages) == 1 and "definitions were reset" in out.messages[0]
    assert "killed by SIGKILL" in out.messages[0]
    assert client.restarted[0]["restarts"] == 1
    quiet = Collected()
    assert evaluator.run("Quit[]", quiet) is None and quiet.messages == [] and not evaluator.owed
    assert evaluator.owed == 0


def test_a_dead_agent_is_noticed_while_waiting() -> None:
    client = ScriptedClient([])
    deaths = iter([None, "the local agent exited (status -9)"])
    with pytest.raises(SessionLost) as failure:
        Evaluator(client, poll=0.05).run("Pause[9]", Collected(), alive=lambda: next(deaths))
    assert failure.value.code == AGENT_GONE
    assert str(failure.value) == "the agent is gone: the local agent exited (status -9)"


def test_a_refused_request_carries_the_agents_code() -> None:
    client = ScriptedClient([error_packet("EvaluatePacket is not supported", UNSUPPORTED_ERROR)])
    evaluator = Evaluator(client, poll=0.05)
    with pytest.raises(AgentError) as failure:
        evaluator.run("1", Collected(), expression=True)
    assert not isinstance(failure.value, SessionLost)
    assert failure.value.code == UNSUPPORTED_ERROR and evaluator.owed == 0
