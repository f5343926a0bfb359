"""What a front end shows about its link: ``%rkernel status`` rows, ping, the agent's log.

Why here: the Jupyter kernel and the IPython magics both show them, and both only render what
this module reads from the client and the agent (the kernel package is a front end, not a
library for the others).
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

from ..link.connection import Link
from ..link.frames import BulkReceipt, LinkError
from ..link.packets import packet, packet_name
from .agent import NO_ANSWER, UNREACHABLE, AgentClient, AgentError
from .environment import BY_KERNEL, BY_PROVISIONER

LOG_TIMEOUT = 10.0
PINGS = 5


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


#: The "launched by" row, by ``KernelEnvironment.launched_by``.
LAUNCHERS = {BY_PROVISIONER: "the provisioner (rk-ssh-provisioner)",
             BY_KERNEL: "the kernel itself (a client that ignores provisioners: VS Code, "
                        "Positron)",
             "": "nobody (no provisioner, no kernelspec in the kernel's argv)"}


def status_rows(client: AgentClient | None, start_error: str | None,
                transport_state_path: str = "", launched_by: str | None = None,
                ) -> list[tuple[str, str]]:
    """(label, value) pairs of ``%rkernel status``; pings the agent for a fresh RTT.

    ``start_error`` is why there is no client; ``transport_state_path`` the JSON file in
    which the launch side publishes the state of the way to the agent ('' for none);
    ``launched_by`` who launched a kernel's engine (``KernelEnvironment.launched_by``; None, for
    the IPython extension's own connection: no row).
    """
    launcher = [] if launched_by is None else \
        [("launched by", LAUNCHERS.get(launched_by, launched_by))]
    if client is None:
        return [("state", f"not connected: {start_error}"), *launcher]
    ep = client.endpoint
    info: dict[str, Any] = client.engine_info
    rows = [
        ("transport", ep.transport),
        *launcher,
        ("endpoint", ep.description or f"{ep.host}:{ep.port}"),
        ("engine", f"{info.get('name', ep.engine)} {info.get('version', '')}".strip()),
    ]
    try:
        rtt = f"{client.ping() * 1000:.2f} ms"
        state = "connected"
    except AgentError as exc:
        rtt, state = "-", f"down: {exc}"
        if client.reconnecting_since is not None:
            since = time.strftime("%H:%M:%S", time.localtime(client.reconnecting_since))
            state = f"reconnecting since {since}"
    uptime = int(time.time() - client.started)
    rows.append(("state", state))
    if state == "connected":  # else the engine's state could not come now
        rows += engine_rows(client)
    rows += [("uptime", f"{uptime // 3600}h {uptime // 60 % 60:02d}m {uptime % 60:02d}s"),
             ("rtt", rtt)]
    if client.link is not None:
        stats = client.link.stats
        for label, d in (("sent", stats.sent), ("received", stats.received)):
            rows.append((
                label,
                f"{d.packets} packets, {_size(d.raw_bytes)} raw, {_size(d.wire_bytes)} on the wire",
            ))
        raw = stats.sent.raw_bytes + stats.received.raw_bytes
        wire = stats.sent.wire_bytes + stats.received.wire_bytes
        ratio = wire / raw if raw else 1.0
        rows.append(("compression", f"{client.link.codec}, wire/raw = {ratio:.3f}"))
        rows.append(("large outputs", bulk_row(client.link.last_bulk, ep.transport)))
    rows.append(("reconnects", str(client.reconnects)))
    connection, client_name = transport_state(transport_state_path)
    if connection:
        rows.append((f"{ep.transport} connection", connection))
    if client_name:
        rows.append((f"{ep.transport} client", client_name))
    return rows


def bulk_row(receipt: BulkReceipt | None, transport: str) -> str:
    """How the last large output crossed the link: the path throughput it measured and
    whether the agent compressed it (it does when its compressor beats the measured path;
    never on the local transport)."""
    policy = ("never compressed (agent on this machine)" if transport == "local" else
              "compressed when the compressor beats the path, measured by acknowledgements")
    if receipt is None:
        return f"none yet; {policy}"
    how = ("compressed" if receipt.compressed_chunks == receipt.chunks else
           "raw" if not receipt.compressed_chunks else
           f"{receipt.compressed_chunks} of {receipt.chunks} chunks compressed")
    return (f"last {receipt.raw_bytes / 1e6:.2f} MB as {receipt.wire_bytes / 1e6:.2f} MB on "
            f"the wire in {receipt.seconds:.2f} s ({receipt.wire_Bps / 1e6:.2f} MB/s arrived), "
            f"{how}; {policy}")


def engine_rows(client: AgentClient) -> list[tuple[str, str]]:
    """The engine process's rows: its state (a stopped engine says what to do), memory in use
    and limit, and how often it was replaced and why the last one ended."""
    try:
        engine = client.engine_state()
    except AgentError as exc:
        return [("engine state", f"unknown: {exc}")]
    state = str(engine.get("state", "unknown"))
    if state == "stopped":
        pid = engine.get("pid", "?")
        state += (f": not answering while the link is up (kill -CONT {pid} continues it); "
                  "interrupt, then restart the kernel")
    elif state == "ended":
        state += ": the next cell starts a fresh engine"
    rows = [("engine state", state)]
    job = engine.get("slurm")
    if isinstance(job, dict):
        rows.append(("slurm job", _job(job)))
    memory = engine.get("memory")
    limit = engine.get("limit")
    if memory is not None or limit:
        used = _size(memory) if memory is not None else "-"
        rows.append(("engine memory", f"{used} in use, limit {_size(limit) if limit else 'none'}"))
    restarts = int(engine.get("restarts", 0))
    restarted = str(restarts)
    if engine.get("last_end"):
        restarted += f"; the last engine ended: {engine['last_end']}"
    rows.append(("engine restarts", restarted))
    return rows


def _job(job: dict[str, Any]) -> str:
    """The engine's Slurm job as one line: "123 RUNNING on c1, 4:32 left" or
    "124 PENDING (Resources)"."""
    line = f"{job.get('id', '?')} {job.get('state', '(not listed by squeue)')}"
    if job.get("state") == "PENDING":
        line += f" ({job.get('reason', '?')})"
        if job.get("start", "")[:1].isdigit():
            line += f", expected to start at {job['start']}"
        return line
    if job.get("node"):
        line += f" on {job['node']}"
    if job.get("time_left"):
        line += f", {job['time_left']} left"
    return line


def transport_state(path: str) -> tuple[str, str]:
    """The state the provisioner's connection pool publishes (the SSH connection that the
    kernel's link runs through) as one line, and which SSH client carries it ("OpenSSH (its
    own master)", "paramiko"); '' for what there is none of."""
    if not path:
        return "", ""
    try:
        with open(path, encoding="utf-8") as file:
            state = json.load(file)
        since = time.strftime("%H:%M:%S", time.localtime(float(state["since"])))
        count = int(state["reconnects"])
        line = f"{state['state']} since {since}, re-established {count} time{'s' * (count != 1)}"
    except FileNotFoundError:
        return "closed", ""
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unknown ({path}: {exc})", ""
    if state["state"] != "connected" and state.get("last_error"):
        line += f"; last error: {state['last_error']}"
    if state.get("agent_end"):  # its first line: the log tail that follows is in %rkernel log
        line += f"; an agent was replaced after it ended: {state['agent_end'].splitlines()[0]}"
    return line, str(state.get("client", ""))


def agent_end(path: str) -> str:
    """How the last agent that ended on the connection did, as the provisioner's pool
    published it (it replaces such an agent); '' when none did or nothing says."""
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as file:
            return str(json.load(file).get("agent_end", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def render_status(rows: list[tuple[str, str]]) -> dict[str, str]:
    """The rows as a MIME bundle: aligned text, and an HTML table."""
    width = max(len(label) for label, _ in rows)
    text = "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
        f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
        for label, value in rows
    )
    return {
        "text/plain": text,
        "text/html": f"<table class='rk-status'><caption>rk_jupyter link</caption>{body}</table>",
    }


def ping_summary(client: AgentClient) -> str:
    """``%rkernel ping``: min, avg and max of a few round trips to the agent."""
    rtts = [client.ping() * 1000 for _ in range(PINGS)]
    return (f"ping {client.endpoint.description or client.endpoint.transport}: "
            f"min {min(rtts):.2f} ms, avg {sum(rtts) / len(rtts):.2f} ms, "
            f"max {max(rtts):.2f} ms ({PINGS} round trips)")


def agent_log(client: AgentClient, lines: int) -> tuple[list[str], str]:
    """The agent's last ``lines`` log lines and the log's path on the agent's host, read out
    (RKLog) on a link of its own, so that the session's numbered packet stream is not
    disturbed; AgentError if the agent cannot be reached or does not answer in time."""
    ep = client.endpoint
    try:
        link = Link.connect(ep.host, ep.port, ep.token, ep.codec, timeout=LOG_TIMEOUT)
    except LinkError as exc:
        raise AgentError(str(exc), code=UNREACHABLE) from None
    try:
        link.send(0, packet("RKLog", lines))
        deadline = time.monotonic() + LOG_TIMEOUT
        while (remaining := deadline - time.monotonic()) > 0:
            channel, reply = link.recv(timeout=remaining)
            if channel == 0 and packet_name(reply) == "RKLogLines" and len(reply.args) == 2:
                body, where = reply.args
                return [str(line) for line in body], str(where)
    except LinkError as exc:
        raise AgentError(f"the agent did not send its log: {exc}", code=NO_ANSWER) from None
    finally:
        link.close()
    raise AgentError(f"the agent did not send its log within {LOG_TIMEOUT:g} s", code=NO_ANSWER)
