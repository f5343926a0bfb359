"""MathicsEngine against real Mathics3, through a fake EngineHost that records packets."""

from __future__ import annotations

import gc
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rk_jupyter.agent.engines.base import EngineError, InputAborted
from rk_jupyter.agent.engines.mathics import MathicsEngine
from rk_jupyter.link.expr import Function
from rk_jupyter.link.packets import ABORTED, packet, packet_name

pytest.importorskip("mathics", reason="Mathics3 is not installed")

START_TIMEOUT = 120.0


class FakeHost:
    """Records emitted packets with their arrival time; answers input from a queue."""

    def __init__(self) -> None:
        self.log: list[tuple[float, Function]] = []
        self.prompts: list[Function] = []
        self.answers: queue.Queue[str | None] = queue.Queue()

    def emit(self, pkt: Function) -> None:
        self.log.append((time.monotonic(), pkt))

    def read_input(self, prompt: Function) -> str:
        self.prompts.append(prompt)
        answer = self.answers.get(timeout=30)
        if answer is None:
            raise InputAborted()
        return answer


def run(engine: MathicsEngine, host: FakeHost, code: str) -> list[Function]:
    host.log.clear()
    engine.evaluate(code)
    return [pkt for _, pkt in host.log]


def names(packets: list[Function]) -> list[str | None]:
    return [packet_name(pkt) for pkt in packets]


def result(packets: list[Function]) -> Any:
    (ret,) = [pkt.args[0] for pkt in packets if packet_name(pkt) == "ReturnPacket"]
    return ret


def gone(pid: int) -> bool:
    """No such process, not even an unreaped zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return not Path(f"/proc/{pid}").exists()
    return False


def ended(pid: int) -> bool:
    """Gone, or a zombie left to whatever adopted it (not ours to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture(scope="module")
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture(scope="module")
def engine(host: FakeHost):
    eng = MathicsEngine(host, {})
    eng.start(START_TIMEOUT)
    yield eng
    eng.close()


def fresh_engine(options: dict[str, Any] | None = None) -> tuple[MathicsEngine, FakeHost]:
    host = FakeHost()
    eng = MathicsEngine(host, options or {})
    eng.start(START_TIMEOUT)
    return eng, host


# -- evaluation -------------------------------------------------------------------------------


def test_start_info(host: FakeHost) -> None:
    eng = MathicsEngine(host, {})
    try:
        info = eng.start(START_TIMEOUT)
        assert info.name == "Mathics3"
        assert info.version.split(".")[0].isdigit()
        assert info.extra["python"] == sys.executable
        assert isinstance(info.extra["pid"], int) and eng.alive()
    finally:
        eng.close()
    assert not eng.alive()


def test_one_plus_one_and_numbering(engine: MathicsEngine, host: FakeHost) -> None:
    first = run(engine, host, "1+1")
    assert names(first) == ["OutputNamePacket", "ReturnPacket", "InputNamePacket"]
    assert result(first) == {"text/plain": "2"}
    n = int(first[0].args[0].removeprefix("Out[").removesuffix("]= "))
    assert first[2] == packet("InputNamePacket", f"In[{n + 1}]:= ")
    second = run(engine, host, "2+2")
    assert second[0] == packet("OutputNamePacket", f"Out[{n + 1}]= ")
    assert second[2] == packet("InputNamePacket", f"In[{n + 2}]:= ")
    assert result(run(engine, host, f"{{Out[{n}], In[{n + 1}], %}}"))["text/plain"] == "{2, 4, 4}"


def test_print_is_live_and_ordered(engine: MathicsEngine, host: FakeHost) -> None:
    packets = run(engine, host, 'Print["a"]; Print["b"]; Pause[1]; 1')
    assert names(packets) == [
        "TextPacket", "TextPacket", "OutputNamePacket", "ReturnPacket", "InputNamePacket"
    ]
    assert [p.args[0] for p in packets[:2]] == ["a", "b"]
    times = {packet_name(p): t for t, p in reversed(host.log)}
    assert times["ReturnPacket"] - times["TextPacket"] > 0.7


def test_message(engine: MathicsEngine, host: FakeHost) -> None:
    packets = run(engine, host, "1/0")
    message = packets[0]
    assert packet_name(message) == "MessagePacket"
    assert message.args[:2] == ("Power", "infy")
    assert "Infinite expression" in message.args[2]
    assert names(packets)[1:] == ["OutputNamePacket", "ReturnPacket", "InputNamePacket"]


def test_latex_for_math(engine: MathicsEngine, host: FakeHost) -> None:
    bundle = result(run(engine, host, "Integrate[x^2, x]"))
    assert bundle["text/plain"] == "x ^ 3 / 3"
    assert bundle["text/latex"].startswith("$$") and bundle["text/latex"].endswith("$$")
    assert "x^3" in bundle["text/latex"]


@pytest.mark.parametrize(("code", "text"), [
    ('"a string"', "a string"), ("12345", "12345"), ("2.5", "2.5"), ("{1, 2, 3}", "{1, 2, 3}"),
    ("True", "True"), ("FullForm[z^2]", "Power[z, 2]"),
])
def test_no_latex_for_plain_data(engine: MathicsEngine, host: FakeHost, code: str, text: str
                                 ) -> None:
    """Data is shown as its text alone: the text/plain is there, and no TeX (nor anything
    else) competes with it."""
    bundle = result(run(engine, host, code))
    assert bundle.get("text/plain") == text
    assert "text/latex" not in bundle
    assert set(bundle) == {"text/plain"}


def test_an_integer_past_the_digit_limit_is_shown_as_mathics_shows_it(
    engine: MathicsEngine, host: FakeHost
) -> None:
    """With $MaxLengthIntStringConversion set, Python refuses the digits of 500!; the result
    is then Mathics3's own text, digits elided, not an internal error."""
    run(engine, host, "$MaxLengthIntStringConversion = 650")
    try:
        packets = run(engine, host, "500!")
        text = result(packets)["text/plain"]
        assert text.startswith("12201368259911100687") and "<<501>>" in text, text
        assert "MessagePacket" not in names(packets)
    finally:
        run(engine, host, "$MaxLengthIntStringConversion = 0")


def test_lone_surrogates_do_not_break_the_engine(engine: MathicsEngine, host: FakeHost) -> None:
    """A string the link cannot carry as it is (a lone surrogate is no UTF-8) is shown with
    U+FFFD in its place; the engine goes on."""
    packets = run(engine, host, "Print[FromCharacterCode[55296]]; FromCharacterCode[55297]")
    assert names(packets) == ["TextPacket", "OutputNamePacket", "ReturnPacket", "InputNamePacket"]
    assert packets[0].args[0] == "\ufffd" and result(packets) == {"text/plain": "\ufffd"}
    assert result(run(engine, host, "1 + 1")) == {"text/plain": "2"}


def test_plot_gives_svg(engine: MathicsEngine, host: FakeHost) -> None:
    bundle = result(run(engine, host, "Plot[Sin[x], {x, 0, 1}]"))
    assert bundle["image/svg+xml"].startswith(("<svg", "<?xml"))
    assert bundle["text/plain"] == "-Graphics-"
    assert "text/latex" not in bundle


def test_graphics3d_gives_a_picture(engine: MathicsEngine, host: FakeHost) -> None:
    """A static SVG of the default view and an HTML view that turns; the text stays."""
    bundle = result(run(engine, host, "Graphics3D[{Red, Sphere[]}]"))
    assert bundle["text/plain"] == "-Graphics3D-"
    assert bundle["image/svg+xml"].startswith("<svg") and "<polygon" in bundle["image/svg+xml"]
    assert "<canvas" in bundle["text/html"] and "<svg" in bundle["text/html"]


def test_syntax_error(engine: MathicsEngine, host: FakeHost) -> None:
    before = run(engine, host, "0")[-1]
    packets = run(engine, host, "f[")
    assert names(packets) == ["MessagePacket", "SyntaxPacket", "InputNamePacket"]
    assert packets[0].args[:2] == ("Syntax", "sntxi")
    assert packets[1] == packet("SyntaxPacket", 3)
    assert packets[2] == before  # a syntax error does not use up a line


def test_syntax_error_evaluates_nothing_of_the_cell(engine: MathicsEngine, host: FakeHost) -> None:
    code = 'sideEffect = 1; Print["no"]\n2 +* 3'
    packets = run(engine, host, code)
    assert names(packets) == ["MessagePacket", "SyntaxPacket", "InputNamePacket"]
    assert packets[0].args[:2] == ("Syntax", "sntxf")
    assert packets[1] == packet("SyntaxPacket", code.index("*") + 1)
    assert result(run(engine, host, "sideEffect"))["text/plain"] == "sideEffect"


def test_trailing_semicolon_gives_no_result(engine: MathicsEngine, host: FakeHost) -> None:
    assert names(run(engine, host, "x = 1;")) == ["InputNamePacket"]


def test_multi_expression_cell(engine: MathicsEngine, host: FakeHost) -> None:
    packets = run(engine, host, "a = 2\nPrint[a]\n\na + 1")
    assert names(packets) == ["TextPacket", "OutputNamePacket", "ReturnPacket", "InputNamePacket"]
    assert packets[0].args[0] == "2" and result(packets) == {"text/plain": "3"}
    n = int(packets[1].args[0].removeprefix("Out[").removesuffix("]= "))
    assert packets[3] == packet("InputNamePacket", f"In[{n + 1}]:= ")  # one line per cell
    assert result(run(engine, host, "%"))["text/plain"] == "3"


def test_abort_builtin(engine: MathicsEngine, host: FakeHost) -> None:
    packets = run(engine, host, 'Abort[]\nPrint["not reached"]')
    assert names(packets) == ["ReturnPacket", "InputNamePacket"]
    assert result(packets) == ABORTED


def test_messages_come_back_after_an_abort_inside_plot(engine: MathicsEngine, host: FakeHost
                                                       ) -> None:
    """Mathics3's Plot silences messages while it samples and does not undo that when the
    sampling aborts (an Abort[], the iteration limit): every later message was lost."""
    assert result(run(engine, host, "Plot[If[x > 1, Abort[], x], {x, 0, 2}]")) == ABORTED
    packets = run(engine, host, "1/0")
    assert packet_name(packets[0]) == "MessagePacket", packets
    assert packets[0].args[:2] == ("Power", "infy")


# -- completion and inspection ---------------------------------------------------------------


def test_complete(engine: MathicsEngine, host: FakeHost) -> None:
    matches = engine.complete("Integ")
    assert {"Integrate", "IntegerQ"} <= set(matches)
    assert matches == sorted(matches) and all(m.startswith("Integ") for m in matches)
    run(engine, host, "myVariable = 1;")
    assert "myVariable" in engine.complete("myVar")
    assert engine.complete("NoSuchPrefixAtAll") == []


def test_inspect(engine: MathicsEngine, host: FakeHost) -> None:
    doc = engine.inspect("Sin")
    assert doc is not None and "sine" in doc["text/plain"]
    assert engine.inspect("NoSuchSymbolAtAll") is None
    assert engine.inspect("f[x]") is None
    run(engine, host, 'documented::usage = "documented does nothing";')
    assert engine.inspect("documented") == {"text/plain": "documented does nothing"}


# -- interrupts -------------------------------------------------------------------------------


def test_interrupt_keeps_definitions(engine: MathicsEngine, host: FakeHost) -> None:
    timer = threading.Timer(1.0, engine.interrupt)
    started = time.monotonic()
    timer.start()
    packets = run(engine, host, "x = 0; While[True, x++]")
    assert time.monotonic() - started < 3.0
    assert names(packets) == ["ReturnPacket", "InputNamePacket"]
    assert result(packets) == ABORTED
    assert result(run(engine, host, "x > 0")) == {"text/plain": "True"}


def test_interrupts_never_lose_an_assignment(engine: MathicsEngine, host: FakeHost) -> None:
    """An interrupt at any moment of ``x++`` leaves x with a value: Mathics3 replaces a value
    by deleting the old rule and then inserting the new, and an exception raised between the
    two (where SIGINT used to raise it) lost x in about one interrupt of twenty."""
    rng = random.Random(20261204)
    for attempt in range(60):
        run(engine, host, "x = 0;")
        timer = threading.Timer(rng.uniform(0.02, 0.12), engine.interrupt)
        timer.start()
        assert result(run(engine, host, "While[True, x++]")) == ABORTED
        timer.join()
        assert result(run(engine, host, "x > 0")) == {"text/plain": "True"}, attempt


def test_an_interrupt_is_an_abort_that_check_abort_catches(
    engine: MathicsEngine, host: FakeHost
) -> None:
    """As in Mathematica, CheckAbort absorbs an interactive abort and the cell goes on."""
    threading.Timer(0.3, engine.interrupt).start()
    code = 'CheckAbort[While[True, 1], caught]; {"after", 2 + 2}'
    assert result(run(engine, host, code)) == {"text/plain": "{after, 4}"}


def test_interrupt_inside_long_builtin(engine: MathicsEngine, host: FakeHost) -> None:
    threading.Timer(0.5, engine.interrupt).start()
    started = time.monotonic()
    assert result(run(engine, host, "Pause[30]")) == ABORTED
    assert time.monotonic() - started < 3.0


def test_interrupt_before_the_worker_starts_the_cell(
    engine: MathicsEngine, host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    send = engine._send

    def send_then_interrupt(message: list[Any]) -> None:
        send(message)
        if message[0] == "eval":  # the worker has not reported "started" yet (as a rule)
            engine.interrupt()

    monkeypatch.setattr(engine, "_send", send_then_interrupt)
    started = time.monotonic()
    assert result(run(engine, host, "Pause[10]")) == ABORTED
    assert time.monotonic() - started < 3.0


def test_interrupt_when_idle_or_late_spares_the_next_cell(
    engine: MathicsEngine, host: FakeHost
) -> None:
    engine.interrupt()
    assert result(run(engine, host, "1+1")) == {"text/plain": "2"}
    for delay in (0.0, 0.05, 0.1, 0.15, 0.2, 0.25):
        timer = threading.Timer(delay, engine.interrupt)
        timer.start()
        run(engine, host, "Pause[0.1]; 1")  # aborted or not: either is fine
        timer.join()
        engine.interrupt()  # after the end: must be a no-op
        assert result(run(engine, host, "Pause[0.3]; 3")) == {"text/plain": "3"}


# -- Input[] / InputString[] ------------------------------------------------------------------


def test_input_string(engine: MathicsEngine, host: FakeHost) -> None:
    host.answers.put("hello world")
    assert result(run(engine, host, 'InputString["name? "]')) == {"text/plain": "hello world"}
    assert host.prompts[-1] == packet("InputStringPacket", "name? ")


def test_input_evaluates(engine: MathicsEngine, host: FakeHost) -> None:
    host.answers.put("6*7")
    assert result(run(engine, host, "Input[] + 1")) == {"text/plain": "43"}
    assert packet_name(host.prompts[-1]) == "InputPacket"


def test_the_agents_no_op_frames_are_ignored_also_during_input(
        engine: MathicsEngine, host: FakeHost) -> None:
    """``["nop"]`` (the prod a Slurm engine sends while a request runs, ``engine._prod``)
    changes nothing: not between requests, not while Input[] waits for its answer."""
    engine._send(["nop"])
    assert result(run(engine, host, "1 + 2")) == {"text/plain": "3"}

    class Prodding(queue.Queue):  # the answer comes after a no-op frame, as with Slurm
        def get(self, *args: Any, **kwargs: Any) -> Any:
            engine._send(["nop"])
            return super().get(*args, **kwargs)

    answers, host.answers = host.answers, Prodding()
    try:
        host.answers.put("6*7")
        assert result(run(engine, host, "Input[] + 1")) == {"text/plain": "43"}
    finally:
        host.answers = answers
    time.sleep(0.3)  # its stderr is read by a thread of its own
    assert "ignored" not in engine._tail()


def test_input_aborted_by_host(engine: MathicsEngine, host: FakeHost) -> None:
    host.answers.put(None)
    assert result(run(engine, host, 'y = InputString[]; Print["not reached"]')) == ABORTED
    assert result(run(engine, host, "1+1")) == {"text/plain": "2"}


def test_interrupt_while_waiting_for_input(engine: MathicsEngine, host: FakeHost) -> None:
    def interrupt() -> None:  # what the agent's session does on RKInterrupt
        engine.interrupt()
        host.answers.put(None)

    threading.Timer(0.5, interrupt).start()
    assert result(run(engine, host, "Input[]")) == ABORTED
    assert result(run(engine, host, "2+2")) == {"text/plain": "4"}


# -- failures and cleanup --------------------------------------------------------------------


def test_missing_mathics_is_explained(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")],
                   check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    started = time.monotonic()
    with pytest.raises(EngineError) as info:
        MathicsEngine(FakeHost(), {"python": python}).start(START_TIMEOUT)
    assert time.monotonic() - started < 10
    text = str(info.value)
    assert "Mathics3 is not installed" in text and python in text
    assert f"{python} -m pip install Mathics3" in text



def _externally_managed_python_without_mathics() -> str | None:
    """The distribution's python3 when pip refuses it (PEP 668) and it lacks Mathics3."""
    python = "/usr/bin/python3"
    if not os.path.exists(python):
        return None
    probe = ("import importlib.util, os, sys, sysconfig; sys.exit(0 if sys.prefix == "
             "sys.base_prefix and os.path.isfile(os.path.join(sysconfig.get_path('stdlib'), "
             "'EXTERNALLY-MANAGED')) and not importlib.util.find_spec('mathics') else 1)")
    res = subprocess.run([python, "-c", probe], capture_output=True, timeout=30, check=False)
    return python if res.returncode == 0 else None


def test_missing_mathics_on_an_externally_managed_python_advises_a_venv() -> None:
    """Debian 12 / Ubuntu 24.04 refuse ``python3 -m pip install`` (PEP 668): the start error
    gives the command that works there, a virtual environment, not the refused one."""
    python = _externally_managed_python_without_mathics()
    if python is None:
        pytest.skip("no externally managed /usr/bin/python3 without Mathics3 here")
    with pytest.raises(EngineError) as info:
        MathicsEngine(FakeHost(), {"python": python}).start(START_TIMEOUT)
    text = str(info.value)
    assert "Mathics3 is not installed" in text and "externally-managed-environment" in text
    assert "python3 -m venv ~/rk-venv && ~/rk-venv/bin/pip install Mathics3" in text
    assert "--remote-python" in text
    assert f"{python} -m pip install Mathics3" not in text


def test_unusable_python_is_explained(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="cannot run the Python interpreter"):
        MathicsEngine(FakeHost(), {"python": str(tmp_path / "nope")}).start(10)
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\necho 'something is wrong here' >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(EngineError) as info:
        MathicsEngine(FakeHost(), {"python": str(broken)}).start(10)
    assert "exited with code 3" in str(info.value)
    assert "something is wrong here" in str(info.value)


def test_worker_killed_mid_evaluation() -> None:
    eng, host = fresh_engine()
    try:
        pid = eng._proc.pid  # type: ignore[union-attr]
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        with pytest.raises(EngineError, match="killed by signal SIGKILL"):
            eng.evaluate("While[True, 1]")
        assert not eng.alive()
        with pytest.raises(EngineError):
            eng.evaluate("1+1")
    finally:
        eng.close()
    assert gone(pid)


def test_quit_ends_the_engine() -> None:
    eng, host = fresh_engine()
    try:
        with pytest.raises(EngineError, match="Quit"):
            eng.evaluate("Quit[]")
    finally:
        eng.close()


def test_close_during_evaluation_leaves_no_process() -> None:
    eng, host = fresh_engine()
    pid = eng._proc.pid  # type: ignore[union-attr]
    errors: list[Exception] = []

    def evaluate() -> None:
        try:
            eng.evaluate("While[True, 1]")
        except EngineError as exc:
            errors.append(exc)

    thread = threading.Thread(target=evaluate)
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    eng.close()
    assert time.monotonic() - started < 4.0
    thread.join(timeout=5)
    assert not thread.is_alive() and "closed" in str(errors[0])
    assert gone(pid) and not eng.alive()
    eng.close()  # idempotent
    eng.interrupt()  # harmless after close


# Modules a Python child could take from its working directory instead of the real ones.
PLANTED = ("json", "secrets", "base64", "decimal", "traceback", "mathics")
PLANT = "import os\nopen(os.path.join(os.path.dirname(__file__), 'imported-' + __name__), 'w')\n"


def _python310() -> str | None:
    """A Python 3.10 interpreter that runs (a pyenv shim may not), if this host has one."""
    candidates = [shutil.which("python3.10"),
                  *map(str, Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))]
    for candidate in filter(None, candidates):
        try:
            said = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                  capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if said.strip() == "(3, 10)":
            return candidate
    return None


def _python_versions() -> list[Any]:
    """The agent's interpreter (started with -P), the same under another name (the bootstrap
    alone, as for a python option), and Python 3.10 (no -P at all) when this host has one."""
    same = os.path.join(os.path.dirname(sys.executable), ".", os.path.basename(sys.executable))
    old = _python310()
    return [pytest.param(sys.executable, id="agent-python"),
            pytest.param(same, id="python-option"),
            pytest.param(old, id="python3.10", marks=pytest.mark.skipif(
                old is None, reason="no python3.10 on this host"))]


@pytest.mark.parametrize("python", _python_versions())
def test_worker_imports_nothing_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python: str
) -> None:
    """A json.py or secrets.py planted in the directory the agent runs in must not run as the
    user in the worker (issue 21): the worker starts with the working directory off sys.path."""
    for name in PLANTED:
        (tmp_path / f"{name}.py").write_text(PLANT)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    monkeypatch.chdir(tmp_path)  # the agent's working directory, which the worker inherits
    eng = MathicsEngine(FakeHost(), {"python": python})
    error: EngineError | None = None
    try:
        try:
            eng.start(START_TIMEOUT)
        except EngineError as exc:
            error = exc
        else:
            assert os.readlink(f"/proc/{eng._proc.pid}/cwd") == str(tmp_path)  # type: ignore
            eng.evaluate("1/3 + x")
            eng.evaluate_expression("N[Pi, 30]")
    finally:
        eng.close()
    assert sorted(p.name for p in tmp_path.glob("imported-*")) == []
    # An interpreter without Mathics3 gets as far as saying so, through the worker's pipe.
    assert error is None or "Mathics3 is not installed" in str(error), error


ORPHAN_AGENT = """
import sys, time
from rk_jupyter.agent.engines.mathics import MathicsEngine
class Host:
    def emit(self, pkt): pass
    def read_input(self, prompt): return ""
engine = MathicsEngine(Host(), {})
engine.start(120)
print(engine._proc.pid, flush=True)
engine.evaluate("While[True, 1]")
"""


def test_worker_ends_when_the_agent_dies() -> None:
    agent = subprocess.Popen([sys.executable, "-c", ORPHAN_AGENT], stdout=subprocess.PIPE,
                             cwd=Path(__file__).resolve().parent.parent, text=True)
    try:
        pid = int(agent.stdout.readline())  # type: ignore[union-attr]
        agent.kill()
        agent.wait()
        deadline = time.monotonic() + 5
        while not ended(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ended(pid)
    finally:
        agent.kill()
        agent.wait()


def test_worker_collects_young_garbage_less_often() -> None:
    """``tune_collector`` (called as the worker starts serving) raises only the youngest
    generation's threshold."""
    from rk_jupyter.agent.engines.mathics import worker

    saved = gc.get_threshold()
    try:
        worker.tune_collector()
        assert gc.get_threshold() == (worker.GC_YOUNG_THRESHOLD, *saved[1:])
        assert worker.GC_YOUNG_THRESHOLD > saved[0]
    finally:
        gc.set_threshold(*saved)
