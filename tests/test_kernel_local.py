"""The kernel on the embedded default (rk-local), driven through jupyter_client as JupyterLab
drives it: real agent process, real link, real Mathics3 engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager, start_new_kernel
from jupyter_core.paths import jupyter_runtime_dir

from rk_jupyter import kernelspec
from rk_jupyter.client import Endpoint
from rk_jupyter.client.environment import KernelEnvironment
from rk_jupyter.kernel import magics
from rk_jupyter.provisioning.settings import LaunchSettings
from rk_jupyter.provisioning.transports import TransportError

from kernel_helpers import (
    children_of,
    collect,
    engines_of,
    execute,
    interrupt_endless_loop,
    pid_alive,
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


def test_kernel_info_offers_no_debugger_and_no_subshells(kernel) -> None:
    """JupyterLab offers its debugger to a kernel whose kernel_info claims one; this kernel has
    none (ipykernel claimed it because debugpy is installed).  Nor does it serve subshells
    (``kernel.app``: one request at a time, on the main thread), so it claims none."""
    _, kc = kernel
    info = shell_reply(kc, kc.kernel_info())["content"]
    assert info["status"] == "ok"
    assert "debugger" not in info["supported_features"]
    assert "kernel subshells" not in info["supported_features"]
    assert info["language_info"]["name"] == "wolfram-language"
    assert info["banner"].startswith("Mathics3") and info["protocol_version"]


def test_a_flush_waits_for_the_iopub_thread_only_when_text_waits() -> None:
    """ipykernel flushes sys.stdout and sys.stderr before every reply; the kernel's streams
    (``KernelStream``) skip the IOPub thread's round trips when nothing was written, and
    still hand written text to the socket before the flush returns."""
    import zmq
    from ipykernel.iostream import IOPubThread
    from jupyter_client.session import Session

    from rk_jupyter.kernel.streams import KernelStream

    context = zmq.Context()
    push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    thread = IOPubThread(push)
    thread.start()
    scheduled: list[Any] = []
    schedule = thread.schedule
    thread.schedule = lambda f: (scheduled.append(f), schedule(f))[1]
    session = Session(key=b"k")
    stream = KernelStream(session, thread, "stdout", watchfd=False)
    try:
        stream.flush()
        assert scheduled == []  # nothing written: no hand-off, no wait
        stream.write("written before the reply\n")
        stream.flush()
        assert scheduled  # written: handed to the IOPub thread, which sends it
        assert pull.poll(5000), "the written text was never sent"
        _, msg = session.recv(pull)
        assert msg["content"] == {"name": "stdout", "text": "written before the reply\n"}
        scheduled.clear()
        stream.flush()
        assert scheduled == []
    finally:
        stream.close()
        thread.stop()
        thread.close()
        for socket in (pull, push):
            socket.close(linger=0)
        context.term()


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
    # Exactly one output, the error, which carries the engine's Syntax message verbatim.
    assert [m["msg_type"] for m in run.outputs] == ["error"]
    assert run.outputs[0]["content"]["evalue"].startswith("Syntax::")


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


def _own_kernelspec(jupyter_env: str, name: str) -> str:
    """A local kernelspec whose kernels share no agent with rk-local's (kernels share the
    agent of their kernelspec's settings: these differ in one that changes nothing here)."""
    kernelspec.install(name, f"Wolfram Language ({name})", {
        "transport": "local", "engine": "mathics",
        "agent_start_timeout": 60 + zlib.crc32(name.encode()) % 1000,
    }, prefix=jupyter_env)
    return f"rk-{name}"


def _engine_pid(kc: Any) -> int:
    return int(execute(kc, "$ProcessID").results()[0]["data"]["text/plain"])


def test_kernels_of_a_kernelspec_share_its_agent_until_the_last_ends(jupyter_env: str) -> None:
    """Each kernel's shutdown ends its engine; the agent ends with the kernelspec's last."""
    spec = _own_kernelspec(jupyter_env, "pair")
    (km_a, kc_a), (km_b, kc_b) = (start_new_kernel(kernel_name=spec, startup_timeout=90)
                                  for _ in range(2))
    agent = km_a.provisioner.transport.process.pid
    assert km_b.provisioner.transport.process.pid == agent
    engine_a, engine_b = _engine_pid(kc_a), _engine_pid(kc_b)
    assert engine_a != engine_b and {engine_a, engine_b} <= set(engines_of(agent))
    everything = [agent, *children_of(agent)]  # the template too
    kc_a.stop_channels()
    km_a.shutdown_kernel(now=False)
    assert wait_gone([engine_a]) == []
    assert pid_alive(agent) and _engine_pid(kc_b) == engine_b, "the other kernel goes on"
    kc_b.stop_channels()
    km_b.shutdown_kernel(now=False)
    assert wait_gone(everything) == []


def test_kill_leaves_no_agent_or_engine(jupyter_env: str) -> None:
    km, kc = start_new_kernel(kernel_name=_own_kernelspec(jupyter_env, "killed"),
                              startup_timeout=90)
    pids = _agent_and_engine(km)
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    assert wait_gone(pids) == []


def test_restart_gives_a_fresh_engine_from_the_same_agent(jupyter_env: str) -> None:
    """The restarting kernel was its agent's only one: the agent waits for the restart's
    launch (``RESTART_LINGER``) and gives it a fork of its template."""
    km, kc = start_new_kernel(kernel_name=_own_kernelspec(jupyter_env, "restarted"),
                              startup_timeout=90)
    try:
        execute(kc, "z = 7;")
        agent = km.provisioner.transport.process.pid
        old = _engine_pid(kc)
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=90)
        assert wait_gone([old]) == []
        assert execute(kc, "z").results()[0]["data"]["text/plain"] == "z"
        new = _engine_pid(kc)
        assert km.provisioner.transport.process.pid == agent and new in engines_of(agent)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_restart_opens_the_next_session_while_the_old_kernel_exits(jupyter_env: str) -> None:
    """A restart's next launch (agent side, session, engine) begins as soon as the shutdown
    is requested, not after the old kernel process has gone: the launch log says so, and
    the restarted kernel works and leaves no engine behind."""
    km, kc = start_new_kernel(kernel_name=_own_kernelspec(jupyter_env, "overlapped"),
                              startup_timeout=90)
    try:
        old = _engine_pid(kc)
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=90)
        assert execute(kc, "1+1").results()[0]["data"]["text/plain"] == "2"
        assert wait_gone([old]) == []
        log = Path(jupyter_runtime_dir(), f"rk-{km.kernel_id}.log").read_text()
        steps = [line.split("] ", 1)[1] for line in log.splitlines() if "] " in line]
        launches = [i for i, step in enumerate(steps) if step.startswith("launch of kernel")]
        [cleanup] = [i for i, step in enumerate(steps) if step.startswith("cleanup done")]
        assert len(launches) == 2 and launches[1] < cleanup, log
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def test_only_a_mathics_engine_outside_slurm_overlaps_a_restart() -> None:
    """A WolframKernel holds a licence seat until it ends, and a Slurm job step passes to the
    next engine only once the old session has ended: their restarts do not overlap."""
    assert LaunchSettings.from_config({"engine": "mathics"}).restart_overlaps()
    assert not LaunchSettings.from_config({"engine": "wolfram"}).restart_overlaps()
    assert not LaunchSettings.from_config(
        {"engine": "mathics", "transport": "ssh", "host": "hpc1",
         "slurm": "--time=10"}).restart_overlaps()


def test_agent_death_is_seen_by_the_manager(jupyter_env: str) -> None:
    """A killed agent ends the kernel (Jupyter's status and restarter see it), and the launch
    log says why: the agent, with its exit status."""
    km, kc = start_new_kernel(kernel_name=_own_kernelspec(jupyter_env, "doomed"),
                              startup_timeout=90)
    try:
        agent = km.provisioner.transport.process
        agent.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not km.is_alive()
        log = Path(jupyter_runtime_dir(), f"rk-{km.kernel_id}.log").read_text()
        assert ("the agent side died, ending the kernel: the local agent exited "
                f"(status {-signal.SIGKILL})") in log, log
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
        engine = engines_of(agent)
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
        assert "compression brotli, wire/raw = " in " ".join(status.split()), status
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
        assert "compression brotli-max, wire/raw = " in " ".join(status.split()), status
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


# -- the kernel is a front end: no launch side in its process --------------------------------

LAUNCH_SIDE = ("paramiko", "rk_jupyter.provisioning", "rk_jupyter.doctor")
#: What ``import paramiko`` maps into a process (its cryptography, bcrypt and PyNaCl).
PARAMIKO_NATIVE = ("/cryptography/hazmat/", "/bcrypt/", "/nacl/")


def test_the_kernel_module_loads_no_launch_side() -> None:
    """The kernel process imports the client layer only: not the provisioner, the doctor or
    paramiko (``%rkernel doctor`` runs in a process of its own)."""
    probe = "import json, sys, rk_jupyter.kernel.kernel; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = json.loads(done.stdout)
    assert "rk_jupyter.kernel.kernel" in loaded and "rk_jupyter.client.evaluate" in loaded
    assert [m for m in loaded if m.startswith(LAUNCH_SIDE)] == []


def _native_libraries(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


def test_rkernel_doctor_runs_in_a_process_of_its_own(kernel) -> None:
    """``%rkernel doctor`` shows the doctor's table for this kernel's own launch settings;
    the kernel process never loads paramiko's native parts for it, and its engine is not
    disturbed.  (Needs ``rk-jupyter doctor --settings-stdin --mime`` from the launch side.)"""
    km, kc = kernel
    execute(kc, "kept = 6;")
    run = execute(kc, "%rkernel doctor", timeout=300)
    assert run.reply["status"] == "ok", run.reply
    [display] = run.displays()
    text, table = display["data"]["text/plain"], display["data"]["text/html"]
    assert "rk_jupyter doctor" in text and "✓ engine" in text, text
    assert "<table" in table and "1+1 = 2" in table
    maps = _native_libraries(km.provisioner.pid)
    assert [part for part in PARAMIKO_NATIVE if part in maps] == []
    assert execute(kc, "kept 7").results()[0]["data"]["text/plain"] == "42"


def _environment(settings: dict) -> KernelEnvironment:
    return KernelEnvironment(endpoint=Endpoint("127.0.0.1", 1, b"t"), settings=settings,
                             kernelspec="rk-x")


def test_rkernel_doctor_gives_the_settings_on_stdin_only(monkeypatch) -> None:
    """The doctor process gets this kernel's launch settings as JSON on stdin, never in argv
    or in the kernel's RK_* variables, and answers with one MIME bundle on stdout."""
    settings = {"transport": "local", "engine": "mathics", "compression": "zlib"}
    argv, stdin = magics.doctor_command(None, _environment(settings))
    assert argv == [sys.executable, "-m", "rk_jupyter.cli", "doctor", "--settings-stdin",
                    "--mime"]
    assert json.loads(stdin) == settings
    assert magics.doctor_command("gpu", None)[0][-2:] == ["gpu", "--mime"]
    echo = ("import json, os, sys; print(json.dumps({'text/plain': sys.stdin.read(), "
            "'text/html': ' '.join(sorted(k for k in os.environ if k.startswith('RK_')))}))")
    monkeypatch.setattr(magics, "doctor_command", lambda name, env: (
        [sys.executable, "-c", echo], magics.json.dumps(env.settings)))
    monkeypatch.setenv("RK_SETTINGS", json.dumps(settings))
    monkeypatch.setenv("RK_AGENT_HOST", "127.0.0.1")
    monkeypatch.setenv("RK_KERNELSPEC", "rk-x")
    bundle = magics.doctor_bundle(None, _environment(settings))
    assert json.loads(bundle["text/plain"]) == settings
    assert bundle["text/html"] == "RK_KERNELSPEC"


def test_rkernel_doctor_without_settings_names_the_fix() -> None:
    with pytest.raises(magics.MagicError) as failure:
        magics.doctor_bundle(None, _environment({}))
    assert failure.value.code == "magic.no-settings"
    assert "%rkernel doctor NAME" in str(failure.value)


def test_a_doctor_without_a_report_is_an_error_with_cause_and_fix(monkeypatch) -> None:
    crash = "import sys; sys.stderr.write('Traceback\\nImportError: no paramiko\\n'); sys.exit(3)"
    monkeypatch.setattr(magics, "doctor_command", lambda name, env: (
        [sys.executable, "-c", crash], ""))
    with pytest.raises(magics.MagicError) as failure:
        magics.doctor_bundle("gpu", None)
    error = failure.value
    assert error.code == "magic.doctor-failed"
    assert "status 3" in error.cause and "ImportError: no paramiko" in error.cause
    assert "in a terminal" in error.fix


def test_a_hanging_doctor_is_stopped_within_the_timeout(monkeypatch, tmp_path) -> None:
    pid_file = tmp_path / "pid"
    monkeypatch.setattr(magics, "DOCTOR_TIMEOUT", 1.0)
    monkeypatch.setattr(magics, "doctor_command", lambda name, env: (
        [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write("
         "str(os.getpid())); time.sleep(60)"], ""))
    started = time.monotonic()
    with pytest.raises(magics.MagicError) as failure:
        magics.doctor_bundle("gpu", None)
    assert failure.value.code == "magic.doctor-timeout"
    assert "within 1 s" in failure.value.cause and "in a terminal" in failure.value.fix
    assert time.monotonic() - started < 15
    assert not pid_alive(int(pid_file.read_text())), "the doctor process was ended"
