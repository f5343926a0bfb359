"""``rk-jupyter doctor NAME``: walk the chain from this machine to a working engine, step by step.

Each step is a small function over the modules a kernel start itself uses (ssh_config target
resolution, host-key checking, the connect phases, agent deployment, the link, AgentClient), so
a step fails with the same message a kernel start would give, split into what happened and
what to do, at the step where it happens and with the time it took.  Steps after a failure are
skipped; for the local transport the network steps do not apply.

The doctor never touches what running kernels use: it opens its own SSH connection (not the
shared pool's) and starts its own agent, and ends both before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import os
import queue
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import paramiko
from traitlets import TraitError

from . import __version__, kernelspec
from .client import AgentClient, AgentError, Collected, Endpoint, EvaluationError, run
from .client.evaluate import TIMEOUT
from .link.compression import split_preference
from .link.connection import Link
from .link.frames import LinkTimeout
from .link.packets import packet, packet_name
from .provisioning.provisioner import RemoteKernelProvisioner, readable
from .provisioning.ssh.connect import (
    SSHConnection,
    authenticate,
    connect,
    start_transport,
    tcp_connect,
    tunnel,
)
from .provisioning.ssh.deploy import MIN_PYTHON, NO_PYTHON_MARKER, agent_zipapp
from .provisioning.ssh.forward import Forwarder
from .provisioning.ssh.hostkeys import fingerprint
from .provisioning.ssh.remote_agent import AgentSettings, RemoteAgent, python_not_found
from .provisioning.ssh.target import SSHTarget, load_ssh_config, resolve_target
from .provisioning.transports import TransportError
from .provisioning.transports.local import LocalTransport

T = TypeVar("T")

PASS, FAIL, SKIPPED, NA = "pass", "fail", "skipped", "n/a"
MARKS = {PASS: "✓", FAIL: "✗", SKIPPED: "-", NA: "·"}
ENGINE_START_TIMEOUT = 150.0  # a cold Wolfram kernel with a licence check is slow
EVAL_TIMEOUT = 30.0
PINGS = 5
PING_TIMEOUT = 10.0
ECHO_SIZES = (64 << 10, 1 << 20, 4 << 20)  # random, so the codec cannot shrink them
ECHO_LONG_ENOUGH = 0.5  # seconds: a transfer this long measures the link, not the overhead
ECHO_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
SHELL_MARK = "RKJ-DOCTOR-SHELL"
_MIN_CAUSE = 12  # a shorter "cause" is a prefix like "@@@ WARNING", not the cause
_PY_PROBE = ('import sys; sys.stdout.write("%s %d.%d.%d\\n" % '
             "((sys.executable,) + tuple(sys.version_info[:3])))")  # also runs on Python 2
# What to do when a failure's message names no fix of its own (a timeout, mostly).
HINTS = {
    "engine": "check the engine on the host: Mathics3 (pip install Mathics3) or the Wolfram "
              "kernel (engine option kernel_path)",
    "round trip": "the link is up but does not answer: check the network between the hosts",
    "throughput": "the link is up but slow: check the network's bandwidth between the hosts",
}


class Failed(Exception):
    """A step failed: ``detail`` says what happened, ``fix`` what to do."""

    def __init__(self, detail: str, fix: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


class NotApplicable(Exception):
    """The step has no meaning for this kernelspec (a network step of the local transport)."""


@dataclass
class Step:
    """One line of the report."""

    step: str
    status: str
    seconds: float | None = None
    detail: str = ""
    fix: str = ""

    @property
    def ok(self) -> bool | None:
        """True passed, False failed, None not run (skipped, or not applicable)."""
        return {PASS: True, FAIL: False}.get(self.status)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "ok": self.ok, "status": self.status,
                "seconds": None if self.seconds is None else round(self.seconds, 3),
                "detail": self.detail, "fix": self.fix}


def split_message(message: str) -> tuple[str, str]:
    """(cause, explanation and fix) of a message written "cause: what to do", the style of
    every TransportError: split at the first ": " or "; " outside brackets on the first line;
    without one, the first line is the cause and the lines after it the rest."""
    first, _, after = message.strip().partition("\n")
    depth = 0
    for i, char in enumerate(first):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(depth - 1, 0)
        elif depth == 0 and i >= _MIN_CAUSE and first[i:i + 2] in (": ", "; "):
            rest = first[i + 2:]
            return first[:i], f"{rest}\n{after}" if after else rest
    return first, after


def passed(steps: list[Step]) -> bool:
    """Every step passed or did not apply: the exit status 0 of the CLI."""
    return all(step.status in (PASS, NA) for step in steps)


def _bounded(work: Callable[[], T], timeout: float) -> T:
    """``work()`` on a daemon thread, for calls that take no timeout themselves
    (getaddrinfo, asyncio.run in a thread that may already run a loop); TimeoutError if it
    is not done within ``timeout`` seconds."""
    box: queue.Queue[tuple[bool, Any]] = queue.Queue(1)

    def run() -> None:
        try:
            box.put((True, work()))
        except BaseException as exc:  # handed to the caller
            box.put((False, exc))

    threading.Thread(target=run, name="rk-doctor-bounded", daemon=True).start()
    try:
        done, value = box.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError from None
    if not done:
        raise value
    return value


class Checkup:
    """One run of the doctor on a kernelspec (``name``) or on the settings a provisioner made
    (``settings``, as ``%rkernel doctor`` gets them); ``run`` does every step and cleans up."""

    def __init__(self, name: str = "", settings: dict[str, Any] | None = None) -> None:
        self.name = name
        self.settings = settings
        self.token = secrets.token_urlsafe(32).encode()
        self.kernel_id = f"doctor-{os.getpid()}-{secrets.token_hex(4)}"
        self.target: SSHTarget | None = None
        self.jump: SSHConnection | None = None
        self.sock: Any = None
        self.transport: paramiko.Transport | None = None
        self.connection: SSHConnection | None = None
        self.agent: RemoteAgent | None = None
        self.forwarder: Forwarder | None = None
        self.local: LocalTransport | None = None
        self.address: tuple[str, int] = ("", 0)
        self.client: AgentClient | None = None
        self.tmp = ""
        self._ids = itertools.count(1)

    def run(self, report: Callable[[Step], None] | None = None) -> list[Step]:
        """Every step in order (``report`` sees each as it ends); never raises for a failure."""
        checks: list[tuple[str, Callable[[], str]]] = [
            ("kernelspec", self._kernelspec), ("resolve", self._resolve),
            ("reach", self._reach), ("host key", self._host_key), ("auth", self._auth),
            ("remote shell", self._shell), ("python", self._python), ("agent", self._agent),
            ("link", self._link), ("engine", self._engine), ("round trip", self._round_trip),
            ("throughput", self._throughput),
        ]
        steps: list[Step] = []
        self.tmp = tempfile.mkdtemp(prefix="rk-doctor-")
        try:
            for name, check in checks:
                if steps and steps[-1].status in (FAIL, SKIPPED):
                    step = Step(name, SKIPPED, detail="an earlier step failed")
                else:
                    step = self._check(name, check)
                steps.append(step)
                if report:
                    report(step)
        finally:
            self.close()
        return steps

    def _check(self, name: str, check: Callable[[], str]) -> Step:
        started = time.monotonic()
        try:
            detail = check()
        except NotApplicable as exc:
            return Step(name, NA, detail=str(exc))
        except Failed as exc:
            detail, fix = exc.detail, exc.fix
        except (TransportError, AgentError, OSError) as exc:  # LinkError is an OSError
            detail, fix = split_message(str(exc) or type(exc).__name__)
        except Exception as exc:  # a doctor reports what it did not foresee, too
            detail, fix = f"unexpected {type(exc).__name__}: {exc}", ""
        else:
            return Step(name, PASS, time.monotonic() - started, detail)
        return Step(name, FAIL, time.monotonic() - started, detail, fix or HINTS.get(name, ""))

    def close(self) -> None:
        """End what the run made, newest first: session, forward, agent, connection."""
        cleanups: list[Callable[[], Any]] = []
        if self.client:
            cleanups.append(self.client.close)
        if self.forwarder:
            cleanups.append(self.forwarder.close)
        if self.agent:
            cleanups.append(self.agent.stop)
        for closable in (self.connection, self.transport, self.sock, self.jump):
            if closable is not None:
                cleanups.append(closable.close)
        if self.local:
            local = self.local
            cleanups.append(lambda: _bounded(lambda: asyncio.run(local.stop()), STOP_TIMEOUT))
        cleanups.append(lambda: shutil.rmtree(self.tmp, ignore_errors=True))
        for cleanup in cleanups:
            with contextlib.suppress(Exception):  # best effort: end everything else still
                cleanup()
        self.client = self.forwarder = self.agent = self.local = None
        self.connection = self.transport = self.sock = self.jump = None

    # -- settings --------------------------------------------------------------------------

    @property
    def _s(self) -> dict[str, Any]:
        assert self.settings is not None  # the kernelspec step passed
        return self.settings

    def _ssh(self) -> dict[str, Any]:
        """The settings of an ssh kernelspec; NotApplicable for a local one."""
        if self._s.get("transport") != "ssh":
            raise NotApplicable("the agent runs on this machine (transport local)")
        return self._s

    def _timeout(self, key: str, default: float) -> float:
        return float(self._s.get(key) or default)

    # -- the steps: each returns what it found, or raises -----------------------------------

    def _kernelspec(self) -> str:
        label = self.name or "this kernel"
        if self.settings is None:
            rows = kernelspec.installed()
            row = next((r for r in rows if self.name in (r["name"], r["kernelspec"])), None)
            if row is None:
                available = ", ".join(r["kernelspec"] for r in rows) or "none"
                raise Failed(f"no rk- kernelspec named {self.name!r}",
                             f"rk-jupyter list shows the installed ones (here: {available}); "
                             "add one with rk-jupyter add NAME --local, or --host "
                             "[user@]host[:port]")
            label = row["kernelspec"]
            try:
                self.settings = RemoteKernelProvisioner(**row["config"])._settings()
            except (TraitError, TransportError) as exc:
                raise Failed(f"{label} has an invalid provisioner config: {exc}",
                             f"correct {os.path.join(row['resource_dir'], 'kernel.json')}, "
                             "or install it again with rk-jupyter add") from None
        s = self._s
        where = f" to {s.get('host')}" if s.get("transport") == "ssh" else ""
        return (f"{label}: transport {s.get('transport')}{where}, engine {s.get('engine')}, "
                f"compression {s.get('compression')}")

    def _resolve(self) -> str:
        s = self._ssh()
        self.target = target = resolve_target(
            s["host"], port=s.get("port") or None, user=s.get("user") or None,
            identity_file=s.get("identity_file") or None,
            proxy_jump=s.get("proxy_jump") or None, known_hosts=s.get("known_hosts") or None,
            ssh_config=load_ssh_config(s.get("ssh_config") or None),
        )
        first = (*target.jumps, target)[0]
        timeout = self._timeout("connect_timeout", 10.0)
        try:
            infos = _bounded(lambda: socket.getaddrinfo(first.hostname, first.port,
                                                        type=socket.SOCK_STREAM), timeout)
        except socket.gaierror as exc:
            raise Failed(f"cannot resolve the host name {first.hostname!r}: {exc.strerror}",
                         "check the name: host in the kernelspec, or the HostName of that "
                         "alias in your ssh_config; a name known only inside a VPN or a "
                         "private network needs that network (try: getent hosts "
                         f"{shlex.quote(first.hostname)})") from None
        except TimeoutError:
            raise Failed(f"the resolver gave no answer for {first.hostname!r} within "
                         f"{timeout:g} s (connect_timeout)",
                         "check the DNS servers in /etc/resolv.conf, or give the host as an "
                         "IP address") from None
        addresses = ", ".join(dict.fromkeys(info[4][0] for info in infos))
        detail = f"{first.hostname} is {addresses}"
        if target.alias != target.hostname:
            detail = f"{target.alias} is {target} (ssh_config); {detail}"
        if target.jumps:
            detail += f"; the jump host resolves {target.hostname}"
        return detail

    def _reach(self) -> str:
        s, target = self._ssh(), self.target
        assert target is not None
        timeout = self._timeout("connect_timeout", 10.0)
        if target.jumps:
            chain = replace(target.jumps[-1], jumps=target.jumps[:-1])
            self.jump = connect(chain, s.get("host_key_policy") or "strict", timeout, 0)
            self.sock = tunnel(self.jump, target, timeout)
            return f"{target.hostname}:{target.port} answers through {self.jump.target}"
        self.sock = tcp_connect(target, timeout)
        return f"{target.hostname}:{target.port} accepts TCP connections"

    def _host_key(self) -> str:
        s, target = self._ssh(), self.target
        assert target is not None
        policy = s.get("host_key_policy") or "strict"
        self.transport = start_transport(target, self.sock, policy,
                                         self._timeout("connect_timeout", 10.0))
        key = self.transport.get_remote_server_key()
        return (f"{target.known_hosts_name} offered {key.get_name()} {fingerprint(key)}: "
                f"trusted (host_key_policy {policy})")

    def _auth(self) -> str:
        self._ssh()
        assert self.target is not None and self.transport is not None
        label = authenticate(self.transport, self.target)
        self.connection = SSHConnection(self.target, self.transport,
                                        [self.jump] if self.jump else [], keepalive=0)
        return f"logged in as {self.target.user} with {label}"

    def _shell(self) -> str:
        self._ssh()
        assert self.connection is not None and self.target is not None
        user, host = self.target.user, self.target.hostname
        status, out = self.connection.run(f"printf {SHELL_MARK}", self._command_timeout(),
                                          combine=False)
        if status != 0 or SHELL_MARK not in out:
            raise Failed(f"the account {user} on {host} cannot run a command (exit status "
                         f"{status}, output {out.strip()[:200]!r})",
                         "rk_jupyter starts its agent with a command run by the account's "
                         f"login shell: give {user} a shell that runs commands (e.g. chsh -s "
                         "/bin/bash); /usr/sbin/nologin and /bin/false refuse them")
        extra = out.replace(SHELL_MARK, "", 1).strip()
        if extra:
            raise Failed(f"the login on {host} prints {extra[:200]!r} on stdout before any "
                         "command",
                         "a shell startup file (~/.bashrc, ~/.profile, /etc/bash.bashrc) "
                         "prints even for commands run over SSH; that text lands in every "
                         "channel and corrupts SFTP, which copies the agent. Print only in "
                         "interactive shells, e.g. with this line above the output in "
                         "~/.bashrc:\n    [[ $- == *i* ]] || return")
        return f"{user}'s login shell ran a command; stdout is clean"

    def _command_timeout(self) -> float:
        return self._timeout("command_timeout", 30.0)

    def _python(self) -> str:
        s = self._s
        if s.get("transport") != "ssh":
            python = s.get("python") or sys.executable
            try:
                done = subprocess.run([python, "-c", _PY_PROBE], capture_output=True,
                                      text=True, timeout=self._command_timeout())
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise Failed(f"cannot run the Python {python!r} of the local agent: {exc}",
                             "set python in the kernelspec to a Python 3.10+ interpreter "
                             "with rk_jupyter installed, or leave it empty for Jupyter's "
                             "own") from None
            return self._python_version(python, "this machine", done.returncode, done.stdout)
        python = s.get("remote_python") or "python3"
        assert self.connection is not None
        script = (f"cd; PY={shlex.quote(python)}; command -v \"$PY\" >/dev/null 2>&1 || "
                  f"{{ echo {NO_PYTHON_MARKER}; exit 0; }}; exec \"$PY\" -c "
                  f"{shlex.quote(_PY_PROBE)}")
        status, out = self.connection.run("sh -c " + shlex.quote(script),
                                          self._command_timeout())
        if NO_PYTHON_MARKER in out.split():
            raise TransportError(python_not_found(python, str(self.target)))
        return self._python_version(python, str(self.target), status, out)

    @staticmethod
    def _python_version(python: str, where: str, status: int, out: str) -> str:
        """Check the probe's "executable X.Y.Z" line (the last one: a login may print first)."""
        fields = (out.strip().splitlines() or [""])[-1].rsplit(" ", 1)
        try:
            version = tuple(int(part) for part in fields[1].split("."))
        except (IndexError, ValueError):
            raise Failed(f"{python} on {where} did not run (exit status {status}): "
                         f"{out.strip()[-300:]!r}",
                         "set the kernelspec's Python (remote_python, or python for the "
                         "local transport) to a working Python 3.10+ interpreter") from None
        if version < MIN_PYTHON:
            raise Failed(f"{python} on {where} is Python {fields[1]}; the agent needs "
                         f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer",
                         "set the kernelspec's Python (remote_python, or python for the "
                         "local transport) to a newer interpreter there, e.g. "
                         "/usr/bin/python3.11")
        found = "" if fields[0] == python else f" ({fields[0]})"
        return f"{python} on {where}: Python {fields[1]}{found}"

    def _agent(self) -> str:
        s = self._s
        log_path = os.path.join(self.tmp, "agent.log")
        if s.get("transport") != "ssh":
            local = self.local = LocalTransport(s, log_path)
            bound = local.timeout + STOP_TIMEOUT
            try:
                endpoint = _bounded(lambda: asyncio.run(local.start(self.kernel_id, self.token)),
                                    bound)
            except TimeoutError:
                raise Failed(f"the local agent did not start within {bound:g} s") from None
            self.address = (endpoint.host, endpoint.port)
            return f"started {local.python} -m rk_jupyter.agent: {endpoint.description}"
        assert self.connection is not None
        settings = AgentSettings(
            python=s.get("remote_python") or "python3", deploy=s.get("agent_deploy") or "auto",
            start_timeout=self._timeout("agent_start_timeout", 30.0),
            command_timeout=self._command_timeout(),
        )
        agent = self.agent = RemoteAgent(self.connection, settings, self.token, log_path)
        agent.start()
        self.forwarder = Forwarder(self.connection.transport, ("127.0.0.1", agent.port),
                                   self._timeout("connect_timeout", 10.0))
        self.address = ("127.0.0.1", self.forwarder.port)
        ready = agent.ready
        return (f"{self._deployment()}; agent pid {agent.pid} (rk_jupyter {ready.get('version')}"
                f", Python {ready.get('python')}) listens on remote 127.0.0.1:{agent.port}")

    def _deployment(self) -> str:
        """How the agent got there: copied now, the cached copy, or an installed rk_jupyter."""
        assert self.agent is not None and self.connection is not None
        app = agent_zipapp()
        if self.agent.deployed:
            return f"copied the agent ({len(app.data) >> 10} KiB) to ~/{app.remote_path} over SFTP"
        status, command = self.connection.run(f"ps -o args= -p {self.agent.pid}",
                                              self._command_timeout())
        if status == 0 and "agent.pyz" in command:
            return f"runs the copy cached in ~/{app.remote_path}"
        if status == 0 and "rk_jupyter.agent" in command:
            return "runs the installed rk_jupyter"
        return "started"

    def _link(self) -> str:
        codec = self._s.get("compression") or "brotli"
        link = Link.connect(*self.address, self.token, codec,
                            timeout=self._timeout("connect_timeout", 10.0))
        link.close()
        agreed = link.negotiated
        detail = (f"token accepted; protocol {agreed.peer_protocol}, codec {agreed.name}, "
                  f"agent rk_jupyter {agreed.peer_version}")
        if agreed.peer_version != __version__:
            detail += f" (this side: {__version__})"
        if agreed.name != codec:
            package = split_preference(codec)[0]
            detail += (f"; {codec} was asked for but the agent's Python lacks it (pip install "
                       f"{package} there compresses better)")
        return detail

    def _engine(self) -> str:
        s = self._s
        host, port = self.address
        self.client = AgentClient(
            Endpoint(host, port, self.token, transport=s.get("transport", "local"),
                     codec=s.get("compression") or "brotli", engine=s.get("engine") or "mathics",
                     engine_options=dict(s.get("engine_options") or {})),
            self.kernel_id,
        )
        info = self.client.open(ENGINE_START_TIMEOUT)
        answer = self._evaluate("1+1")
        if answer != "2":
            raise Failed(f"the engine answered 1+1 with {answer!r}",
                         "the engine runs but does not compute: see its messages above, and "
                         "the engine's installation on the host")
        return f"{info.get('name')} {info.get('version')} started; 1+1 = 2"

    def _evaluate(self, code: str) -> str | None:
        """The text/plain result of one input, as a notebook cell would show it (its messages
        when it has none)."""
        assert self.client is not None
        out = Collected()
        try:
            run(self.client, code, out, timeout=EVAL_TIMEOUT)
        except EvaluationError as exc:
            if exc.code == TIMEOUT:
                raise Failed(f"the engine did not answer {code} within {EVAL_TIMEOUT:g} s",
                              "the engine started but hangs: look at its process on the "
                              "host") from None
        result = out.text
        return result if result is not None or not out.messages else "; ".join(out.messages)

    def _round_trip(self) -> str:
        assert self.client is not None
        rtts = [self.client.ping(PING_TIMEOUT) * 1000 for _ in range(PINGS)]
        return (f"{PINGS} pings: min {min(rtts):.2f} ms, avg {sum(rtts) / PINGS:.2f} ms, "
                f"max {max(rtts):.2f} ms")

    def _throughput(self) -> str:
        """Random bytes to the agent and back on a link of its own, in growing sizes until
        one transfer takes long enough to measure (or the largest is done)."""
        link = Link.connect(*self.address, self.token, self._s.get("compression") or "brotli",
                            timeout=self._timeout("connect_timeout", 10.0))
        try:
            for size in ECHO_SIZES:
                before = link.stats.sent.wire_bytes + link.stats.received.wire_bytes
                seconds = self._echo(link, os.urandom(size))
                wire = link.stats.sent.wire_bytes + link.stats.received.wire_bytes - before
                if seconds >= ECHO_LONG_ENOUGH:
                    break
        finally:
            link.close()
        return (f"{_amount(size)} to the agent and back in {seconds:.3f} s: "
                f"{2 * size / seconds / 1e6:.1f} MB/s ({wire / 2**20:.1f} MiB on the wire)")

    def _echo(self, link: Link, payload: bytes) -> float:
        """Seconds for ``payload`` to go to the agent and back (it echoes RKPing's data)."""
        ident = next(self._ids)
        started = time.monotonic()
        link.send(0, packet("RKPing", ident, payload))
        try:
            while True:
                remaining = started + ECHO_TIMEOUT - time.monotonic()
                channel, expr = link.recv(timeout=max(remaining, 0.0))
                if channel == 0 and packet_name(expr) == "RKPong" and expr.args[:1] == (ident,):
                    break
        except LinkTimeout:
            raise Failed(f"{_amount(len(payload))} did not come back within "
                         f"{ECHO_TIMEOUT:g} s") from None
        if expr.args[1:] != (payload,):
            raise Failed("the agent answered the echo without its data",
                         "the agent is another rk_jupyter version: let it be deployed again "
                         "(agent_deploy 'zipapp')")
        return time.monotonic() - started


# -- reports ---------------------------------------------------------------------------------


def _amount(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def format_step(step: Step) -> str:
    """One step as a text line (and, on failure, its fix below it)."""
    seconds = "" if step.seconds is None else f"{step.seconds:.2f} s"
    detail = f"{step.status}: {step.detail}" if step.status in (SKIPPED, NA) else step.detail
    line = f"  {MARKS[step.status]} {step.step:<12} {seconds:>8}  {detail}"
    if step.status == FAIL and step.fix:
        pad = " " * 27
        fix = readable(step.fix, 88 - len(pad)).splitlines()
        line += "\n" + "\n".join(pad + ("fix: " if i == 0 else "     ") + text
                                 for i, text in enumerate(fix))
    return line


def summary(steps: list[Step]) -> str:
    """The last line: all passed, or where it failed."""
    total = sum(step.seconds or 0.0 for step in steps)
    ran = [step for step in steps if step.status != NA]
    if passed(steps):
        na = len(steps) - len(ran)
        return (f"all {len(ran)} steps passed in {total:.2f} s"
                + (f" ({na} not applicable)" if na else ""))
    failed = next(step for step in steps if step.status == FAIL)
    skipped = sum(step.status == SKIPPED for step in steps)
    return f"failed at {failed.step} after {total:.2f} s; {skipped} later steps skipped"


def render_text(title: str, steps: list[Step]) -> str:
    return "\n".join([title, *map(format_step, steps), summary(steps)])


def render_html(title: str, steps: list[Step]) -> str:
    """A table for a notebook; failures in red with their fix."""
    colors = {PASS: "#1a7f37", FAIL: "#cf222e", SKIPPED: "#6e7781", NA: "#6e7781"}
    cell = "<td style='text-align:left;vertical-align:top'>"
    rows = []
    for step in steps:
        seconds = "" if step.seconds is None else f"{step.seconds:.2f} s"
        detail = html.escape(step.detail)
        if step.status in (SKIPPED, NA):
            detail = f"<i>{step.status}</i>: {detail}"
        if step.status == FAIL and step.fix:
            detail += (f"<pre style='white-space:pre-wrap;margin:0.3em 0 0 0'><b>fix:</b> "
                       f"{html.escape(step.fix)}</pre>")
        rows.append(f"<tr><td style='color:{colors[step.status]};font-weight:bold'>"
                    f"{MARKS[step.status]}</td>{cell}{html.escape(step.step)}</td>"
                    f"<td style='text-align:right;vertical-align:top'>{seconds}</td>"
                    f"{cell}{detail}</td></tr>")
    return (f"<table class='rk-doctor'><caption>{html.escape(title)}</caption>"
            "<tr><th></th><th style='text-align:left'>step</th><th>time</th>"
            f"<th style='text-align:left'>result</th></tr>{''.join(rows)}"
            f"<tr><td></td><td colspan='3' style='text-align:left'>"
            f"{html.escape(summary(steps))}</td></tr></table>")
