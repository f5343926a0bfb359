"""Warm Mathics3 engines (issue 14 part 1): workers forked from a template (``forkserver``).

Real Mathics3 throughout: the test process plays the agent for ``MathicsEngine`` (its
templates live here), and a real agent process is killed to show that its template and the
engines forked from it follow it.  Timings are the benchmark's (benchmarks/bench_start.py);
here only what must hold: forked engines are independent processes that behave as cold ones.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from typing import Any

import pytest

from rk_jupyter.agent.engines.mathics import MathicsEngine
from rk_jupyter.agent.engines.mathics.forkserver import TEMPLATES, Forked
from rk_jupyter.agent.engines.mathics.template import WORKER_TITLE
from rk_jupyter.client import AgentClient, Collected, Endpoint, run
from rk_jupyter.link.packets import ABORTED

from kernel_helpers import WORKER, children_of, cmdline, engines_of, local_agent, wait_gone
from test_engine_mathics import START_TIMEOUT, FakeHost, gone, names, result
from test_engine_mathics import run as evaluate

TOKEN = b"warm-token-0123456789abcdefgh"


def forked_engine(options: dict[str, Any] | None = None) -> tuple[MathicsEngine, FakeHost]:
    host = FakeHost()
    engine = MathicsEngine(host, options or {})
    engine.start(START_TIMEOUT)
    assert isinstance(engine._proc, Forked), "a worker forked from the template"
    return engine, host


def value(engine: MathicsEngine, host: FakeHost, code: str) -> str:
    return result(evaluate(engine, host, code))["text/plain"]


def template_pid() -> int:
    """The template of this interpreter (other tests may have made more, for other ones)."""
    template = TEMPLATES._templates[sys.executable].proc
    assert template is not None and "mathics.template" in cmdline(template.pid)
    return template.pid


@pytest.fixture
def pair():
    engines = [forked_engine() for _ in range(2)]
    yield engines
    for engine, _ in engines:
        engine.close()


def test_forked_engines_are_independent_processes(pair) -> None:
    (a, ha), (b, hb) = pair
    assert value(a, ha, "x = 1; Names[\"Global`*\"]") == "{x}"
    assert value(b, hb, "Names[\"Global`*\"]") == "{}", "a definition stays in its engine"
    assert value(b, hb, "x") == "x"
    assert int(value(a, ha, "$ProcessID")) == a._proc.pid
    assert int(value(b, hb, "$ProcessID")) == b._proc.pid != a._proc.pid
    draws = {value(e, h, "RandomReal[{0, 1}, 3]") for e, h in pair}
    assert len(draws) == 2, "each fork draws its own random numbers"
    assert value(a, ha, "SessionTime[] < 2") == "True", "each fork's session starts at its fork"
    for engine, _ in pair:  # as a cold worker: its own session and process group, and named so
        pid = engine._proc.pid
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid
        assert cmdline(pid) == WORKER_TITLE and re.search(WORKER, cmdline(pid))
        assert os.readlink(f"/proc/{pid}/cwd") == os.getcwd()


def test_the_template_never_evaluates_what_an_engine_did(pair) -> None:
    (a, ha), _ = pair
    evaluate(a, ha, "$Pre = (Print[\"pre\"]; #) &; f[x_] := x^2; $Line = 40;")
    fresh, host = forked_engine()
    try:
        assert value(fresh, host, "{Names[\"Global`*\"], $Line, Head[$Pre]}") == \
            "{{}, 1, Symbol}"
        assert "TextPacket" not in names([p for _, p in host.log]), "no $Pre ran"
    finally:
        fresh.close()


def test_an_interrupt_of_one_fork_leaves_the_other_running(pair) -> None:
    (a, ha), (b, hb) = pair
    evaluate(a, ha, "kept = 7;")
    evaluate(b, hb, "n = 0;")
    running = threading.Thread(target=evaluate, args=(b, hb, "Do[n++; Pause[0.05], {100}]"))
    running.start()
    time.sleep(0.5)
    packets = []
    slow = threading.Thread(target=lambda: packets.extend(
        evaluate(a, ha, "Do[Pause[0.1], {1000}]")))
    slow.start()
    time.sleep(1.0)
    a.interrupt()
    slow.join(10)
    assert not slow.is_alive() and result(packets) == ABORTED
    running.join(30)
    assert value(b, hb, "n") == "100", "the other fork ran to its end, uninterrupted"
    assert value(a, ha, "kept") == "7", "the interrupted fork keeps its definitions"


def test_memory_limit_is_each_forks_own() -> None:
    limited, host = forked_engine({"memory_limit": 3 << 30})
    free, _ = forked_engine()
    try:
        def address_space(pid: int) -> str:
            with open(f"/proc/{pid}/limits") as f:
                return next(line.split()[4] for line in f if line.startswith("Max address"))
        assert address_space(limited._proc.pid) == str(3 << 30)
        assert address_space(free._proc.pid) == "unlimited"
        assert "nomem" in str(evaluate(limited, host, "Length[Range[10^9]]"))
    finally:
        limited.close()
        free.close()


def test_close_reaps_the_fork_and_quit_says_so() -> None:
    engine, host = forked_engine()
    pid = engine._proc.pid
    engine.close()
    assert gone(pid), "ended and reaped by the template, not a zombie"
    engine, host = forked_engine()
    try:
        with pytest.raises(Exception, match="Quit"):
            engine.evaluate("Quit[]")
        assert not engine.alive()
    finally:
        engine.close()


def test_a_killed_template_leaves_its_engines_and_is_started_again() -> None:
    engine, host = forked_engine()
    try:
        evaluate(engine, host, "y = 3;")
        old = template_pid()
        os.kill(old, signal.SIGKILL)
        time.sleep(0.5)
        assert value(engine, host, "y + 1") == "4", "the engine does not depend on its template"
        assert engine.alive()
        later = MathicsEngine(FakeHost(), {})
        later.start(START_TIMEOUT)  # the dead template is noticed: cold, and a new template
        later.close()
        new, _ = forked_engine()  # the engine after that is forked again
        try:
            assert template_pid() != old
        finally:
            new.close()
    finally:
        engine.close()
    assert engine._proc.returncode is not None


def test_template_and_forks_end_with_a_killed_agent() -> None:
    """The template and its workers watch the agent (a pidfd), not their parent."""
    with local_agent(TOKEN, "--warm", "mathics") as (port, agent):
        client = AgentClient(Endpoint("127.0.0.1", port, TOKEN, session="warm-a"))
        client.open(timeout=60)
        out = Collected()
        run(client, "$ProcessID", out, timeout=30)
        engines = engines_of(agent)
        assert [int(out.text)] == engines, "the session's engine is a fork under the template"
        everything = children_of(agent)
        assert len(everything) == 2  # the template and its fork
        os.kill(agent, signal.SIGKILL)
        assert wait_gone(everything, timeout=10) == []


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
