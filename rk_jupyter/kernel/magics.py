"""``%rkernel`` lines in a cell: link status and ping, rendered for text and HTML front ends."""

from __future__ import annotations

import html
import json
import os
import time
from collections import deque
from typing import Any

from ..client import AgentClient, AgentError
from ..link.connection import Link
from ..link.frames import LinkError
from ..link.packets import packet, packet_name

USAGE = "usage: %rkernel status | %rkernel ping | %rkernel log [N] | %rkernel doctor [NAME]"
LOG_LINES = 20
LOG_TIMEOUT = 10.0


def is_magic(code: str) -> bool:
    return code.lstrip().startswith("%rkernel")


def run_magic(code: str, client: AgentClient | None, start_error: str | None) -> dict[str, str]:
    """The MIME bundle that answers one ``%rkernel ...`` line; raises ValueError on bad usage."""
    words = code.split()
    command = words[1] if len(words) > 1 else ""
    if command == "status":
        return render_status(status_rows(client, start_error))
    if command == "ping":
        if client is None:
            raise ValueError(f"not connected: {start_error}")
        rtts = [client.ping() * 1000 for _ in range(5)]
        text = (f"ping {client.endpoint.description or client.endpoint.transport}: "
                f"min {min(rtts):.2f} ms, avg {sum(rtts) / len(rtts):.2f} ms, "
                f"max {max(rtts):.2f} ms (5 round trips)")
        return {"text/plain": text}
    if command == "log" and len(words) <= 3:
        if len(words) == 3 and not words[2].isdigit():
            raise ValueError(USAGE)
        return log_bundle(client, int(words[2]) if len(words) == 3 else LOG_LINES)
    if command == "doctor" and len(words) <= 3:
        return doctor_bundle(words[2] if len(words) == 3 else None)
    raise ValueError(USAGE)


def doctor_bundle(name: str | None) -> dict[str, str]:
    """``%rkernel doctor [NAME]``: the chain this kernel was started with (the provisioner's
    settings in RK_SETTINGS), or kernelspec NAME's, checked step by step with a connection
    and an agent of the doctor's own, so this kernel's link is not disturbed."""
    from .. import doctor  # paramiko and the ssh modules only when asked

    if name is None:
        settings = os.environ.get("RK_SETTINGS")
        if not settings:
            raise ValueError("this kernel's launch settings are unknown (no RK_SETTINGS); "
                             "%rkernel doctor NAME checks kernelspec rk-NAME")
        name = os.environ.get("RK_KERNELSPEC") or "this kernel"
        checkup = doctor.Checkup(name, json.loads(settings))
    else:
        checkup = doctor.Checkup(name)
    steps = checkup.run()
    title = f"rk_jupyter doctor: {name}"
    return {"text/plain": doctor.render_text(title, steps),
            "text/html": doctor.render_html(title, steps)}


def log_bundle(client: AgentClient | None, lines: int) -> dict[str, str]:
    """``%rkernel log [N]``: the last N lines of this launch's log on the Jupyter side (its
    path comes from the provisioner in RK_LAUNCH_LOG) and of the agent's own log on its
    host, which the agent reads out (RKLog) on a link of its own, so that the session's
    numbered packet stream is not disturbed."""
    sections = []
    path = os.environ.get("RK_LAUNCH_LOG", "")
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
        remote, where = agent_log(client, lines)
    except AgentError as exc:
        remote, where = [f"(cannot fetch it: {exc})"], ""
    label = client.endpoint.transport if client else "agent"
    sections.append((f"agent log ({label} side) {where or '(stderr only)'}", remote))
    text = "\n\n".join(f"== {title}\n" + "\n".join(body or ["(empty)"])
                        for title, body in sections)
    return {"text/plain": text}


def agent_log(client: AgentClient | None, lines: int) -> tuple[list[str], str]:
    """The agent's last ``lines`` log lines and the log's path on the agent's host."""
    if client is None:
        raise AgentError("not connected")
    ep = client.endpoint
    try:
        link = Link.connect(ep.host, ep.port, ep.token, ep.codec, timeout=LOG_TIMEOUT)
    except LinkError as exc:
        raise AgentError(str(exc)) from None
    try:
        link.send(0, packet("RKLog", lines))
        deadline = time.monotonic() + LOG_TIMEOUT
        while (remaining := deadline - time.monotonic()) > 0:
            channel, reply = link.recv(timeout=remaining)
            if channel == 0 and packet_name(reply) == "RKLogLines" and len(reply.args) == 2:
                body, where = reply.args
                return [str(line) for line in body], str(where)
    except LinkError as exc:
        raise AgentError(f"the agent did not send its log: {exc}") from None
    finally:
        link.close()
    raise AgentError(f"the agent did not send its log within {LOG_TIMEOUT:g} s")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def status_rows(client: AgentClient | None, start_error: str | None) -> list[tuple[str, str]]:
    """(label, value) pairs of ``%rkernel status``; pings the agent for a fresh RTT."""
    if client is None:
        return [("state", f"not connected: {start_error}")]
    ep = client.endpoint
    info: dict[str, Any] = client.engine_info
    rows = [
        ("transport", ep.transport),
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
    rows += [("state", state), ("uptime", f"{uptime // 3600}h {uptime // 60 % 60:02d}m "
                                           f"{uptime % 60:02d}s"), ("rtt", rtt)]
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
    rows.append(("reconnects", str(client.reconnects)))
    if connection := transport_state(os.environ.get("RK_TRANSPORT_STATE", "")):
        rows.append((f"{ep.transport} connection", connection))
    return rows


def transport_state(path: str) -> str:
    """The state the provisioner's connection pool publishes (the SSH connection that the
    kernel's link runs through), as one line; '' when there is none."""
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as file:
            state = json.load(file)
        since = time.strftime("%H:%M:%S", time.localtime(float(state["since"])))
        count = int(state["reconnects"])
        line = f"{state['state']} since {since}, re-established {count} time{'s' * (count != 1)}"
    except FileNotFoundError:
        return "closed"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unknown ({path}: {exc})"
    if state["state"] != "connected" and state.get("last_error"):
        line += f"; last error: {state['last_error']}"
    return line


def render_status(rows: list[tuple[str, str]]) -> dict[str, str]:
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
