"""Named sessions on a real agent with real Mathics3 engines: open, detach, attach, expire.

The provisioner opens a kernel's session before the kernel process exists and the kernel
attaches to it; these are the agent-side rules that make that safe."""

from __future__ import annotations

import os
import time

import pytest

from rk_jupyter.client import AgentClient, AgentError, Collected, Endpoint, run
from rk_jupyter.link.packets import NO_SESSION_ERROR, SESSION_EXISTS_ERROR, packet

from kernel_helpers import engines_of, local_agent, wait_gone

TOKEN = b"session-token-0123456789abcdef"


@pytest.fixture(scope="module")
def agent():
    with local_agent(TOKEN) as port_and_pid:
        yield port_and_pid


def client(port: int, session: str = "", attach: bool = False) -> AgentClient:
    return AgentClient(Endpoint("127.0.0.1", port, TOKEN, session=session, attach=attach))


def evaluate(c: AgentClient, code: str) -> str | None:
    """The text/plain result of one cell (None for Null)."""
    out = Collected()
    run(c, code, out, timeout=30)
    return out.text


def test_a_kept_session_survives_its_link_and_is_attached_again(agent) -> None:
    port, agent_pid = agent
    first = client(port, "kernel-a")
    info = first.open(keep=30)
    assert evaluate(first, "kept = 41;") is None
    first.close(end_session=False)
    engines = engines_of(agent_pid)
    second = client(port, "kernel-a", attach=True)
    assert second.open() == info
    assert evaluate(second, "kept + 1") == "42"
    second.close()
    assert wait_gone(engines) == [], "closing the attached link (keep 0) ends the engine"


def test_attaching_to_an_unknown_session_names_the_cause(agent) -> None:
    port, _ = agent
    with pytest.raises(AgentError, match="no session 'nobody'") as failure:
        client(port, "nobody", attach=True).open(timeout=10)
    assert failure.value.code == NO_SESSION_ERROR
    assert "restart the kernel" in str(failure.value)


def test_a_session_nobody_attaches_to_expires(agent) -> None:
    port, agent_pid = agent
    before = set(engines_of(agent_pid))
    orphan = client(port, "kernel-b")
    orphan.open(keep=1)
    engine = [p for p in engines_of(agent_pid) if p not in before]
    assert engine
    orphan.close(end_session=False)
    assert wait_gone(engine, timeout=15) == []
    with pytest.raises(AgentError, match="no session") as failure:
        client(port, "kernel-b", attach=True).open(timeout=10)
    assert failure.value.code == NO_SESSION_ERROR


def test_close_session_ends_a_detached_session(agent) -> None:
    port, agent_pid = agent
    before = set(engines_of(agent_pid))
    c = client(port, "kernel-c")
    c.open(keep=300)
    engine = [p for p in engines_of(agent_pid) if p not in before]
    c.close(end_session=False)
    time.sleep(0.5)
    assert all(os.path.exists(f"/proc/{p}") for p in engine), "kept while detached"
    closer = client(port)
    closer.open()
    closer.link.send(0, packet("RKCloseSession", "kernel-c"))
    assert wait_gone(engine, timeout=15) == []
    closer.close()


def test_a_session_name_is_unique_while_it_lives(agent) -> None:
    port, _ = agent
    owner = client(port, "kernel-d")
    owner.open()
    with pytest.raises(AgentError, match="exists already") as failure:
        client(port, "kernel-d").open(timeout=10)
    assert failure.value.code == SESSION_EXISTS_ERROR
    owner.close()
