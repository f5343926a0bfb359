"""Tests of the SSH test bed itself: real sshd, real ssh/paramiko, real sockets (no mocks)."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from sshbed import ShapingProxy, SSHBed, SSHBedError

# Registers the fixtures when tests/conftest.py has not loaded them (plugin or star import).
if "conftest_sshbed" not in sys.modules:
    pytest_plugins = ["conftest_sshbed"]

paramiko = pytest.importorskip("paramiko")


@pytest.fixture(scope="module", autouse=True)
def _report_mode(sshbed: SSHBed) -> None:
    print(f"\nsshbed mode: {sshbed.mode} ({sshbed!r}, started in {sshbed.startup_seconds:.2f}s)")


# -- ssh / host keys / accounts -----------------------------------------------------------


def test_ssh_with_key_and_strict_host_checking(sshbed: SSHBed) -> None:
    argv = [
        "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={sshbed.known_hosts}", "-i", sshbed.key_file,
        "-p", str(sshbed.port), f"{sshbed.user}@{sshbed.host}", "echo", "ok",
    ]  # fmt: skip
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_ssh_config_aliases(sshbed: SSHBed) -> None:
    for alias, user in [(sshbed.host_alias, sshbed.user)] + [
        (f"{sshbed.host_alias}-{name}", name) for name in sshbed.accounts
    ]:
        res = subprocess.run(
            ["ssh", "-F", sshbed.ssh_config, alias, "id", "-un"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == user


def test_auth_is_logged(sshbed: SSHBed) -> None:
    pattern = rf"Accepted publickey for {sshbed.user} "
    before = sshbed.count_log(pattern)
    assert sshbed.ssh("true").returncode == 0
    assert sshbed.wait_for_log(pattern, before + 1, timeout=5)


def test_unauthorized_key_is_refused(sshbed: SSHBed) -> None:
    res = sshbed.ssh("echo ok", key_file=sshbed.unauthorized_key_file)
    assert res.returncode == 255
    assert "ok" not in res.stdout
    assert "Permission denied (publickey)" in res.stderr


def test_wrong_known_hosts_is_refused(sshbed: SSHBed) -> None:
    res = sshbed.ssh("echo ok", known_hosts=sshbed.wrong_known_hosts)
    assert res.returncode == 255
    assert "ok" not in res.stdout
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in res.stderr


def test_paramiko_connects_with_key(sshbed: SSHBed) -> None:
    client = sshbed.paramiko_client()
    try:
        transport = client.get_transport()
        assert transport.get_remote_server_key() == sshbed.host_pkey()
        _, stdout, _ = client.exec_command("id -un", timeout=10)
        assert stdout.read().decode().strip() == sshbed.user
        sftp = client.open_sftp()
        assert sftp.normalize(".") == sshbed.account.home
        sftp.close()
    finally:
        client.close()


def test_paramiko_rejects_changed_host_key(sshbed: SSHBed) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(sshbed.wrong_known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect(
            sshbed.host, port=sshbed.port, username=sshbed.user, key_filename=sshbed.key_file,
            look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=10,
        )  # fmt: skip
    client.close()


def test_port_forwarding_reaches_a_port_that_only_listens_on_the_remote(sshbed: SSHBed) -> None:
    """The product's premise: everything else on the remote is reached through ssh only."""
    listener = sshbed.listen_in_namespace(0, host="127.0.0.1")
    client = sshbed.paramiko_client()
    try:
        chan = client.get_transport().open_channel(
            "direct-tcpip", ("127.0.0.1", listener.port), ("127.0.0.1", 0), timeout=10
        )
        chan.settimeout(10)
        assert chan.recv(100) == b"hello\n"
        chan.close()
    finally:
        client.close()
        listener.stop()


def test_firewall_drops_other_ports(sshbed: SSHBed) -> None:
    if sshbed.mode != "netns":
        pytest.skip(f"no firewall in {sshbed.mode} mode: {sshbed.fallback_reason}")
    check = sshbed.check_firewall(timeout=1.0)
    print(check)
    assert check.inside == "open"
    assert check.outside == "timeout"  # dropped, not refused
    assert check.ssh_outside == "open"
    assert check.blocked


def test_run_remote_runs_as_the_account_with_the_test_python(sshbed: SSHBed) -> None:
    for name, acc in sshbed.accounts.items():
        res = sshbed.run_remote("id -un; id -u; echo $HOME; pwd", user=name)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == [name, str(acc.uid), acc.home, acc.home]
    res = sshbed.run_remote(f"{sshbed.remote_python} -c 'import sys; print(sys.version)'")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == sys.version
    res = sshbed.run_remote(f"{sshbed.remote_python} -c 'import paramiko; print(\"imported\")'")
    assert res.stdout.strip() == "imported", res.stderr


def test_remote_python_over_ssh(sshbed: SSHBed) -> None:
    res = sshbed.ssh(f"{sshbed.remote_python} -c 'import os; print(os.getuid())'")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(sshbed.account.uid)


def test_remote_processes_lists_and_kills(sshbed: SSHBed) -> None:
    marker = f"rkjmarker{os.getpid()}"
    proc = sshbed.popen_remote(f"exec sleep 3{os.getpid() % 7}.{len(marker)} # {marker}")
    try:
        pattern = rf"^sleep 3{os.getpid() % 7}\.{len(marker)}$"
        deadline = time.monotonic() + 5
        found: list[tuple[int, str]] = []
        while not found and time.monotonic() < deadline:
            found = sshbed.remote_processes(pattern)
            time.sleep(0.05)
        assert len(found) == 1
        assert found[0][0] == proc.pid  # setpriv/env/sh exec: the Popen is the process
        assert sshbed.kill_remote_processes(pattern) == 1
        proc.wait(timeout=5)
        assert sshbed.remote_processes(pattern) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_established_ssh_connections_counts_an_open_connection(sshbed: SSHBed) -> None:
    base = sshbed.wait_established(sshbed.established_ssh_connections(), timeout=0)
    client = sshbed.paramiko_client()
    try:
        assert sshbed.wait_established(base + 1, timeout=5) == base + 1
    finally:
        client.close()
    assert sshbed.wait_established(base, timeout=5) == base


# -- shaping proxy (generic, against local servers) ------------------------------------------


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A local TCP echo server; with b"SINK n\\n" it instead reads n bytes and answers b"x"."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        conn.settimeout(30)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            try:
                first = conn.recv(65536)
                if first.startswith(b"SINK "):
                    head, _, rest = first.partition(b"\n")
                    remaining = int(head.split()[1]) - len(rest)
                    while remaining > 0:
                        data = conn.recv(65536)
                        if not data:
                            return
                        remaining -= len(data)
                    conn.sendall(b"x")
                    return
                data = first
                while data:
                    conn.sendall(data)
                    data = conn.recv(65536)
            except OSError:
                return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()
    stop.set()
    thread.join(timeout=5)
    srv.close()


@pytest.fixture
def make_proxy(echo_server: tuple[str, int]) -> Iterator[Callable[..., ShapingProxy]]:
    proxies: list[ShapingProxy] = []

    def make(delay_ms: float = 0, rate_bps: float | None = None) -> ShapingProxy:
        proxy = ShapingProxy(*echo_server, delay_ms=delay_ms, rate_bps=rate_bps).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


def _connect(proxy: ShapingProxy) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _round_trip(sock: socket.socket, payload: bytes = b"p") -> float:
    t0 = time.monotonic()
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        got += chunk
    return time.monotonic() - t0


def test_proxy_adds_delay_in_each_direction(make_proxy: Callable[..., ShapingProxy]) -> None:
    delay_ms = 50
    proxy = make_proxy(delay_ms=delay_ms)
    with _connect(proxy) as sock:
        _round_trip(sock)  # the first one also pays for the emulated handshake
        rtts = [_round_trip(sock) for _ in range(5)]
    rtt = statistics.median(rtts)
    print(f"rtt {rtt * 1000:.1f} ms for delay {delay_ms} ms")
    assert 2 * delay_ms / 1000 * 0.95 <= rtt <= 2 * delay_ms / 1000 + 0.04


def test_proxy_without_shaping_is_fast(make_proxy: Callable[..., ShapingProxy]) -> None:
    proxy = make_proxy()
    with _connect(proxy) as sock:
        rtt = statistics.median(_round_trip(sock) for _ in range(5))
    assert rtt < 0.02


def _timed_transfer(proxy: ShapingProxy, nbytes: int) -> float:
    """Seconds from first byte sent until the sink has received all ``nbytes`` and acked."""
    payload = b"SINK %d\n" % nbytes + os.urandom(nbytes)
    with _connect(proxy) as sock:
        sock.settimeout(30)
        t0 = time.monotonic()
        sock.sendall(payload)
        assert sock.recv(1) == b"x"
        return time.monotonic() - t0


def test_proxy_limits_throughput(make_proxy: Callable[..., ShapingProxy]) -> None:
    proxy = make_proxy(delay_ms=10, rate_bps=2_000_000)
    elapsed = _timed_transfer(proxy, 500_000)
    print(f"500 kB at 2 Mbit/s: {elapsed:.2f} s")
    assert 1.8 <= elapsed <= 2.8  # 2.0 s of wire time + a few delays


def test_proxy_is_a_pipe_not_stop_and_wait(make_proxy: Callable[..., ShapingProxy]) -> None:
    """High delay must not cap throughput: 500 kB at 20 Mbit/s with 100 ms one-way delay."""
    proxy = make_proxy(delay_ms=100, rate_bps=20_000_000)
    elapsed = _timed_transfer(proxy, 500_000)
    print(f"500 kB at 20 Mbit/s, 100 ms delay: {elapsed:.2f} s")
    # 0.2 s handshake + 0.2 s wire + 0.1 s last byte + 0.1 s ack; stop-and-wait: minutes.
    assert 0.55 <= elapsed <= 1.2


def test_proxy_cut_and_restore(make_proxy: Callable[..., ShapingProxy]) -> None:
    proxy = make_proxy(delay_ms=5)
    with _connect(proxy) as sock:
        assert _round_trip(sock, b"before") < 1
        proxy.cut()
        assert proxy.is_cut
        sock.sendall(b"during")
        sock.settimeout(0.7)
        with pytest.raises((TimeoutError, socket.timeout)):
            sock.recv(100)
        assert proxy.active_connections == 1  # kept open: no FIN, no RST
        # A connection opened while cut is accepted locally but gets no service.
        with _connect(proxy) as late:
            late.settimeout(0.5)
            late.sendall(b"late")
            with pytest.raises((TimeoutError, socket.timeout)):
                late.recv(100)
            proxy.restore()
            late.settimeout(5)
            assert late.recv(100) == b"late"
        sock.settimeout(5)
        assert sock.recv(100) == b"during"
        assert _round_trip(sock, b"after") < 1


def test_proxy_reset_connections(make_proxy: Callable[..., ShapingProxy]) -> None:
    proxy = make_proxy()
    with _connect(proxy) as sock:
        _round_trip(sock)
        assert proxy.reset_connections() == 1
        sock.settimeout(5)
        with pytest.raises((ConnectionResetError, AssertionError)):
            _round_trip(sock)  # RST, or EOF ("connection closed") if the RST raced the read


def test_proxy_set_shape_on_the_fly(make_proxy: Callable[..., ShapingProxy]) -> None:
    proxy = make_proxy(delay_ms=0)
    with _connect(proxy) as sock:
        assert _round_trip(sock) < 0.02
        proxy.set_shape(delay_ms=40)
        _round_trip(sock)
        assert _round_trip(sock) >= 0.075


# -- shaping proxy in front of the bed ----------------------------------------------------------


def test_ssh_through_proxy_with_strict_host_key(
    sshbed: SSHBed, sshbed_proxy: Callable[..., ShapingProxy]
) -> None:
    fast = time.monotonic()
    assert sshbed.ssh("echo ok").stdout.strip() == "ok"
    fast = time.monotonic() - fast
    proxy = sshbed_proxy(delay_ms=50, rate_bps=2_000_000)
    t0 = time.monotonic()
    res = sshbed.ssh("echo ok", host=proxy.host, port=proxy.port)
    slow = time.monotonic() - t0
    print(f"ssh echo ok: direct {fast:.2f} s, via 100 ms RTT proxy {slow:.2f} s")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
    assert proxy.connections_total == 1
    assert proxy.bytes_up > 0 and proxy.bytes_down > 0
    assert slow >= fast + 0.4  # an ssh login needs several round trips
    wrong = sshbed.ssh("echo ok", host=proxy.host, port=proxy.port,
                       known_hosts=sshbed.wrong_known_hosts)  # fmt: skip
    assert wrong.returncode == 255


def test_cut_keeps_ssh_connection_open(
    sshbed: SSHBed, sshbed_proxy: Callable[..., ShapingProxy]
) -> None:
    proxy = sshbed_proxy(delay_ms=5, rate_bps=None)
    base = sshbed.established_ssh_connections()
    client = sshbed.paramiko_client(hostname=proxy.host, port=proxy.port)
    try:
        assert sshbed.wait_established(base + 1) == base + 1
        chan = client.get_transport().open_session(timeout=10)
        chan.exec_command("read line; echo got-$line")
        proxy.cut()
        chan.settimeout(1.0)
        chan.sendall(b"x\n")
        with pytest.raises((TimeoutError, socket.timeout)):
            chan.recv(100)
        assert sshbed.established_ssh_connections() == base + 1
        proxy.restore()
        chan.settimeout(10)
        assert chan.recv(100) == b"got-x\n"
    finally:
        proxy.restore()
        client.close()


# -- other modes and teardown ---------------------------------------------------------------


def test_loopback_mode(sshbed_factory: Callable[..., SSHBed]) -> None:
    bed = sshbed_factory(mode="loopback", users=["rkjtest"])
    print(f"loopback bed: {bed!r}")
    assert bed.mode == "loopback" and bed.host == "127.0.0.1" and bed.port != 22
    res = bed.ssh("id -un")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "rkjtest"
    client = bed.paramiko_client()
    try:
        assert bed.wait_established(1) == 1
    finally:
        client.close()
    with pytest.raises(SSHBedError):
        bed.check_firewall()


def test_teardown_leaves_nothing_behind() -> None:
    bed = SSHBed(users=["rkjtest"])
    bed.start()
    try:
        assert bed.startup_seconds < 5
        print(f"{bed.mode} bed started in {bed.startup_seconds:.2f}s")
        sleeper = bed.popen_remote("exec sleep 300")
        session = subprocess.Popen(bed.ssh_argv("sleep 300"), stdin=subprocess.DEVNULL)
        assert bed.wait_established(1) == 1
        deadline = time.monotonic() + 5
        while len(bed.remote_processes(r"^sleep 300$")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [pid for pid, _ in bed.remote_processes(r"^sleep 300$")]
        assert len(pids) == 2
        ns, tmpdir, sshd_pid = bed.ns, bed.tmpdir, bed.sshd_pid
    finally:
        t0 = time.monotonic()
        bed.stop()
        stop_seconds = time.monotonic() - t0
    print(f"stopped in {stop_seconds:.2f}s")
    session.wait(timeout=10)
    sleeper.wait(timeout=10)
    for pid in [*pids, sshd_pid]:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid), pid
    assert not os.path.exists(tmpdir)
    if ns is not None:
        assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                        text=True, timeout=10).stdout  # fmt: skip
        assert bed.veth_host not in subprocess.run(["ip", "-o", "link"], capture_output=True,
                                                   text=True, timeout=10).stdout  # fmt: skip
    bed.stop()  # idempotent


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
