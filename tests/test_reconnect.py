"""A dropped link loses nothing: a real agent and engine behind a proxy that resets or
silently cuts the connection in the middle of a cell that prints."""

from __future__ import annotations

import threading
import time

import pytest

from rk_jupyter.client import AgentClient, Collected, Endpoint, LinkDown, run
from rk_jupyter.link.packets import packet

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
    """Prints and the text/plain result of one cell; ``during`` runs ``at`` s into it, on a
    thread of its own while the cell's loop goes on (its failure fails the test)."""
    failures: list[BaseException] = []

    def fire() -> None:
        try:
            during()
        except BaseException as exc:  # handed to the test's thread
            failures.append(exc)

    timer = threading.Timer(at, fire) if during is not None else None
    if timer is not None:
        timer.start()
    out = Collected()
    try:
        run(client, code, out, timeout=timeout)
    finally:
        if timer is not None:
            timer.join(timeout)
    if failures:
        raise failures[0]
    return out.prints, out.text


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
        class TypedAfterADrop(Collected):
            def read_input(self, prompt: str) -> str:
                proxy.reset_connections()  # the answer is sent while the link is down
                return super().read_input(prompt)

        out = TypedAfterADrop(answers=["typed"])
        run(client, 'InputString["? "] <> "!"', out, timeout=30)
        assert out.prompts == ["? "] and out.text == "typed!"
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


def test_a_session_that_ended_is_not_waited_for(agent) -> None:
    """The link drops and comes back, but the session has ended meanwhile (here: closed by
    another client): the agent says so with a code (agent.no-session) and the client gives
    up at once, telling why, instead of retrying for the rest of its grace."""
    shaper = ShapingProxy("127.0.0.1", agent)
    shaper.start()
    client = AgentClient(Endpoint("127.0.0.1", shaper.port, TOKEN, session="ended"),
                         grace=60, heartbeat=0.5)
    client.open(keep=30)
    closer = AgentClient(Endpoint("127.0.0.1", agent, TOKEN))
    try:
        closer.open()
        closer.link.send(0, packet("RKCloseSession", "ended"))
        time.sleep(1)
        shaper.reset_connections()
        dropped = time.monotonic()
        pkt = client.next_packet(30)
        assert isinstance(pkt, LinkDown), pkt
        assert time.monotonic() - dropped < 20, "gave up long before the 60 s grace"
        assert "no session 'ended'" in pkt.reason and "restart the kernel" in pkt.reason
        assert client.reconnecting_since is None and client.reconnects == 0
    finally:
        closer.close()
        shaper.stop()
        client.close()


def test_a_manipulate_change_during_a_drop_waits_and_then_updates(proxy) -> None:
    """The kernel's Manipulate widgets (``kernel.manipulate``) over a link that goes silent:
    the control is moved while nothing passes; once the network is back the view arrives."""
    import contextlib
    import json

    from rk_jupyter.client import Evaluator
    from rk_jupyter.kernel.manipulate import Manipulate, Updates
    from rk_jupyter.link.packets import MANIPULATE_MIME

    client = session_through(proxy, "manipulate")
    updates = None
    try:
        evaluator = Evaluator(client)
        out = Collected()
        evaluator.run("Manipulate[n^2, {n, 1, 10, 1}]", out, timeout=60)
        spec = json.loads(out.results[0][MANIPULATE_MIME])
        views: list[dict[str, str]] = []
        updates = Updates(lambda code, output: evaluator.run(code, output, expression=True),
                          contextlib.nullcontext,
                          lambda parent, display_id, bundle: views.append(bundle))
        live = Manipulate(spec, updates)
        assert live.view["text/plain"] == "1"
        proxy.cut()
        live.controls[0].value = 7  # as a person moves the slider
        time.sleep(3)
        assert client.reconnecting_since is not None, "the drop was noticed"
        assert not views, "nothing came yet"
        proxy.reset_connections()
        proxy.restore()
        deadline = time.monotonic() + 30
        while not views:
            assert time.monotonic() < deadline, "no view after the reconnect"
            time.sleep(0.1)
        assert [view["text/plain"] for view in views] == ["49"]
    finally:
        if updates is not None:
            updates.close()
        client.close()
