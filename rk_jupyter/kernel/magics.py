"""``%rkernel`` lines in a kernel cell: status, ping, logs and the doctor, as MIME bundles.

The kernel only translates: the figures come from the client layer (``rk_jupyter.client``),
and the doctor runs in a process of its own (``rk-jupyter doctor … --mime``), so that the
kernel process never loads the launch side (provisioner, SSH, paramiko).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import deque

from ..client import AgentClient, AgentError
from ..client.agent import NOT_CONNECTED
from ..client.environment import VARIABLES, KernelEnvironment
from ..client.status import agent_log, ping_summary, render_status, status_rows
from ..errors import RKError

USAGE = "usage: %rkernel status | %rkernel ping | %rkernel log [N] | %rkernel doctor [NAME]"
LOG_LINES = 20
#: The doctor starts an engine of its own (a cold Wolfram kernel takes minutes) and checks
#: each step with its own timeout; this bounds the whole run.
DOCTOR_TIMEOUT = 600.0
DOCTOR_STOP = 10.0  # for the doctor to end what it started after SIGTERM, before SIGKILL


class MagicError(RKError):
    """A ``%rkernel`` line that cannot be answered (bad usage, no connection, doctor failed)."""

    code = "magic.error"


def is_magic(code: str) -> bool:
    return code.lstrip().startswith("%rkernel")


def run_magic(code: str, client: AgentClient | None, start_error: str | None,
              env: KernelEnvironment | None, launched_by: str = "") -> dict[str, str]:
    """The MIME bundle that answers one ``%rkernel ...`` line (the kernel shows it as
    display_data); raises MagicError (bad usage, no connection) or AgentError.
    ``launched_by``: who launched the engine (``RKernel.launched_by``)."""
    words = code.split()
    command = words[1] if len(words) > 1 else ""
    if command == "status":
        path = env.transport_state if env else ""
        return render_status(status_rows(client, start_error, path, launched_by))
    if command == "ping":
        if client is None:
            raise MagicError(f"not connected: {start_error}", code="magic.not-connected")
        return {"text/plain": ping_summary(client)}
    if command == "log" and len(words) <= 3:
        if len(words) == 3 and not words[2].isdigit():
            raise MagicError(USAGE, code="magic.usage")
        return log_bundle(client, env, int(words[2]) if len(words) == 3 else LOG_LINES)
    if command == "doctor" and len(words) <= 3:
        return doctor_bundle(words[2] if len(words) == 3 else None, env)
    raise MagicError(USAGE, code="magic.usage")


def doctor_command(name: str | None, env: KernelEnvironment | None) -> tuple[list[str], str]:
    """(argv, stdin) of the doctor process: kernelspec ``name``'s chain, or (None) the chain
    this kernel was started with, whose launch settings go to its stdin (one channel; never
    argv).  MagicError when this kernel's settings are unknown."""
    doctor = [sys.executable, "-m", "rk_jupyter.cli", "doctor"]
    if name is not None:
        return [*doctor, name, "--mime"], ""
    if env is None or not env.settings:
        raise MagicError("this kernel's launch settings are unknown (no RK_SETTINGS)",
                         "%rkernel doctor NAME checks kernelspec rk-NAME",
                         code="magic.no-settings")
    return [*doctor, "--settings-stdin", "--mime"], json.dumps(env.settings)


def doctor_bundle(name: str | None, env: KernelEnvironment | None) -> dict[str, str]:
    """``%rkernel doctor [NAME]``: the doctor's report (a MIME bundle, text and HTML), from a
    process of its own that opens its own connection and agent, so this kernel's link is not
    disturbed; a failing step is a report, not an error.  MagicError when the doctor process
    gives no report (it crashed, or ran longer than DOCTOR_TIMEOUT)."""
    argv, stdin = doctor_command(name, env)
    shown = " ".join(["rk-jupyter", *argv[3:]])
    by_hand = f"rk-jupyter doctor {name or (env.kernelspec if env else '') or 'NAME'}"
    # The kernel's own RK_* variables are not the doctor's business (its settings come on
    # stdin); RK_KERNELSPEC names the report, RK_LAUNCHED_BY says who launched this kernel.
    told = (VARIABLES["kernelspec"], VARIABLES["launched_by"])
    child_env = {k: v for k, v in os.environ.items() if k not in VARIABLES.values() or k in told}
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(stdin, timeout=DOCTOR_TIMEOUT)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise MagicError(f"{shown} gave no report within {DOCTOR_TIMEOUT:.0f} s",
                         f"run {by_hand} in a terminal: it shows each step as it ends",
                         code="magic.doctor-timeout") from None
    except KeyboardInterrupt:  # an interrupted cell ends the doctor too
        _stop(proc)
        raise MagicError(f"{shown} was interrupted", code="magic.interrupted") from None
    except BaseException:
        _stop(proc)
        raise
    try:
        bundle = json.loads(out)
    except ValueError:
        bundle = None
    if isinstance(bundle, dict) and isinstance(bundle.get("text/plain"), str):
        return {k: v for k, v in bundle.items() if isinstance(v, str)}
    said = " | ".join(line for line in err.strip().splitlines()[-5:]) or "nothing on stderr"
    raise MagicError(f"{shown} ({sys.executable}) exited with status {proc.returncode} "
                     f"without a report: {said}",
                     f"run {by_hand} in a terminal: it shows the whole output",
                     code="magic.doctor-failed")


def _stop(proc: subprocess.Popen) -> None:
    """End the doctor's process group: SIGTERM (it ends its agent), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, DOCTOR_STOP), (signal.SIGKILL, DOCTOR_STOP)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue


def log_bundle(client: AgentClient | None, env: KernelEnvironment | None,
               lines: int) -> dict[str, str]:
    """``%rkernel log [N]``: the last N lines of this launch's log on the Jupyter side (its
    path comes from the provisioner, ``KernelEnvironment.launch_log``) and of the agent's own
    log on its host."""
    sections = []
    path = env.launch_log if env else ""
    if path:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                local = [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
        except OSError as exc:
            local = [f"(cannot read it: {exc.strerror or exc})"]
        sections.append((f"launch log (Jupyter side) {path}", local))
    else:
        sections.append(("launch log (Jupyter side)", ["(unknown: no RK_LAUNCH_LOG)"]))
    try:
        if client is None:
            raise AgentError("not connected", code=NOT_CONNECTED)
        remote, where = agent_log(client, lines)
    except AgentError as exc:
        remote, where = [f"(cannot fetch it: {exc})"], ""
    label = client.endpoint.transport if client else "agent"
    sections.append((f"agent log ({label} side) {where or '(stderr only)'}", remote))
    text = "\n\n".join(f"== {title}\n" + "\n".join(body or ["(empty)"])
                        for title, body in sections)
    return {"text/plain": text}
