"""EvaluatePacket on Mathics3: values as WXF Python values, no In/Out, exactly one answer."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest

from rk_jupyter.agent.engines.base import Engine, EngineInfo
from rk_jupyter.agent.engines.mathics import MathicsEngine
from rk_jupyter.agent.session import Session
from rk_jupyter.link import wxf
from rk_jupyter.link.expr import Function, Symbol
from rk_jupyter.link.packets import ABORTED, packet, packet_name
from rk_jupyter.link.wxf import Delayed

pytest.importorskip("mathics", reason="Mathics3 is not installed")
np = pytest.importorskip("numpy")

START_TIMEOUT = 120.0


class Recorder:
    """An EngineHost that records packets."""

    def __init__(self) -> None:
        self.log: list[Function] = []

    def emit(self, pkt: Function) -> None:
        self.log.append(pkt)

    def read_input(self, prompt: Function) -> str:
        return "6 * 7"


@pytest.fixture(scope="module")
def host() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def engine(host: Recorder):
    eng = MathicsEngine(host, {})
    eng.start(START_TIMEOUT)
    yield eng
    eng.close()


def evaluate(engine: MathicsEngine, host: Recorder, code: str) -> list[Function]:
    host.log.clear()
    engine.evaluate_expression(code)
    return list(host.log)


def value(engine: MathicsEngine, host: Recorder, code: str) -> Any:
    """The value as the kernel side receives it: through a WXF round trip."""
    packets = evaluate(engine, host, code)
    assert packet_name(packets[-1]) == "ReturnPacket"
    assert [packet_name(p) for p in packets].count("ReturnPacket") == 1
    return wxf.loads(wxf.dumps(packets[-1].args[0]))


@pytest.mark.parametrize(("code", "expected"), [
    ("Range[5]", [1, 2, 3, 4, 5]),
    ("2^100", 2**100),
    ("-2^70", -(2**70)),
    ("1.5", 1.5),
    ('"text"', "text"),
    ("{True, False, Null}", [True, False, None]),
    ('<|"a" -> 1, "b" -> {1, 2}|>', {"a": 1, "b": [1, 2]}),
    ("<|x :> 1|>", {Symbol("Global`x"): Delayed(1)}),
    ("<|{1, 2} -> 3|>", {(1, 2): 3}),
    ("{1, 2.5, x}", [1, 2.5, Symbol("Global`x")]),
    ("Pi", Symbol("Pi")),
    ("1/3", Function(Symbol("Rational"), 1, 3)),
    ("1 + 2 I", Function(Symbol("Complex"), 1, 2)),
    ("1.5 + 2.5 I", 1.5 + 2.5j),
    ("N[Pi, 30]", Decimal("3.14159265358979323846264338328")),
    ("ByteArray[{1, 2, 255}]", b"\x01\x02\xff"),
    ("f[x, {}]", Function(Symbol("Global`f"), Symbol("Global`x"), [])),
    ("a = 5;", None),
    ("FromCharacterCode[{97, 55296}]", "a\ufffd"),  # a lone surrogate is no UTF-8
])
def test_values(engine: MathicsEngine, host: Recorder, code: str, expected: Any) -> None:
    got = value(engine, host, code)
    assert got == expected and type(got) is type(expected)


def test_machine_real_arrays_are_packed(engine: MathicsEngine, host: Recorder) -> None:
    vector = value(engine, host, "N[Range[3]]")
    assert isinstance(vector, np.ndarray) and vector.dtype == np.float64
    assert vector.tolist() == [1.0, 2.0, 3.0]
    matrix = value(engine, host, "N[{{1, 2}, {3, 4}, {5, 6}}]")
    assert matrix.shape == (3, 2) and matrix[2, 1] == 6.0
    complexes = value(engine, host, "{1. + 2. I, 3. I + 1.}")
    assert complexes.dtype == np.complex128 and complexes.tolist() == [1 + 2j, 1 + 3j]
    ragged = value(engine, host, "{{1., 2.}, {3.}}")  # a list of two packed rows
    assert type(ragged) is list and [row.tolist() for row in ragged] == [[1.0, 2.0], [3.0]]


def test_print_and_messages_then_one_return_and_nothing_else(
    engine: MathicsEngine, host: Recorder
) -> None:
    packets = evaluate(engine, host, 'Print["p"]; 1/0; 7')
    assert [packet_name(p) for p in packets] == ["TextPacket", "MessagePacket", "ReturnPacket"]
    assert packets[-1] == packet("ReturnPacket", 7)


def test_no_in_out_bookkeeping(engine: MathicsEngine, host: Recorder) -> None:
    host.log.clear()
    engine.evaluate("10")
    line = int(host.log[0].args[0].removeprefix("Out[").removesuffix("]= "))
    assert value(engine, host, "20") == 20
    assert value(engine, host, f"{{In[{line + 1}], Out[{line + 1}]}}") == [
        Function(Symbol("In"), line + 1), Function(Symbol("Out"), line + 1)]
    host.log.clear()
    engine.evaluate("30")
    assert host.log[0] == packet("OutputNamePacket", f"Out[{line + 1}]= ")


def test_several_expressions_give_the_last(engine: MathicsEngine, host: Recorder) -> None:
    assert value(engine, host, "y = 3\ny^2") == 9


def test_syntax_error_evaluates_nothing(engine: MathicsEngine, host: Recorder) -> None:
    packets = evaluate(engine, host, "z = 1; 1 +")
    assert [packet_name(p) for p in packets] == ["MessagePacket", "SyntaxPacket", "ReturnPacket"]
    assert packets[-1] == packet("ReturnPacket", Symbol("$Failed"))
    assert value(engine, host, "z") == Symbol("Global`z")


def test_escaping_control_flow(engine: MathicsEngine, host: Recorder) -> None:
    assert value(engine, host, "Abort[]") == ABORTED
    assert value(engine, host, "Return[3]") == 3
    packets = evaluate(engine, host, "Throw[4]")
    assert packet_name(packets[0]) == "MessagePacket" and packets[0].args[1] == "nocatch"
    assert packets[-1].args[0] == Function(Symbol("Hold"), Function(Symbol("Throw"), 4))


def test_too_deep_a_value_fails_with_a_message(engine: MathicsEngine, host: Recorder) -> None:
    packets = evaluate(engine, host, "Nest[f, 0, 1000]")
    assert packets[0].args[:2] == ("EvaluatePacket", "depth")
    assert packets[-1] == packet("ReturnPacket", Symbol("$Failed"))


def test_input_is_asked_for(engine: MathicsEngine, host: Recorder) -> None:
    assert value(engine, host, 'Input["n = "]') == 42


def test_interrupt_gives_aborted_and_keeps_state(engine: MathicsEngine, host: Recorder) -> None:
    value(engine, host, "k = 0;")
    timer = threading.Timer(1.0, engine.interrupt)
    timer.start()
    started = time.monotonic()
    packets = evaluate(engine, host, "While[True, k++]")
    timer.join()
    assert packets == [packet("ReturnPacket", ABORTED)]
    assert time.monotonic() - started < 10
    assert value(engine, host, "k > 0") is True


class _NoExpressions(Engine):
    """An engine that keeps the contract's default evaluate_expression."""

    def start(self, timeout: float) -> EngineInfo:
        return EngineInfo("none", "0")

    def evaluate(self, code: str) -> None:
        raise AssertionError("not called")

    def complete(self, prefix: str) -> list[str]:
        return []

    def inspect(self, name: str) -> dict[str, str] | None:
        return None

    def interrupt(self) -> None:
        pass

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        pass


def test_an_engine_without_support_answers_rkerror() -> None:
    sent: list[Function] = []

    class RecordingLink:
        def send_many(self, _channel: int, pkts: list[Function]) -> None:
            sent.extend(pkts)

    session = Session("s", "none", {}, lambda _s: None)
    session.bind(RecordingLink(), 1)
    session.engine = _NoExpressions(session, {})
    session._serve(packet("EvaluatePacket", "1 + 1"))
    [answer] = sent
    assert packet_name(answer) == "RKError" and "not supported" in answer.args[0]
