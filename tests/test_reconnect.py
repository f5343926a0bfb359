"""A dropped link loses nothing: a real agent and engine behind a proxy that resets or
silently cuts the connection in the middle of a cell that prints."""

from __future__ import annotations

import time

import pytest

from rk_jupyter.client import AgentClient, Endpoint, LinkDown
from rk_jupyter.link.packets import packet, packet_name

from kernel_helpers import local_agent
from sshbed import ShapingProxy

TOKEN = b"reconnect-token-0123456789abcdef"


@pytest.fixture(scope="module")
def agent():
    with local_agent(TOKEN) as (port, _):
        yield port


@pytest.fixture()
def proxy(agent):
    shaper = ShapingProxy("127.0.0.1", agent)
    shaper.start()
    yield shaper
    shaper.stop()


def session_through(proxy: ShapingProxy, name: str) -> AgentClient:
    client = AgentClient(Endpoint("127.0.0.1", proxy.port, TOKEN, session=name),
                         grace=30, heartbeat=0.5)
    client.open(keep=30)
    return client


def run_cell(client: AgentClient, code: str, during=None, at: float = 1.5,
             timeout: float = 60) -> tuple[list[str], str | None]:
    """Prints and the text/plain result of one cell; ``during`` runs ``at`` s into it."""
    client.send(packet("EnterTextPacket", code))
    prints, result = [], None
    started, fired = time.monotonic(), during is None
    deadline = started + timeout
    while time.monotonic() < deadline:
        if not fired and time.monotonic() - started >= at:
            during()
            fired = True
        pkt = client.next_packet(0.1)
        assert not isinstance(pkt, LinkDown), pkt.reason
        name = packet_name(pkt)
        if name == "TextPacket":
            prints.append(pkt.args[0])
        elif name == "ReturnPacket":
            result = pkt.args[0]["text/plain"]
        elif name == "InputNamePacket":
            return prints, result
    raise AssertionError(f"the cell did not finish within {timeout} s; got {prints}")


COUNTING = 'Do[Print[i]; Pause[0.15], {i, 1, 25}]; "done"'
EXPECTED = [str(i) for i in range(1, 26)]


def test_reset_connection_mid_cell_loses_and_repeats_nothing(proxy) -> None:
    client = session_through(proxy, "reset")
    try:
        run_cell(client, "kept = 7;")
        prints, result = run_cell(client, COUNTING, during=proxy.reset_connections)
        assert prints == EXPECTED and result == "done"
        assert client.reconnects == 1
        assert run_cell(client, "kept * 6")[1] == "42"
    finally:
        client.close()


def test_silent_network_is_noticed_and_survived(proxy) -> None:
    """Nothing moves for 3 s (no RST): the heartbeat gives up on the link, the reader keeps
    trying, and once the network is back the cell's output arrives complete, in order."""
    client = session_through(proxy, "silent")
    try:
        def cut_for_a_while() -> None:
            proxy.cut()
            time.sleep(3)
            assert client.reconnecting_since is not None, "the drop was noticed"
            proxy.reset_connections()
            proxy.restore()

        prints, result = run_cell(client, COUNTING, during=cut_for_a_while)
        assert prints == EXPECTED and result == "done"
        assert client.reconnects >= 1 and client.reconnecting_since is None
    finally:
        client.close()


def test_input_typed_while_the_link_is_down_is_delivered(proxy) -> None:
    """The kernel's side keeps its packets too: what it sends during a drop arrives after."""
    client = session_through(proxy, "upward")
    try:
        client.send(packet("EnterTextPacket", 'InputString["? "] <> "!"'))
        pkt = client.next_packet(30)
        assert packet_name(pkt) == "InputStringPacket"
        proxy.reset_connections()
        client.send(packet("TextPacket", "typed"))
        while packet_name(pkt := client.next_packet(30)) != "ReturnPacket":
            assert pkt is not None and not isinstance(pkt, LinkDown)
        assert pkt.args[0]["text/plain"] == "typed!"
        assert client.reconnects == 1
    finally:
        client.close()


def test_after_the_grace_the_session_is_gone(agent) -> None:
    """An agent keeps a cut-off session only for its grace; the kernel then reports why."""
    shaper = ShapingProxy("127.0.0.1", agent)
    shaper.start()
    client = AgentClient(Endpoint("127.0.0.1", shaper.port, TOKEN, session="short"),
                         grace=3, heartbeat=0.5)
    client.open(keep=1)
    try:
        shaper.cut()
        shaper.reset_connections()
        pkt = client.next_packet(20)
        assert isinstance(pkt, LinkDown)
        assert client.down
    finally:
        shaper.stop()
        client.close()
