"""``%load_ext rk_jupyter`` in a real IPython kernel (kernelspec python3, started through
jupyter_client as JupyterLab would), driving the rk-local engine in-process."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest
from jupyter_client.manager import start_new_kernel

from kernel_helpers import Execution, children_of, collect, engines_of, execute, wait_gone

pytest.importorskip("mathics", reason="Mathics3 is not installed")


def start_ipython():
    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
    assert execute(kc, "%load_ext rk_jupyter").reply["status"] == "ok"
    return km, kc


def ok(run: Execution) -> Execution:
    assert run.reply["status"] == "ok", run.reply
    return run


def error(run: Execution) -> str:
    """The error's text, checked to be an RKernelError shown without a Python traceback."""
    assert run.reply["status"] == "error"
    assert run.reply["ename"] == "RKernelError"
    assert run.reply["traceback"] == [f"RKernelError: {run.reply['evalue']}"]
    return run.reply["evalue"]


def data(run: Execution) -> dict[str, str]:
    [display] = ok(run).displays()
    return display["data"]


@pytest.fixture(scope="module")
def ipython(rk_local: str):
    km, kc = start_ipython()
    connect = execute(kc, "%rkernel connect local", timeout=120)
    assert "connected to rk-local: Mathics3" in ok(connect).streams("stdout")
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def test_result_is_displayed(ipython) -> None:
    _, kc = ipython
    assert data(execute(kc, "%%rkernel\n1 + 1")) == {"text/plain": "2"}


def test_print_streams_before_the_result(ipython) -> None:
    _, kc = ipython
    run = execute(kc, '%%rkernel\nPrint["early"]; Pause[1.5]; 42')
    stream = run.first("stream")
    shown = run.first("display_data")
    assert stream["content"] == {"name": "stdout", "text": "early\n"}
    assert shown["received"] - stream["received"] > 1.0
    assert shown["content"]["data"]["text/plain"] == "42"


def test_messages_go_to_stderr(ipython) -> None:
    _, kc = ipython
    run = ok(execute(kc, "%%rkernel\n1/0"))
    assert "Power::infy: Infinite expression" in run.streams("stderr")


def test_math_comes_with_tex_and_plots_with_svg(ipython) -> None:
    _, kc = ipython
    assert "x^3" in data(execute(kc, "%%rkernel\nIntegrate[x^2, x]"))["text/latex"]
    plot = data(execute(kc, "%%rkernel\nPlot[Sin[x], {x, 0, 6}]", timeout=120))
    assert "<svg" in plot["image/svg+xml"]


def test_output_variable_holds_python_values(ipython) -> None:
    _, kc = ipython
    cells = {
        "r": "Range[5]",
        "d": '<|"a" -> 1, "b" -> {2.5, "s"}|>',
        "s": 'StringJoin["Wolfram", " ", "Language"]',
        "v": "N[Range[3]]",
        "m": "Table[i + j, {i, 2}, {j, 3}] // N",
        "big": "2^100",
        "sym": "{Pi, x, True}",
    }
    for name, code in cells.items():
        run = ok(execute(kc, f"%%rkernel -o {name}\n{code}"))
        assert not run.outputs, run.outputs  # stored, not displayed
    check = """
import numpy
from rk_jupyter.link.expr import Symbol
assert r == [1, 2, 3, 4, 5] and type(r) is list
assert d == {"a": 1, "b": [2.5, "s"]}
assert s == "Wolfram Language"
assert isinstance(v, numpy.ndarray) and v.dtype == numpy.float64 and v.tolist() == [1, 2, 3]
assert m.shape == (2, 3) and m[1, 2] == 5.0
assert big == 2**100
assert sym == [Symbol("Pi"), Symbol("Global`x"), True]
"""
    ok(execute(kc, check))


def test_output_variable_still_streams_print(ipython) -> None:
    _, kc = ipython
    run = ok(execute(kc, '%%rkernel -o t\nPrint["side effect"]; 7'))
    assert run.streams("stdout") == "side effect\n" and not run.displays()
    ok(execute(kc, "assert t == 7"))


def test_input_asks_the_front_end(ipython) -> None:
    _, kc = ipython
    msg_id = kc.execute('%%rkernel\nInputString["name? "] <> "!"', allow_stdin=True)
    request = kc.get_stdin_msg(timeout=30)
    assert request["content"]["prompt"] == "name? "
    kc.input("Ada")
    assert data(collect(kc, msg_id)) == {"text/plain": "Ada!"}


def test_syntax_error_is_an_error(ipython) -> None:
    _, kc = ipython
    assert "Syntax::sntxi" in error(execute(kc, "%%rkernel\n1 +"))
    assert "Syntax::sntxi" in error(execute(kc, "%%rkernel -o nothing\n1 +"))
    ok(execute(kc, "assert 'nothing' not in globals()"))


def test_interrupt_stops_the_engine_and_keeps_it_usable(ipython) -> None:
    km, kc = ipython
    ok(execute(kc, "%%rkernel\nx = 0;"))
    timer = threading.Timer(2.0, km.interrupt_kernel)
    timer.start()
    started = time.monotonic()
    run = execute(kc, "%%rkernel\nWhile[True, x++]")
    timer.join()
    assert "$Aborted" in error(run)
    assert time.monotonic() - started < 15
    assert data(execute(kc, "%%rkernel\nx > 0")) == {"text/plain": "True"}


def test_status_is_a_table(ipython) -> None:
    _, kc = ipython
    status = data(execute(kc, "%rkernel status"))
    assert "<table" in status["text/html"]
    text = status["text/plain"]
    assert "rk-local" in text and "connected" in text and "Mathics3" in text


def test_unknown_kernelspec_lists_the_available_ones(ipython) -> None:
    _, kc = ipython
    text = error(execute(kc, "%rkernel connect no-such-spec"))
    assert "no-such-spec" in text and "rk-local" in text


def test_host_options_reach_the_transport(ipython) -> None:
    _, kc = ipython
    text = error(execute(kc, "%rkernel connect --host nobody@no-such-host.invalid "
                             "--connect-timeout 5", timeout=60))
    assert "no-such-host.invalid" in text
    usage = execute(kc, "%rkernel connect local --no-such-option 1")
    assert usage.reply["ename"] == "UsageError" and "--no-such-option" in usage.reply["evalue"]
    ok(execute(kc, "%%rkernel\n1"))  # a failed connect leaves the connection alone


def test_disconnect_ends_the_agent(ipython) -> None:
    km, kc = ipython
    agents = children_of(km.provisioner.pid)
    assert agents
    assert "disconnected from rk-local" in ok(execute(kc, "%rkernel disconnect")).streams("stdout")
    assert wait_gone(agents) == []
    assert "not connected" in error(execute(kc, "%%rkernel\n1"))


def test_a_dead_agent_ends_the_cell_with_the_reason(ipython) -> None:
    km, kc = ipython
    connect = ok(execute(kc, "%rkernel connect local", timeout=120)).streams("stdout")
    agent = int(re.search(r"local agent pid (\d+)", connect).group(1))
    engine = engines_of(agent)
    timer = threading.Timer(2.0, os.kill, (agent, signal.SIGKILL))
    timer.start()
    started = time.monotonic()
    text = error(execute(kc, "%%rkernel\nPause[60]"))
    timer.join()
    assert time.monotonic() - started < 15
    assert "%rkernel connect again" in text
    assert "not connected" in data(execute(kc, "%rkernel status"))["text/plain"]
    assert engine and wait_gone(engine) == []  # the Mathics3 worker follows its agent


def test_interpreter_exit_ends_the_agent(rk_local: str) -> None:
    km, kc = start_ipython()
    try:
        ok(execute(kc, "%rkernel connect rk-local", timeout=120))
        agents = children_of(km.provisioner.pid)
        assert agents
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    assert wait_gone(agents) == []


# -- %rkernel connect's options, without a kernel ---------------------------------------------


def test_connect_options_override_the_kernelspec(rk_local: str) -> None:
    from rk_jupyter.magics.target import connect_config

    label, config = connect_config(["rk-local", "--compression", "zlib", "--kernel-path=/k",
                                    "--agent-start-timeout", "5"])
    assert label == "rk-local" and config["transport"] == "local"
    assert config["compression"] == "zlib" and config["agent_start_timeout"] == 5.0
    assert config["engine_options"]["kernel_path"] == "/k"


def test_host_means_the_ssh_transport(rk_local: str) -> None:
    from rk_jupyter.magics.target import connect_config, transport_settings

    label, config = connect_config(["--host", "me@example.org:2222", "--identity", "/id"])
    assert label == "ssh me@example.org:2222"
    settings = transport_settings(config)
    assert settings.transport == "ssh" and settings.host == "example.org"
    assert (settings.user, settings.port, settings.identity_file) == ("me", 2222, "/id")


@pytest.mark.parametrize("args", [[], ["a", "b"], ["--port", "x", "local"], ["local", "--port"],
                                  ["--host", "a@b@c"]])
def test_bad_connect_usage(rk_local: str, args: list[str]) -> None:
    from IPython.core.error import UsageError

    from rk_jupyter.magics.target import connect_config

    with pytest.raises(UsageError):
        connect_config(args)


def test_the_magics_do_not_import_the_kernel_package() -> None:
    """The magics are a front end beside the kernel, not above it: both use the client layer."""
    import json
    import subprocess
    import sys

    probe = "import json, sys, rk_jupyter.magics.magics; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = json.loads(done.stdout)
    assert "rk_jupyter.client.status" in loaded
    assert [m for m in loaded if m == "rk_jupyter.kernel" or m.startswith("rk_jupyter.kernel.")
            ] == []
