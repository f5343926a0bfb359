"""JupyterHub end to end: a real hub (pip jupyterhub, npm configurable-http-proxy) on loopback
spawns single-user servers as two local Unix users; each starts an rk- kernel through its
server's REST API, runs a cell over the kernel websocket, and reaches the SSH test bed as its
own remote account with its own key from its own ~/.ssh. Stopping the servers (as a user does,
and as the idle culler does) leaves nothing behind on the remote.

The hub runs docs/jupyterhub_config.py, the guide's example, with only the loopback test's
overrides. Needs root (Unix users, setuid spawning) and .ci/install-hub.sh.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rk_jupyter.cli import main as cli

from hub_helpers import (
    TAG,
    Hub,
    HubError,
    ensure_unix_user,
    exclusive,
    free_port,
    hub_unavailable_reason,
    prepare_ssh_home,
    processes_of,
    run_cell,
    start_kernel,
    tagged_processes,
)
from kernel_helpers import wait_for
from sshbed import SSHBed, kill_pids

DOCS_CONFIG = Path(__file__).resolve().parent.parent / "docs" / "jupyterhub_config.py"
# Jupyter user -> the remote account its key is authorized for (and only that one).
USERS = {"rkjhub1": "rkjtest", "rkjhub2": "rkjtest2"}
SPEC = "rk-hpc"
AGENT = r"(agent\.pyz|-m rk_jupyter\.agent) --host"
WORKER = r"mathics[/._]worker"  # the Mathics3 worker, by its module or file

TEST_CONFIG = """\
import os
c = get_config()  # noqa: F821
load_subconfig({docs!r})  # noqa: F821  (the guide's example, then the loopback overrides)
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.pid_file = {proxy_pid!r}
c.JupyterHub.db_url = "sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = {state!r} + "/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = {state!r} + "/jupyterhub.pid"
c.LocalAuthenticator.allowed_groups = set()
c.Authenticator.allowed_users = {users!r}
c.LocalProcessSpawner.term_timeout = 20
# Two servers start at once on a shared 2-core machine: more than the 30 s default to answer.
c.Spawner.http_timeout = 90
c.Spawner.start_timeout = 90
# Kernelspecs of this test's "system-wide" install (--prefix, not the shared sys.prefix).
c.Spawner.environment["JUPYTER_PATH"] = {jupyter_path!r}
# The test's API client, in place of the idle culler service: it creates the users' tokens
# and stops a server the way the culler does (DELETE /users/NAME/server).
c.JupyterHub.services = [{{"name": "rkj-test", "api_token": os.environ["RKJ_HUB_TEST_TOKEN"]}}]
c.JupyterHub.load_roles = [{{
    "name": "rkj-test",
    "scopes": ["admin:users", "admin:servers", "tokens", "access:servers"],
    "services": ["rkj-test"],
}}]
"""


@pytest.fixture(autouse=True)
def _needs_a_hub() -> None:
    reason = hub_unavailable_reason()
    if reason:
        pytest.skip(reason)


def _ssh_config(bed: SSHBed, remote_user: str, global_known_hosts: str | None) -> str:
    """The user's ~/.ssh/config: which remote account this user is on the host."""
    lines = [f"Host {bed.host}", f"    User {remote_user}"]
    if bed.port != 22:
        lines.append(f"    Port {bed.port}")
    if global_known_hosts:
        lines.append(f"    GlobalKnownHostsFile {global_known_hosts}")
    return "\n".join(lines) + "\n"


def _known_hosts_line(bed: SSHBed) -> str:
    name = bed.host if bed.port == 22 else f"[{bed.host}]:{bed.port}"
    return f"{name} {' '.join(bed.host_key.split()[:2])}\n"


def _authorize(bed: SSHBed, remote_user: str, public_key: str) -> None:
    """Add a key to the bed's authorized_keys for ``remote_user`` (AuthorizedKeysFile of the
    bed's sshd is TMPDIR/authorized_keys/%u)."""
    path = Path(bed.tmpdir) / "authorized_keys" / remote_user
    with open(path, "a") as handle:
        handle.write(public_key + "\n")


def test_two_users_each_on_their_own_remote_account(sshbed: SSHBed) -> None:
    missing = set(USERS.values()) - set(sshbed.accounts)
    if missing:
        pytest.skip(f"the bed has no account {', '.join(sorted(missing))} ($RKJ_SSHBED_USERS)")
    t0 = time.monotonic()
    authorized = {u: (Path(sshbed.tmpdir) / "authorized_keys" / u).read_text()
                  for u in USERS.values()}
    try:
        with exclusive():
            _run_hub_scenario(sshbed, t0)
    finally:  # the session's bed authorizes only its own keys again
        for remote_user, text in authorized.items():
            (Path(sshbed.tmpdir) / "authorized_keys" / remote_user).write_text(text)


def _run_hub_scenario(bed: SSHBed, t0: float) -> None:
    # Under the lock no other hub test runs: any rkj-hub- directory is a killed run's.
    for stale in Path(tempfile.gettempdir()).glob("rkj-hub-*"):
        shutil.rmtree(stale, ignore_errors=True)
    root = tempfile.mkdtemp(prefix="rkj-hub-")
    os.chmod(root, 0o711)
    state = os.path.join(root, "state")  # the hub's database, cookie secret, log: root only
    os.mkdir(state, 0o700)
    share = os.path.join(root, "share")  # what the users' servers read: kernelspecs, keys
    os.makedirs(share, 0o755)
    os.chmod(share, 0o755)
    hub: Hub | None = None
    uids: list[int] = []
    try:
        # -- the Jupyter side's users, each with their own key, mapped to their own account --
        # rkjhub1 trusts the host through ~/.ssh/known_hosts, rkjhub2 through a hub-wide
        # known_hosts file (the test's stand-in for /etc/ssh/ssh_known_hosts).
        global_known_hosts = os.path.join(share, "ssh_known_hosts")
        Path(global_known_hosts).write_text(_known_hosts_line(bed))
        os.chmod(global_known_hosts, 0o644)
        homes = {}
        for name, remote_user in USERS.items():
            user = ensure_unix_user(name)
            uids.append(user.pw_uid)
            kill_pids([pid for pid, _ in processes_of(user.pw_uid)])  # a crashed earlier run
            hub_wide = name == "rkjhub2"
            homes[name] = prepare_ssh_home(
                user, _ssh_config(bed, remote_user, global_known_hosts if hub_wide else None),
                None if hub_wide else _known_hosts_line(bed))
            _authorize(bed, remote_user, homes[name].public_key)
            res = bed.ssh("true", user=remote_user, key_file=homes[name].key_file)
            assert res.returncode == 0, f"{name}'s key for {remote_user}: {res.stderr}"
        # Each key opens its own account only.
        for name, other in (("rkjhub1", "rkjtest2"), ("rkjhub2", "rkjtest")):
            res = bed.ssh("true", user=other, key_file=homes[name].key_file)
            assert res.returncode != 0, f"{name}'s key must not open {other}"

        # -- one system-wide kernelspec: no user, key or known_hosts in it (each user's ~/.ssh
        # says those), as docs/jupyterhub.md recommends --
        host = bed.host if bed.port == 22 else f"{bed.host}:{bed.port}"
        assert cli(["add", "hpc", "--host", host, "--remote-python", bed.remote_python,
                    "--prefix", share]) == 0
        jupyter_path = os.path.join(share, "share", "jupyter")
        for path in Path(share).rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)

        # -- the hub ---------------------------------------------------------------------------
        admin_token = secrets.token_hex(32)
        port = free_port()
        config = os.path.join(state, "jupyterhub_config.py")
        Path(config).write_text(TEST_CONFIG.format(
            docs=str(DOCS_CONFIG), port=port, hub_port=free_port(), api_port=free_port(),
            proxy_pid=os.path.join(state, "proxy.pid"), state=state, users=set(USERS),
            jupyter_path=jupyter_path))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("JUPYTER", "JPY_", "SSH_AUTH_SOCK", "CONFIGPROXY"))}
        env["RKJ_HUB_TEST_TOKEN"] = admin_token
        env[TAG] = str(os.getpid())
        kill_pids(tagged_processes())  # a hub and proxy left by a killed earlier run
        hub = Hub(config, state, port, env, admin_token,
                  proxy_pid_file=os.path.join(state, "proxy.pid")).start()
        print(f"\nhub up in {hub.started_in:.2f} s at {hub.url}; bed {bed!r}")
        # The guide's config is valid for this JupyterHub: no option it sets is unknown.
        assert "not recognized by" not in hub.log_text(), hub.log_tail()

        # -- each user starts their server, then a kernel, through the REST APIs --------------
        tokens = {name: hub.user_token(name) for name in USERS}
        started = time.monotonic()
        for name in USERS:
            hub.start_server(name, tokens[name])
        servers = {name: hub.wait_server_ready(name, tokens[name], timeout=100)
                   for name in USERS}
        print(f"both servers ready in {time.monotonic() - started:.2f} s")
        for name, user_uid in zip(USERS, uids, strict=True):
            [(pid, cmdline)] = processes_of(user_uid, r"jupyterhub\.singleuser")
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = dict(item.split(b"=", 1) for item in handle.read().split(b"\0")
                               if b"=" in item)
            assert environ[b"HOME"].decode() == homes[name].user.pw_dir
            assert b"SSH_AUTH_SOCK" not in environ

        for name, remote_user in USERS.items():
            started = time.monotonic()
            kernel = start_kernel(servers[name], tokens[name], SPEC)
            print(f"{name}: kernel {SPEC} started in {time.monotonic() - started:.2f} s")
            run = run_cell(servers[name], tokens[name], kernel["id"], "1+1", name)
            assert run.reply["status"] == "ok", run.reply
            assert run.results() == ["2"]
            run = run_cell(servers[name], tokens[name], kernel["id"], "$UserName", name)
            assert run.results() == [remote_user]

        # -- who runs what, on both sides -------------------------------------------------------
        for (name, remote_user), user_uid in zip(USERS.items(), uids, strict=True):
            # The kernel process runs as the Jupyter user ...
            assert processes_of(user_uid, r"-m rk_jupyter\.kernel"), processes_of(user_uid)
            # ... its agent and engine as the remote account mapped to it ...
            agents = bed.remote_processes(AGENT, user=remote_user)
            workers = bed.remote_processes(WORKER, user=remote_user)
            print(f"{name} -> {remote_user}: agent {agents}, {len(workers)} worker(s)")
            assert len(agents) == 1 and len(workers) == 1
            # ... logged in with the key from the Jupyter user's own ~/.ssh.
            fp = homes[name].fingerprint
            assert bed.count_log(rf"Accepted publickey for {remote_user} .*{re.escape(fp)}") >= 1
        for name, other in (("rkjhub1", "rkjtest2"), ("rkjhub2", "rkjtest")):
            fp = re.escape(homes[name].fingerprint)
            assert bed.count_log(rf"Accepted publickey for {other} .*{fp}") == 0
        # One SSH connection per user's server.
        assert bed.established_ssh_connections() == 2

        # -- stopping the servers ends everything: rkjhub1 stops its own, the admin service
        # stops rkjhub2's as the idle culler would; the kernels are still running --
        for name, stopper in (("rkjhub1", tokens["rkjhub1"]), ("rkjhub2", admin_token)):
            started = time.monotonic()
            hub.stop_server(name, stopper)
            hub.wait_server_stopped(name, admin_token)
            stopped_in = time.monotonic() - started
            print(f"{name}'s server stopped in {stopped_in:.2f} s")
            # SIGTERM was enough: the spawner did not escalate to SIGKILL (after term_timeout,
            # 20 s here).
            assert stopped_in < 20
        for remote_user in USERS.values():
            assert wait_for(lambda u=remote_user: bed.remote_processes(user=u) == [], 20), \
                bed.remote_processes(user=remote_user)
        assert bed.wait_established(0) == 0
        for user_uid in uids:
            assert wait_for(lambda u=user_uid: processes_of(u) == [], 20), processes_of(user_uid)
        # The way the guide's TermFirstSpawner promises: each server shut its kernel down
        # itself (rather than exiting and leaving the kernel to notice its parent gone).
        log = hub.log_text()
        assert log.count("Shutting down 1 kernel") == 2, hub.log_tail()
        assert "Parent appears to have exited" not in log, hub.log_tail()
        print(f"whole scenario {time.monotonic() - t0:.2f} s")
    except HubError as exc:
        pytest.fail(str(exc))
    finally:
        if hub is not None:
            hub.stop()
        for user_uid in uids:  # anything the hub did not end (by pid, only these users')
            kill_pids([pid for pid, _ in processes_of(user_uid)])
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v", "-s"]))
