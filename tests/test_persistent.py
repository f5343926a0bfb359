"""Persistent kernels (kernelspec key ``persistent``): the engine outlives the Jupyter server.

Real components on the user's path: a ``jupyter server`` process started, stopped with
SIGTERM or killed with SIGKILL, and started again on the same runtime directory; the notebook's
kernel started through the sessions API (as JupyterLab does when it opens a notebook, which
sets ``JPY_SESSION_NAME``), its cells run over the kernel websocket; Mathics3 engines;
``rk-jupyter sessions`` run as a user runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from hub_helpers import http, run_cell
from kernel_helpers import pid_alive, wait_for

SERVER_START = 60.0


@dataclass
class Server:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any:
        status, answer = http(method, self.url + path, self.token, body, timeout)
        assert status < 300, f"{method} {path}: HTTP {status}: {answer}\n{self.tail()}"
        return answer

    def open_notebook(self, path: str, kernel: str) -> str:
        """What JupyterLab does when it opens a notebook: a session for its path (the
        server gives the kernel ``JPY_SESSION_NAME``); the kernel's id."""
        session = self.api("POST", "/api/sessions", {"path": path, "type": "notebook",
                                                     "name": path, "kernel": {"name": kernel}})
        return session["kernel"]["id"]

    def run(self, kernel_id: str, code: str, timeout: float = 90.0) -> Any:
        return run_cell(self.url, self.token, kernel_id, code, "tester", timeout)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def jupyter_server(root: Path, name: str) -> Iterator[Server]:
    """``jupyter server`` on loopback over ``root`` (notebooks, runtime directory and
    kernelspecs shared by every server started on it, as a user's are); killed if the test
    left it running."""
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(root / "runtime"),
               JUPYTER_CONFIG_DIR=str(root / "config"), PYTHONUNBUFFERED="1")
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    port, token = _free_port(), secrets.token_hex(16)
    argv = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root / 'notebooks'}"]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    log = root / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", token, process, log)
    try:
        deadline = time.monotonic() + SERVER_START
        while not _answers(server):
            assert process.poll() is None, server.tail()
            assert time.monotonic() < deadline, server.tail()
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _answers(server: Server) -> bool:
    try:
        return http("GET", server.url + "/api/status", server.token, timeout=2.0)[0] == 200
    except OSError:  # not listening yet
        return False


def stop(server: Server, sig: int) -> None:
    """SIGTERM (a server stopped: its kernels are shut down) or SIGKILL (a crash) of the
    server's own process, as a user's terminal, a hub or the OOM killer would."""
    server.process.send_signal(sig)
    server.process.wait(60)


class StreamingCell:
    """A cell whose output is read as it comes, over the kernel's websocket."""

    def __init__(self, server: Server, kernel_id: str, code: str) -> None:
        import websocket

        session = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            server.url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
            f"?session_id={session}", timeout=60, suppress_origin=True,
            header=[f"Authorization: token {server.token}"])
        self.msg_id = secrets.token_hex(8)
        self.text = ""
        self.ws.send(json.dumps({
            "header": {"msg_id": self.msg_id, "msg_type": "execute_request",
                       "session": session, "username": "tester", "version": "5.3",
                       "date": datetime.now(timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))

    def read_until(self, pattern: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            assert time.monotonic() < deadline, f"no {pattern!r} in {self.text!r}"
            self.ws.settimeout(max(deadline - time.monotonic(), 0.1))
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") == self.msg_id \
                    and msg["header"]["msg_type"] == "stream":
                self.text += msg["content"]["text"]
        return self.text


def rk_jupyter(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it; a hang is aborted with every thread's traceback on stderr."""
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(root / "runtime"), PYTHONFAULTHANDLER="1")
    return subprocess.run(["timeout", "-s", "ABRT", "40", sys.executable, "-m",
                           "rk_jupyter.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def listed(root: Path, name: str) -> list[str]:
    """The rows (after the header) ``rk-jupyter sessions NAME`` prints."""
    done = rk_jupyter("sessions", name, root=root)
    assert done.returncode == 0, done.stderr[-6000:]
    lines = done.stdout.strip().splitlines()
    return [] if lines[0].startswith("no sessions") else lines[1:]


def agents_of(root: Path) -> list[int]:
    """Agents started for ``root``'s servers (their log file is in its runtime directory)."""
    marker = str(root / "runtime").encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                if b"rk_jupyter.agent" in cmdline and marker in cmdline:
                    pids.append(int(entry))
    return pids


@pytest.fixture
def root(tmp_path: Path, jupyter_env: str) -> Iterator[Path]:
    """A user's Jupyter: the kernelspecs rk-keep (persistent) and rk-brief (persistent for 3
    s); whatever agent a test leaves is killed at the end."""
    from rk_jupyter.cli import main

    assert main(["add", "keep", "--local", "--persistent", "--prefix", jupyter_env]) == 0
    assert main(["add", "brief", "--local", "--persistent", "--persist-for", "3",
                 "--prefix", jupyter_env]) == 0
    yield tmp_path
    for pid in agents_of(tmp_path):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^line (\d+)$", text, re.MULTILINE)]


def test_a_persistent_kernel_outlives_a_stopped_server_and_its_running_cell_goes_on(
        root: Path) -> None:
    lines = 12
    with jupyter_server(root, "first") as first:
        kernel = first.open_notebook("work.ipynb", "rk-keep")
        assert first.run(kernel, "x = 6*7").reply["status"] == "ok"
        engine = int(first.run(kernel, "$ProcessID").results()[0])
        cell = StreamingCell(first, kernel, f'Do[Print["line ", i]; Pause[0.4], {{i, {lines}}}]; '
                             '"cell done"')
        seen = numbers(cell.read_until(r"line 3\n"))
        stop(first, signal.SIGTERM)
    assert pid_alive(engine), "the engine ended with the server"
    rows = listed(root, "keep")
    assert len(rows) == 1 and "work.ipynb" in rows[0] and "detached" in rows[0], rows
    assert "running" in rows[0], rows  # the cell is still going
    # Where the next server finds the agent: a file only the user reads; the token in no log.
    [state] = (root / "runtime").glob("rk-agent-*.json")
    assert state.stat().st_mode & 0o777 == 0o600
    token = json.loads(state.read_text())["token"]
    for log in [*(root / "runtime").glob("*.log*"), first.log]:
        assert token not in log.read_text(errors="replace"), log

    with jupyter_server(root, "second") as second:
        kernel = second.open_notebook("work.ipynb", "rk-keep")
        run = second.run(kernel, "x")
        again = numbers(run.streams("stdout"))
        assert "while this notebook was away" in run.streams("stderr"), run.outputs
        assert len(again) == len(set(again)), f"output delivered twice: {again}"
        assert set(seen) | set(again) == set(range(1, lines + 1)), (seen, again)
        assert run.results() == ['"cell done"', "42"] or run.results() == ["cell done", "42"], \
            run.results()
        assert run.reply["execution_count"] == 4, run.reply  # In[1..3] ran on the first server
        assert int(second.run(kernel, "$ProcessID").results()[0]) == engine
        # A user's shutdown ends a persistent session as any other.
        second.api("DELETE", f"/api/kernels/{kernel}")
        assert wait_for(lambda: not pid_alive(engine), 15), "the engine outlived its shutdown"
        assert listed(root, "keep") == []


def test_a_killed_server_leaves_the_session_which_sessions_end_ends(root: Path) -> None:
    with jupyter_server(root, "first") as first:
        kernel = first.open_notebook("crash.ipynb", "rk-keep")
        assert first.run(kernel, "y = 5").reply["status"] == "ok"
        engine = int(first.run(kernel, "$ProcessID").results()[0])
        stop(first, signal.SIGKILL)
    assert wait_for(lambda: listed(root, "keep") and "detached" in listed(root, "keep")[0],
                    20), "the killed server's kernel did not let go of its session"
    with jupyter_server(root, "second") as second:
        kernel = second.open_notebook("crash.ipynb", "rk-keep")
        assert second.run(kernel, "y").results() == ["5"]
        # Another notebook gets a session of its own, not this one.
        other = second.open_notebook("other.ipynb", "rk-keep")
        assert second.run(other, "y").results() == ["y"]
        second.api("DELETE", f"/api/kernels/{other}")
        stop(second, signal.SIGKILL)
    assert pid_alive(engine)
    assert wait_for(lambda: len(listed(root, "keep")) == 1
                    and "detached" in listed(root, "keep")[0], 20)
    name = listed(root, "keep")[0].split()[0]
    done = rk_jupyter("sessions", "keep", "--end", name, root=root)
    assert done.returncode == 0 and f"ended session {name}" in done.stdout, done
    assert wait_for(lambda: not pid_alive(engine), 15), "--end left the engine running"
    assert listed(root, "keep") == []
    # Nothing is left: the agent ends once it keeps no session (ORPHAN_LINGER later).
    from rk_jupyter.link.launcher import ORPHAN_LINGER
    assert wait_for(lambda: not agents_of(root), ORPHAN_LINGER + 15), agents_of(root)
    gone = rk_jupyter("sessions", "keep", "--end", name, root=root)
    assert gone.returncode != 0 and "no session" in gone.stderr, gone


def test_a_persistent_session_ends_after_persist_for(root: Path) -> None:
    with jupyter_server(root, "first") as first:
        kernel = first.open_notebook("brief.ipynb", "rk-brief")
        engine = int(first.run(kernel, "$ProcessID").results()[0])
        stop(first, signal.SIGTERM)
    assert pid_alive(engine)
    assert wait_for(lambda: not pid_alive(engine), 3 + 10), "persist_for did not end the engine"
    assert listed(root, "brief") == []


AGENT = r"(agent\.pyz|-m rk_jupyter\.agent) --host"
WORKER = r"mathics[/._]worker"


def test_over_ssh_a_killed_servers_session_is_adopted_with_its_agent(
        root: Path, sshbed: Any, jupyter_env: str) -> None:
    from rk_jupyter.link.launcher import ORPHAN_LINGER

    from kernel_helpers import add_remote_spec

    def remote(pattern: str) -> list[int]:
        return [pid for pid, _ in sshbed.remote_processes(pattern)]

    spec = add_remote_spec(sshbed, jupyter_env, "far", "--persistent")
    lines = 10
    with jupyter_server(root, "first") as first:
        kernel = first.open_notebook("far.ipynb", spec)
        assert first.run(kernel, "z = 9").reply["status"] == "ok"
        [agent] = remote(AGENT)
        cell = StreamingCell(first, kernel, f'Do[Print["line ", i]; Pause[0.4], {{i, {lines}}}]; '
                             '"cell done"')
        seen = numbers(cell.read_until(r"line 2\n"))
        stop(first, signal.SIGKILL)
    assert wait_for(lambda: (rows := listed(root, "far")) and "detached" in rows[0], 30), \
        listed(root, "far")
    assert remote(AGENT) == [agent]
    with jupyter_server(root, "second") as second:
        kernel = second.open_notebook("far.ipynb", spec)
        run = second.run(kernel, "z")
        again = numbers(run.streams("stdout"))
        assert len(again) == len(set(again)), f"output delivered twice: {again}"
        assert set(seen) | set(again) == set(range(1, lines + 1)), (seen, again)
        assert run.results()[-1] == "9", run.results()
        assert remote(AGENT) == [agent], "a second agent was started instead of adopting"
        workers = remote(WORKER)
        second.api("DELETE", f"/api/kernels/{kernel}")
        assert wait_for(lambda: not set(workers) & set(remote(WORKER)), 15)
    assert listed(root, "far") == []
    assert wait_for(lambda: not remote(AGENT), ORPHAN_LINGER + 15), remote(AGENT)
