"""Another user on the same machine gets nothing (issue 21): the agent cannot be locked out by
a flood of connections from a second Unix user, a link works on descriptors >= 1024, refused
handshakes cannot flood the log, logs are private, and a kernel started from a directory
someone else planted ``json.py`` in does not run it."""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rk_jupyter import logfiles
from rk_jupyter.agent.main import READY_PREFIX
from rk_jupyter.link.connection import Link
from rk_jupyter.link.frames import FrameWriter
from rk_jupyter.link.handshake import PREAMBLE, PROTOCOL_VERSION
from rk_jupyter.link.packets import packet, packet_name

TOKEN = secrets.token_urlsafe(32).encode()
ATTACKER_FILES = 1024  # the second user's RLIMIT_NOFILE (a common default)

# Run as the second user with its own interpreter (stdlib only): hold as many half-open
# connections to PORT as 1024 descriptors allow, or (with a payload on stdin) send that many
# refused handshakes.  Prints how many connections it made, then waits for stdin to close.
ATTACKER = r"""
import resource, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (FILES, FILES))
port, count, payload = int(sys.argv[1]), int(sys.argv[2]), sys.stdin.buffer.read(int(sys.argv[3]))
held, made = [], 0
for _ in range(count):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        continue
    made += 1
    if payload:
        try:
            s.sendall(payload)
            while s.recv(65536):
                pass
        except OSError:
            pass
        s.close()
    else:
        held.append(s)
print(made, flush=True)
sys.stdin.buffer.read()
""".replace("FILES", str(ATTACKER_FILES))


@pytest.fixture(scope="module")
def second_user() -> Iterator[str]:
    """A Unix account of its own for the attacker; removed with its home afterwards."""
    if os.geteuid() != 0:
        pytest.fail("these tests create a second Unix user: run them as root")
    name = f"rkjsec{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True, check=True)


@contextmanager
def agent_process(tmp_path: Path, files: int) -> Iterator[tuple[int, int, Path]]:
    """A real agent (``python -m rk_jupyter.agent``) limited to ``files`` descriptors and
    logging to a file: yields (port, pid, log path); ends it through its lifeline."""
    log = tmp_path / "agent.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    env = dict(os.environ, RK_AGENT_TOKEN=TOKEN.decode())
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "rk_jupyter.agent", "--exit-on-stdin-eof",
         "--log-file", str(log)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, preexec_fn=limit)
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith(READY_PREFIX), line
        yield json.loads(line[len(READY_PREFIX):])["port"], proc.pid, log
    finally:
        if not ended(proc):
            raise AssertionError("the agent did not end within 20 s of its stdin closing")


def ended(proc: subprocess.Popen) -> bool:
    """Close ``proc``'s stdin (its cue to end) and wait for it; kill it after 20 s.  False
    if it had to be killed."""
    proc.stdin.close()
    try:
        proc.wait(20)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return False


@contextmanager
def attacker(user: str, port: int, count: int, payload: bytes = b"") -> Iterator[int]:
    """The attack script run as ``user``; yields once it has made its connections (their
    number), and ends it on exit."""
    import pwd
    account = pwd.getpwnam(user)
    # setpriv execs (runuser would stay as a parent): the attacker's pid is proc's.
    proc = subprocess.Popen(
        ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups",
         "--", sys.executable, "-I", "-c", ATTACKER, str(port), str(count), str(len(payload))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd="/")
    try:
        proc.stdin.write(payload)
        proc.stdin.flush()
        made = proc.stdout.readline()
        assert made, "the attacker failed to run"
        yield int(made)
    finally:
        ended(proc)


def ping(port: int, timeout: float = 10.0) -> None:
    """A kernel's own, correct handshake and one round trip; raises if either fails."""
    link = Link.connect("127.0.0.1", port, TOKEN, timeout=timeout)
    try:
        link.send(0, packet("RKPing", 7))
        channel, reply = link.recv(timeout)
        assert channel == 0 and packet_name(reply) == "RKPong", reply
    finally:
        link.close()


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_half_open_connections_of_another_user_do_not_lock_the_agent_out(
        tmp_path: Path, second_user: str) -> None:
    """The agent has 96 descriptors (so that the flood exhausts them before its first
    handshakes time out, however slowly a loaded machine makes it), the attacker as many
    connections as its own 1024 allow: unauthenticated connections stay bounded in the agent
    (a quarter of its descriptors), a kernel's handshake succeeds during the flood, and the
    agent accepts after it (before: EMFILE ended the accept loop for good)."""
    with agent_process(tmp_path, 96) as (port, pid, log):
        for wave in range(2):  # the second wave reuses what the first one left
            with attacker(second_user, port, ATTACKER_FILES + 200) as made:
                assert made > 900, f"wave {wave}: only {made} connections were made"
                assert open_files(pid) < 48, "pending handshakes are not bounded"
                started = time.monotonic()
                ping(port)
                assert time.monotonic() - started < 5
        ping(port)
    text = log.read_text()
    assert "cannot accept links" not in text  # the bound kept the agent clear of EMFILE


def test_the_accept_loop_survives_running_out_of_descriptors(tmp_path: Path) -> None:
    """Authenticated links (the token's holder is trusted, so they are not bounded) use up an
    agent limited to 128 descriptors: accept fails with EMFILE; once they close, the agent
    accepts again, and said so once in its log."""
    with agent_process(tmp_path, 128) as (port, pid, log):
        links = []
        try:
            while len(links) < 200:
                try:
                    links.append(Link.connect("127.0.0.1", port, TOKEN, timeout=2.0))
                except OSError:
                    break
                except Exception as exc:  # noqa: BLE001 - the handshake found no agent thread
                    assert "did not greet" in str(exc), exc
                    break
            assert 64 < len(links) < 128, len(links)
        finally:
            for link in links:
                link.close()
        deadline = time.monotonic() + 15
        while True:
            try:
                ping(port, timeout=3.0)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
    text = log.read_text()
    assert text.count("cannot accept links for now") == 1, text[-2000:]
    assert "accepting links again" in text


def refused_handshake() -> bytes:
    """PREAMBLE and an Auth message whose protocol field is a 4,000-digit integer."""
    out = bytearray()

    class Sink:
        def sendall(self, data: bytes) -> None:
            out.extend(data)

    FrameWriter(Sink(), "none").send(0, {"protocol": 10 ** 4000, "codec": "none",
                                         "nonce": b"n" * 32, "mac": b"m" * 32,
                                         "kernel": "x" * 5000})
    return PREAMBLE + bytes(out)


def test_refused_handshakes_cannot_flood_the_log(tmp_path: Path, second_user: str) -> None:
    """500 refusals with a huge protocol field from another user: a few short lines whose
    counts add up to every refusal (before: one 4,300-digit line each)."""
    attempts = 500
    with agent_process(tmp_path, 1024) as (port, _, log):
        with attacker(second_user, port, attempts, refused_handshake()) as made:
            assert made == attempts
        ping(port)
    lines = [line for line in log.read_text().splitlines() if "refused" in line]
    print("\n".join(lines))
    assert len(lines) <= 4 and max(map(len, lines)) < 400
    counted = sum(int(m.group(1)) if (m := re.search(r"refused (\d+) links", line)) else 1
                  for line in lines)
    assert counted == attempts
    assert f"agent speaks {PROTOCOL_VERSION}, kernel speaks <an integer of" in lines[0]


def test_a_link_works_on_descriptors_above_1024() -> None:
    """select() fails for descriptors >= 1024; the link's waits must not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= 2048, "the test needs a hard RLIMIT_NOFILE of 2048"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    filler = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        listener = socket.create_server(("127.0.0.1", 0))
        accepted: list[Link] = []

        def serve() -> None:
            sock, _ = listener.accept()
            assert sock.fileno() >= 1024
            link = Link.accept(sock, TOKEN, 10.0)
            accepted.append(link)
            channel, expr = link.recv(10.0)
            link.send(channel, packet("RKPong", *expr.args))

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        link = Link.connect("127.0.0.1", listener.getsockname()[1], TOKEN, timeout=10.0)
        assert link.sock.fileno() >= 1024
        link.send(3, packet("RKPing", "x" * 100_000))
        channel, reply = link.recv(10.0)
        assert (channel, packet_name(reply), reply.args[0]) == (3, "RKPong", "x" * 100_000)
        thread.join(10)
        link.close()
        accepted[0].close()
        listener.close()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_private_logs_are_0600_capped_and_pruned(tmp_path: Path) -> None:
    """logfiles: a loose directory is tightened, an existing 0644 file becomes 0600, the
    handler rotates at its cap (files stay 0600), old per-kernel logs are pruned."""
    directory = tmp_path / "runtime"
    directory.mkdir(mode=0o755)
    logfiles.private_dir(str(directory))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    loose = directory / "rk-old.log"
    loose.write_text("x")
    loose.chmod(0o644)
    with logfiles.open_private(str(loose)) as handle:
        handle.write("y")
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    handler = logfiles.PrivateRotatingFileHandler(str(directory / "rk-new.log"), max_bytes=1000)
    import logging
    logger = logging.getLogger("rk_jupyter.test_security")
    logger.addHandler(handler)
    try:
        for _ in range(100):
            logger.warning("z" * 50)
    finally:
        logger.removeHandler(handler)
        handler.close()
    for path in (directory / "rk-new.log", directory / "rk-new.log.1"):
        assert path.stat().st_size <= 1000 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (directory / "rk-new.log.2").exists()
    old = time.time() - (logfiles.RETENTION_DAYS + 1) * 86400
    os.utime(loose, (old, old))
    assert logfiles.prune(str(directory), "rk-*.log*") == 1
    assert not loose.exists() and (directory / "rk-new.log").exists()


def test_a_kernel_started_where_json_py_was_planted_does_not_run_it(
        rk_local: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user's ``json.py``/``secrets.py`` in the directory Jupyter runs in: neither the
    kernel process, nor the agent, nor its engine imports them; the launch log and the agent
    log are 0600 in a 0700 directory."""
    from jupyter_client.manager import start_new_kernel
    from jupyter_core.paths import jupyter_runtime_dir

    from kernel_helpers import execute

    shared = tmp_path / "shared"
    shared.mkdir()
    marker = tmp_path / "planted-code-ran"
    for name in ("json", "secrets", "argparse", "selectors"):
        (shared / f"{name}.py").write_text(
            f"open({str(marker)!r}, 'a').write({name!r} + '\\n')\n")
    monkeypatch.chdir(shared)
    km, kc = start_new_kernel(kernel_name=rk_local, startup_timeout=120)
    try:
        result = execute(kc, "StringJoin[\"rk\", \"safe\"]").results()
        assert result[0]["data"]["text/plain"] == "rksafe"
        kernel_id = km.kernel_id
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    assert not marker.exists(), f"planted modules ran: {marker.read_text()}"
    runtime = Path(jupyter_runtime_dir())
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
    for name in (f"rk-{kernel_id}.log", f"rk-{kernel_id}-agent.log"):
        path = runtime / name
        assert path.stat().st_size > 0 and stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_kernel_channels_are_encrypted_when_jupyter_requires_it(rk_local: str) -> None:
    """``transport_encryption="required"`` starts an rk kernel (its kernelspec declares
    curve) and a listener on the IOPub port, as another user would be, reads nothing."""
    import zmq
    from jupyter_client.manager import KernelManager

    from kernel_helpers import execute

    if not zmq.has("curve"):
        pytest.fail("pyzmq without CurveZMQ: install a pyzmq built with libsodium")
    km = KernelManager(kernel_name=rk_local, transport_encryption="required")
    km.start_kernel()
    context = zmq.Context()
    listener = context.socket(zmq.SUB)
    listener.setsockopt(zmq.SUBSCRIBE, b"")
    listener.connect(f"tcp://{km.ip}:{km.iopub_port}")
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        result = execute(kc, "StringJoin[\"rk-clear\", \"text-marker\"]").results()
        assert result[0]["data"]["text/plain"] == "rk-cleartext-marker"
        heard = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if listener.poll(100):
                heard.append(b"".join(listener.recv_multipart()))
        assert not any(b"rk-clear" in frame or b"execute_input" in frame for frame in heard)
        assert heard == []
    finally:
        listener.close(0)
        context.term()
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def test_the_ssh_forward_survives_running_out_of_descriptors(
        caplog: pytest.LogCaptureFixture) -> None:
    """The Jupyter side's forward (one per host, its end kills every kernel of the host):
    accept fails with EMFILE while the process is out of descriptors, and the forward
    accepts again once it has some (before: the loop ended on the first error)."""
    import logging
    import types

    from rk_jupyter.provisioning.ssh.forward import Forwarder

    class NoTransport:  # the forward's channel opening fails: the client is closed at once
        def open_channel(self, *args: object, **kwargs: object) -> None:
            raise OSError("no transport in this test")

        def is_active(self) -> bool:
            return False

    caplog.set_level(logging.INFO, logger="rk_jupyter.ssh")
    connection = types.SimpleNamespace(transport=NoTransport())
    forward = Forwarder(connection, ("127.0.0.1", 9), 5.0)  # type: ignore[arg-type]
    client = [sys.executable, "-c",
              "import socket, sys; sys.stdin.readline(); s = socket.create_connection("
              "('127.0.0.1', int(sys.argv[1])), 30); s.settimeout(30); print(repr(s.recv(1)))",
              str(forward.port)]
    peer = subprocess.Popen(client, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    filler: list[int] = []
    try:
        in_use = max(map(int, os.listdir("/proc/self/fd")))
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 50, hard))
        try:
            while True:
                filler.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        peer.stdin.write("connect now\n")  # the peer connects while we have no descriptor
        peer.stdin.flush()
        deadline = time.monotonic() + 10
        while "cannot accept for now" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "cannot accept for now" in caplog.text and forward.alive()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        out, _ = peer.communicate(timeout=20)
        assert out.strip() == "b''"  # accepted, then closed: the channel could not open
        assert "accepts again" in caplog.text and forward.alive()
        assert caplog.text.count("cannot accept for now") == 1
    finally:
        forward.close()


def test_the_remote_runs_only_the_agent_that_was_deployed(
        sshbed_factory, jupyter_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the SSH test bed: the cache is 0700; a cached zipapp replaced by one of the same
    size is not run (it is copied again, and the kernel works); a copy another account owns
    is refused, naming the path."""
    from jupyter_client.manager import start_new_kernel

    from rk_jupyter import kernelspec
    from rk_jupyter.provisioning.ssh import deploy

    from kernel_helpers import execute, start_fails

    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    bed = sshbed_factory(users=["rkjdeploy"])
    bed.run_remote("rm -rf ~/.cache/rk_jupyter")
    kernelspec.install("deployed", "deployed", {
        "engine": "mathics", "transport": "ssh", "host": bed.host, "port": bed.port,
        "user": bed.user, "identity_file": bed.key_file, "known_hosts": bed.known_hosts,
        "remote_python": bed.remote_python, "agent_deploy": "zipapp"}, prefix=jupyter_env)
    app = deploy.agent_zipapp()
    cached = Path(bed.account.home, app.remote_path)

    def runs() -> None:
        km, kc = start_new_kernel(kernel_name="rk-deployed", startup_timeout=120)
        try:
            assert execute(kc, "6 * 7").results()[0]["data"]["text/plain"] == "42"
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)

    runs()
    assert stat.S_IMODE(cached.parent.parent.stat().st_mode) == 0o700
    assert cached.read_bytes() == app.data
    cached.write_bytes(app.data[:-4] + b"evil")  # same size: the old size check passed it
    runs()
    assert cached.read_bytes() == app.data
    os.chown(cached, 0, 0)  # not the remote user's
    message = start_fails("rk-deployed", 60)
    assert deploy.REFUSED_PATH_TEXT in message and str(app.remote_path) in message, message


def test_the_wolfram_helper_loaded_is_the_one_deployed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From the zipapp the helper package is written next to the cache; a file already there
    under its name with other content (replaced, damaged) is written again before use."""
    import pkgutil

    from rk_jupyter.agent.engines.wolfram import engine

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(engine, "HELPER", tmp_path / "not-a-file.wl")  # as inside a zipapp
    data = pkgutil.get_data(*engine.HELPER_RESOURCE)
    first = engine.helper_file()
    assert first.read_bytes() == data
    first.write_bytes(b"Print[\"not rk_jupyter's\"]")
    assert engine.helper_file() == first and first.read_bytes() == data
