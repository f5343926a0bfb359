"""The ports rk_jupyter listens on in the Jupyter process come from jupyter_client's port cache
(``provisioning.ports``), so that no kernel of the same process is given one of them (issue
22: one of 20 parallel starts failed with "Address already in use")."""

from __future__ import annotations

import asyncio
import socket
import time

from jupyter_client.connect import LocalPortCache
from jupyter_client.manager import KernelManager

from rk_jupyter.provisioning import ports
from rk_jupyter.provisioning.ssh.listener import LocalForward


def cached() -> set[int]:
    return LocalPortCache.instance().currently_used_ports


def test_a_reserved_port_is_never_given_to_a_kernel_until_released() -> None:
    port = ports.reserve()
    try:
        assert port in cached()
        for _ in range(200):  # jupyter_client's own choice of kernel ports skips it
            other = LocalPortCache.instance().find_available_port(ports.HOST)
            LocalPortCache.instance().return_port(other)
            assert other != port
    finally:
        ports.release(port)
    assert port not in cached()


def test_the_forward_listener_holds_a_cached_port_while_it_listens() -> None:
    forward = LocalForward(None, ("127.0.0.1", 9), 1.0)
    try:
        assert forward.port in cached()
        with socket.create_connection(("127.0.0.1", forward.port), timeout=5):
            pass  # it listens on that very port
    finally:
        forward.close()
    assert forward.port not in cached()


def test_the_local_agent_listens_on_a_cached_port_beside_its_kernels(rk_local: str) -> None:
    km = KernelManager(kernel_name=rk_local)
    km.start_kernel()
    try:
        transport = km.provisioner.transport
        agent_port = transport.port
        kernel_ports = {km.shell_port, km.iopub_port, km.stdin_port, km.hb_port,
                        km.control_port}
        assert agent_port in cached() and agent_port not in kernel_ports
        assert kernel_ports <= cached()
        # None from the range outgoing connections take their source ports from.
        low = ports.ephemeral_range()[0]
        assert all(port < low for port in (*kernel_ports, agent_port)), kernel_ports
        with socket.create_connection(("127.0.0.1", agent_port), timeout=5):
            pass  # the agent listens there
    finally:
        km.shutdown_kernel(now=True)
    assert agent_port not in cached() and not kernel_ports & cached()


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_a_launch_returns_once_the_kernel_listens_and_so_does_a_restart(rk_local: str) -> None:
    """jupyter_client's start_kernel and restart_kernel return with the kernel process bound
    to all five of its ports, so that a client's first connects succeed (a refused ZeroMQ
    connect is retried only 100 ms later).  Checked at once, with no retry."""
    km = KernelManager(kernel_name=rk_local)
    km.start_kernel()
    try:
        kernel_ports = [km.shell_port, km.iopub_port, km.stdin_port, km.hb_port,
                        km.control_port]
        assert [port for port in kernel_ports if not _connects(port)] == []
        km.restart_kernel(now=False)
        assert [port for port in kernel_ports if not _connects(port)] == []
    finally:
        km.shutdown_kernel(now=True)


def test_wait_listening_ends_on_all_listening_a_gone_process_or_the_timeout() -> None:
    with socket.socket() as bound, socket.socket() as unbound:
        bound.bind(("127.0.0.1", 0))
        bound.listen()
        unbound.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
        up, down = bound.getsockname()[1], unbound.getsockname()[1]
        assert asyncio.run(ports.wait_listening("127.0.0.1", [up, 0], lambda: True))
        started = time.monotonic()
        assert not asyncio.run(ports.wait_listening("", [up, down], lambda: False, 10))
        assert time.monotonic() - started < 1  # a gone process: no waiting
        assert not asyncio.run(ports.wait_listening("0.0.0.0", [up, down], lambda: True, 0.3))
        assert 0.3 <= time.monotonic() - started < 3
