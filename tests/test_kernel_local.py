"""The kernel on the embedded default (rk-local), driven through jupyter_client as JupyterLab
drives it: real agent process, real link, real Mathics3 engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from jupyter_client.manager import KernelManager, start_new_kernel

from rk_jupyter import kernelspec
from rk_jupyter.provisioning.transports import TransportError

from kernel_helpers import (
    children_of,
    collect,
    execute,
    interrupt_endless_loop,
    shell_reply,
    wait_gone,
)


@pytest.fixture(scope="module")
def kernel(rk_local: str):
    km, kc = start_new_kernel(kernel_name=rk_local, startup_timeout=90)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def test_result_and_execution_count_follow_the_engine_line(kernel) -> None:
    _, kc = kernel
    first = execute(kc, "1 + 1")
    assert first.reply["status"] == "ok"
    [result] = first.results()
    assert result["data"]["text/plain"] == "2"
    second = execute(kc, "%^2")
    assert second.results()[0]["data"]["text/plain"] == "4"
    assert second.reply["execution_count"] == first.reply["execution_count"] + 1
    assert second.results()[0]["execution_count"] == second.reply["execution_count"]


def test_print_arrives_before_the_result(kernel) -> None:
    _, kc = kernel
    run = execute(kc, 'Print["early"]; Pause[1.5]; 42')
    stream = run.first("stream")
    result = run.first("execute_result")
    assert stream["content"] == {"name": "stdout", "text": "early\n"}
    assert result["received"] - stream["received"] > 1.0
    assert result["content"]["data"]["text/plain"] == "42"


def test_messages_go_to_stderr(kernel) -> None:
    _, kc = kernel
    run = execute(kc, "1/0")
    assert "Power::infy" in run.streams("stderr")
    assert "Infinite expression" in run.streams("stderr")
    assert run.results()[0]["data"]["text/plain"] == "ComplexInfinity"


def test_math_comes_with_tex_and_plots_with_svg(kernel) -> None:
    _, kc = kernel
    tex = execute(kc, "Integrate[x^2, x]").results()[0]["data"]
    assert "x^3" in tex["text/latex"]
    svg = execute(kc, "Plot[Sin[x], {x, 0, 6}]", timeout=120).results()[0]["data"]
    assert "<svg" in svg["image/svg+xml"]


def test_syntax_error_is_an_error_reply(kernel) -> None:
    _, kc = kernel
    run = execute(kc, "f[1,,")
    assert run.reply["status"] == "error"
    assert run.reply["ename"] == "SyntaxError"
    assert "Syntax" in run.streams("stderr")


def test_trailing_semicolon_gives_no_result(kernel) -> None:
    _, kc = kernel
    run = execute(kc, "y = 5;")
    assert run.reply["status"] == "ok" and run.results() == []
    assert execute(kc, "y + 1").results()[0]["data"]["text/plain"] == "6"


def test_completion_inspection_and_is_complete(kernel) -> None:
    _, kc = kernel
    reply = kc.complete("Integ", 5, reply=True, timeout=30)["content"]
    assert "Integrate" in reply["matches"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (0, 5)
    reply = kc.inspect("Sin[x]", 2, reply=True, timeout=30)["content"]
    assert reply["found"] and "sine" in reply["data"]["text/plain"].lower()
    for code, status in (("f[", "incomplete"), ("f[x]", "complete"), ("f[x]]", "invalid"),
                         ('"abc', "incomplete"), ("(* open", "incomplete")):
        assert shell_reply(kc, kc.is_complete(code))["content"]["status"] == status, code


def test_input_asks_the_front_end(kernel) -> None:
    _, kc = kernel
    msg_id = kc.execute('InputString["name? "] <> "!"', allow_stdin=True)
    request = kc.get_stdin_msg(timeout=30)
    assert request["msg_type"] == "input_request"
    assert request["content"]["prompt"].startswith("name?")
    kc.input("Ada")
    run = collect(kc, msg_id)
    assert run.results()[0]["data"]["text/plain"] == "Ada!"


def test_status_magic_figures_change_after_traffic(kernel) -> None:
    _, kc = kernel
    before = execute(kc, "%rkernel status").displays()[0]["data"]
    execute(kc, "Range[2000]")
    after = execute(kc, "%rkernel status").displays()[0]["data"]
    for label in ("transport", "endpoint", "engine", "state", "uptime", "rtt", "sent",
                  "received", "compression"):
        assert label in before["text/plain"]
    assert "<table" in before["text/html"] and "Mathics3" in before["text/plain"]

    def received_bytes(text: str) -> str:
        return next(line for line in text.splitlines() if line.startswith("received"))

    assert received_bytes(before["text/plain"]) != received_bytes(after["text/plain"])
    ping = execute(kc, "%rkernel ping")
    assert "ms" in ping.displays()[0]["data"]["text/plain"]
    following = execute(kc, "$Line")  # magic cells take an In[n] too: the counts agree
    assert following.reply["execution_count"] == ping.reply["execution_count"] + 1
    assert following.results()[0]["data"]["text/plain"] == str(following.reply["execution_count"])
    bad = execute(kc, "%rkernel frobnicate")
    assert bad.reply["status"] == "error" and "usage" in bad.reply["evalue"]




@pytest.mark.parametrize("how", ["message", "signal"])
def test_interrupt_aborts_and_keeps_definitions(kernel, how: str) -> None:
    km, kc = kernel
    interrupt_endless_loop(km, kc, how)


def _agent_and_engine(km: KernelManager) -> list[int]:
    agent = km.provisioner.transport.process.pid
    pids = [agent, *children_of(agent)]
    assert len(pids) >= 2, "expected the agent and its engine worker"
    return pids


def test_shutdown_leaves_no_agent_or_engine(rk_local: str) -> None:
    km, kc = start_new_kernel(kernel_name=rk_local, startup_timeout=90)
    assert execute(kc, "1").reply["status"] == "ok"
    pids = _agent_and_engine(km)
    kc.stop_channels()
    km.shutdown_kernel(now=False)
    assert wait_gone(pids) == []


def test_kill_leaves_no_agent_or_engine(rk_local: str) -> None:
    km, kc = start_new_kernel(kernel_name=rk_local, startup_timeout=90)
    pids = _agent_and_engine(km)
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    assert wait_gone(pids) == []


def test_restart_gives_a_fresh_engine(rk_local: str) -> None:
    km, kc = start_new_kernel(kernel_name=rk_local, startup_timeout=90)
    try:
        execute(kc, "z = 7;")
        old = _agent_and_engine(km)
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=90)
        assert wait_gone(old) == []
        assert execute(kc, "z").results()[0]["data"]["text/plain"] == "z"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_agent_death_is_seen_by_the_manager(rk_local: str) -> None:
    km, kc = start_new_kernel(kernel_name=rk_local, startup_timeout=90)
    try:
        agent = km.provisioner.transport.process
        agent.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not km.is_alive()
    finally:
        kc.stop_channels()
        threading.Thread(target=km.shutdown_kernel, kwargs={"now": True}).start()


def test_engine_failure_is_a_start_error_from_the_provisioner(jupyter_env: str, tmp_path) -> None:
    """JupyterLab shows what start_kernel raises in its "Error Starting Kernel" dialog."""
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    kernelspec.install("nomathics", "Wolfram Language (no Mathics3)", {
        "transport": "local", "engine": "mathics",
        "engine_options": {"python": str(venv / "bin" / "python")},
    }, prefix=jupyter_env)
    km = KernelManager(kernel_name="rk-nomathics")
    start = time.monotonic()
    with pytest.raises(TransportError) as failure:
        km.start_kernel()
    assert time.monotonic() - start < 30
    message = str(failure.value)
    assert "Mathics3 is not installed" in " ".join(message.split())
    fix = f"    {venv / 'bin' / 'python'} -m pip install Mathics3"
    assert fix in message.splitlines(), "the fix is a whole line, ready to copy"
    assert not km.has_kernel


def test_killed_kernel_process_ends_its_engine_after_the_grace(jupyter_env: str) -> None:
    """kill -9 of the kernel looks like a network drop to the agent: the engine waits the
    reconnect grace for its kernel, then ends (the manager's own kill ends it at once)."""
    kernelspec.install("shortgrace", "Wolfram Language (short grace)", {
        "transport": "local", "engine": "mathics", "reconnect_grace": 4.0,
    }, prefix=jupyter_env)
    km, kc = start_new_kernel(kernel_name="rk-shortgrace", startup_timeout=90)
    try:
        agent = km.provisioner.transport.process.pid
        engine = children_of(agent)
        assert engine
        os.kill(km.provisioner.pid, signal.SIGKILL)
        time.sleep(2)
        assert all(os.path.exists(f"/proc/{p}") for p in engine), "kept during the grace"
        assert wait_gone(engine, timeout=15) == []
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


NUMBER_CELLS = ["Plot[Sin[3 x] + Cos[x]/2, {x, 0, 10}]", "ListLinePlot[Table[Cos[i/7], {i, 60}]]",
                "N[Pi, 40]", "Table[N[Sin[i/10]] - 0.5, {i, 40}]", "{-0., 0.5, -1.25, 10.^20}"]


def test_numbers_arrive_exactly_as_without_compression(kernel, jupyter_env: str) -> None:
    """Plots and tables of reals go through the MEDIUM context's delta filter on the default
    link; a kernel whose link compresses nothing is the oracle: every bundle must be equal."""
    from rk_jupyter.cli import main

    assert main(["add", "plain", "--local", "--engine", "mathics", "--compression", "none",
                 "--prefix", jupyter_env]) == 0
    _, kc = kernel
    km_plain, kc_plain = start_new_kernel(kernel_name="rk-plain", startup_timeout=90)
    try:
        for code in NUMBER_CELLS:
            filtered = execute(kc, code, timeout=120).results()[0]["data"]
            plain = execute(kc_plain, code, timeout=120).results()[0]["data"]
            assert filtered == plain, code
            if "Plot" in code:
                assert filtered["image/svg+xml"].count(".") > 200, filtered
        status = execute(kc, "%rkernel status").displays()[0]["data"]["text/plain"]
        assert "compression  brotli, wire/raw = " in status, status
    finally:
        kc_plain.stop_channels()
        km_plain.shutdown_kernel(now=False)


def test_brotli_max_kernel_plots_and_says_so(jupyter_env: str) -> None:
    """A kernelspec made with ``--compression brotli-max`` (slow networks) works end to end:
    the plot's SVG arrives whole and ``%rkernel status`` names the codec."""
    from rk_jupyter.cli import main

    assert main(["add", "dense", "--local", "--engine", "mathics", "--compression",
                 "brotli-max", "--prefix", jupyter_env]) == 0
    km, kc = start_new_kernel(kernel_name="rk-dense", startup_timeout=90)
    try:
        plot = execute(kc, "Plot[Sin[x], {x, 0, 2 Pi}]").results()[0]["data"]
        assert plot["image/svg+xml"].rstrip().endswith("</svg>")
        status = execute(kc, "%rkernel status").displays()[0]["data"]["text/plain"]
        assert "compression  brotli-max, wire/raw = " in status, status
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
