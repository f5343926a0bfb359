"""JupyterHub end to end, by the guide: docs/jupyterhub.md's commands (its ``hub:`` code blocks)
and docs/jupyterhub_config.py as shipped build a real hub (pip jupyterhub, npm
configurable-http-proxy) on loopback; two local Unix users log in, see the rk- kernelspec, start
it through their servers and reach the SSH test bed as their own remote account with their own
key; neither reaches the other's server, kernel, files or key; a failed kernel start does not
hold a server's stop up; stopping everything leaves nothing behind.

What the test substitutes in the guide's commands, and why, is the ``Guide([...])`` list in
_run_the_guide (each must still match the guide: a guide that drifts fails here). Needs root
(Unix users, group, setuid spawning) and .ci/install-hub.sh.
"""

from __future__ import annotations

import grp
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hub_helpers import (
    TAG,
    Hub,
    HubError,
    ensure_unix_user,
    exclusive,
    free_port,
    http,
    hub_unavailable_reason,
    processes_of,
    run_as,
    run_cell,
    start_kernel,
    tagged_processes,
)
from kernel_helpers import wait_for
from sshbed import SSHBed, kill_pids

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "jupyterhub.md"
DOCS_CONFIG = REPO / "docs" / "jupyterhub_config.py"
# The guide's users -> the test's Unix users; each test user -> the remote account its key is
# authorized for (and only that one).
GUIDE_USERS = {"alice": "rkjhub1", "bob": "rkjhub2"}
USERS = {"rkjhub1": "rkjtest", "rkjhub2": "rkjtest2"}
OUTSIDER = "rkjhub3"  # a Unix user who is not in the group: the hub refuses them
GROUP = "wolfram"  # the shipped configuration's allowed_groups
SPEC = "rk-hpc1"
REFUSED_SPEC = "rk-refused"  # the test's own: a host that refuses the connection
AGENT = r"(agent\.pyz|-m rk_jupyter\.agent) --host"
WORKER = r"mathics[/._]worker"  # the Mathics3 worker, by its module or file
BLOCK = re.compile(r"^```sh hub:([\w-]+)\n(.*?)^```", re.M | re.S)
STOP_WITHIN = 5.0  # seconds from DELETE .../server to a stopped server (one SIGTERM)

OVERLAY = """\
# The test's additions to the shipped configuration, which it loads first and leaves as is.
import os
c = get_config()  # noqa: F821
load_subconfig({shipped!r})  # noqa: F821
# Free ports in place of 8000 (bind_url, still loopback), 8081 (hub) and 8001 (proxy API):
# another hub on this machine may hold those.
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
# The test's API client, next to the idle culler: it makes the users' tokens and stops a
# server the way the culler does (DELETE /users/NAME/server).
c.JupyterHub.services.append({{"name": "rkj-test",
                               "api_token": os.environ["RKJ_HUB_TEST_TOKEN"]}})
c.JupyterHub.load_roles.append({{
    "name": "rkj-test",
    "scopes": ["admin:users", "admin:servers", "tokens", "access:servers"],
    "services": ["rkj-test"],
}})
"""


@pytest.fixture(autouse=True)
def _needs_a_hub() -> None:
    reason = hub_unavailable_reason()
    if reason:
        pytest.skip(reason)


def guide_blocks() -> dict[str, str]:
    """The guide's ``sh hub:NAME`` code blocks, by name, in the guide's order."""
    blocks: dict[str, str] = {}
    for name, text in BLOCK.findall(GUIDE.read_text()):
        assert name not in blocks, f"two blocks hub:{name} in {GUIDE}"
        blocks[name] = text
    return blocks


class Guide:
    """The guide's blocks with the test's substitutions: each (block, old, new, why) must match
    its block, so that a changed guide fails here rather than being tested half."""

    def __init__(self, substitutions: list[tuple[str, str, str, str]]) -> None:
        self.blocks = guide_blocks()
        self.substitutions = substitutions
        for block, old, _new, why in substitutions:
            assert block == "*" or block in self.blocks, f"no block hub:{block} ({why})"
            targets = self.blocks.values() if block == "*" else [self.blocks[block]]
            assert any(old in text for text in targets), \
                f"{old!r} is no longer in hub:{block} of the guide (substituted: {why})"

    def block(self, name: str) -> str:
        text = self.blocks[name]
        for block, old, new, _why in self.substitutions:
            if block in ("*", name):
                text = text.replace(old, new)
        return text


def run_root(script: str, env: dict[str, str], timeout: float = 300.0) -> str:
    """A guide block as root, as ``sh -e`` (a failing command fails the block)."""
    res = subprocess.run(["sh", "-ec", script], capture_output=True, text=True, env=env,
                         cwd=env["HOME"], timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    assert res.returncode == 0, f"{script}\nfailed ({res.returncode}):\n{res.stdout}{res.stderr}"
    return res.stdout


def _closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _authorize(bed: SSHBed, remote_user: str, public_key: str) -> None:
    """What ssh-copy-id does, on the bed (AuthorizedKeysFile TMPDIR/authorized_keys/%u)."""
    with open(Path(bed.tmpdir) / "authorized_keys" / remote_user, "a") as handle:
        handle.write(public_key + "\n")


def test_the_guide_on_two_users(sshbed: SSHBed) -> None:
    missing = set(USERS.values()) - set(sshbed.accounts)
    if missing:
        pytest.skip(f"the bed has no account {', '.join(sorted(missing))} ($RKJ_SSHBED_USERS)")
    t0 = time.monotonic()
    authorized = {u: (Path(sshbed.tmpdir) / "authorized_keys" / u).read_text()
                  for u in USERS.values()}
    try:
        with exclusive():
            _run_the_guide(sshbed, t0)
    finally:  # the session's bed authorizes only its own keys again
        for remote_user, text in authorized.items():
            (Path(sshbed.tmpdir) / "authorized_keys" / remote_user).write_text(text)


def _run_the_guide(bed: SSHBed, t0: float) -> None:
    # Under the lock no other hub test runs: any rkj-hub- directory is a killed run's.
    for stale in Path(tempfile.gettempdir()).glob("rkj-hub-*"):
        shutil.rmtree(stale, ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix="rkj-hub-"))
    root.chmod(0o711)  # the users' servers run /opt/jupyterhub's Python from in here
    opt, srv = root / "opt" / "jupyterhub", root / "srv" / "jupyterhub"
    etc_ssh = root / "etc" / "ssh"
    for directory in (root / "opt", root / "srv", root / "etc", etc_ssh):  # as on Debian
        directory.mkdir(mode=0o755)
        directory.chmod(0o755)
    known_hosts = etc_ssh / "ssh_known_hosts"
    # The checkout, copied: pip builds in the source tree, and the test writes nothing there.
    checkout = root / "src" / "rk_jupyter"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis",
        ".ruff_cache", "test-artifacts", ".cache"))
    host_port = f"{bed.host}:{bed.port}"
    scripts_why = ("the venv has no scripts of the packages it shares with the test's Python "
                   "(see hub:venv), so their modules are run")
    guide = Guide([  # applied in this order (later ones see what earlier ones wrote)
        ("kernelspec-check", "/opt/jupyterhub/bin/jupyter kernelspec list",
         "/opt/jupyterhub/bin/python -m jupyter_client.kernelspecapp list", scripts_why),
        ("start", "/opt/jupyterhub/bin/jupyterhub -f",
         "/opt/jupyterhub/bin/python -m jupyterhub -f", scripts_why),
        ("*", "/opt/jupyterhub", str(opt), "the test's own directory, not the machine's"),
        ("*", "/srv/jupyterhub", str(srv), "the test's own directory, not the machine's"),
        ("*", "/usr/local/src/rk_jupyter", str(checkout),
         "a copy of the checkout this test is in (pip builds in the source tree)"),
        ("*", "/etc/ssh/ssh_known_hosts", str(known_hosts),
         "the test's own file: the machine's stays as it is"),
        ("venv", "python3 -m venv", f"{shlex.quote(sys.executable)} -m venv "
         "--system-site-packages", "the packages .ci/install-hub.sh installed count as "
         "present: pip downloads none of them (only rk_jupyter's build backend)"),
        ("users", "alice", "rkjhub1", "the test's users"),
        ("users", "bob", "rkjhub2", "the test's users"),
        ("kernelspec", "--host hpc1.example.org", f"--host {host_port}", "the test's sshd"),
        ("kernelspec", "/opt/rk-venv/bin/python", shlex.quote(bed.remote_python),
         "the test host's Python, which has Mathics3 (hub:remote is not run)"),
        ("known-hosts", "ssh-keyscan -t ed25519 hpc1.example.org",
         f"ssh-keyscan -t ed25519 -p {bed.port} {bed.host}", "the test's sshd"),
        ("user-key", "ssh-copy-id -i ~/.ssh/id_ed25519.pub hpc1.example.org", "true",
         "the test's sshd has no password log-in: the test appends the key to its "
         "authorized_keys instead"),
    ])
    root_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/root", "LANG": "C.UTF-8", "USER": "root", "LOGNAME": "root"}
    hub: Hub | None = None
    uids: list[int] = []
    passwords: dict[str, str] = {}
    group_was_there = _group_exists(GROUP)
    try:
        # -- 1, 2: the hub's environment and rk_jupyter in it (hub:system is what
        # .ci/install-hub.sh did: hub_unavailable_reason checked it) --
        started = time.monotonic()
        run_root(guide.block("venv"), root_env, timeout=600)
        run_root(guide.block("rk-jupyter"), root_env, timeout=600)
        print(f"\nhub:venv + hub:rk-jupyter in {time.monotonic() - started:.1f} s")
        python = opt / "bin" / "python"
        res = subprocess.run([str(python), "-c", "import rk_jupyter; print(rk_jupyter.__file__)"],
                             capture_output=True, text=True, timeout=60, check=True, env=root_env,
                             cwd="/")
        assert res.stdout.startswith(str(opt)), res.stdout  # this checkout's code, installed

        # -- 3: the users (the guide assumes existing accounts: the test makes them) --
        users = {name: ensure_unix_user(name) for name in [*USERS, OUTSIDER]}
        for name in users:
            kill_pids([pid for pid, _ in processes_of(users[name].pw_uid)])  # a crashed run's
            assert users[name].pw_dir == f"/home/{name}", users[name]
        uids = [users[name].pw_uid for name in USERS]
        subprocess.run(["gpasswd", "-d", OUTSIDER, GROUP], capture_output=True, timeout=30,
                       check=False)  # not a member, whatever an earlier run did
        run_root(guide.block("users"), root_env)
        for name in USERS:
            assert Path(users[name].pw_dir).stat().st_mode & 0o077 == 0
        passwords = {name: secrets.token_urlsafe(12) for name in users}
        subprocess.run(["chpasswd"], input="".join(f"{n}:{p}\n" for n, p in passwords.items()),
                       text=True, timeout=30, check=True)

        # -- 4: the kernelspec, and the hub-wide host key --
        run_root(guide.block("kernelspec"), root_env)
        check = guide.block("kernelspec-check")
        assert check.count("runuser -u alice ") == 1, check
        for name in GUIDE_USERS.values():  # the guide's check as alice, as each test user
            listing = run_root(check.replace("-u alice ", f"-u {name} "), root_env)
            assert SPEC in listing, f"{name} does not see {SPEC}:\n{listing}"
        kernels = opt / "share" / "jupyter" / "kernels"
        # The test's own spec for a failed start (not in the guide): nothing listens there.
        run_root(f"{opt}/bin/rk-jupyter add refused --host 127.0.0.1:{_closed_loopback_port()} "
                 "--sys-prefix", root_env)
        assert (kernels / REFUSED_SPEC).is_dir()
        out = run_root(guide.block("known-hosts"), root_env)
        key_blob = bed.host_key.split()[1]
        assert known_hosts.read_text().split() == [f"[{bed.host}]:{bed.port}"
                                                   if bed.port != 22 else bed.host,
                                                   "ssh-ed25519", key_blob]
        assert len(out.splitlines()) == 1 and "(ED25519)" in out, out

        # -- 5: the hub, with the shipped configuration --
        run_root(guide.block("config"), root_env)
        shipped = opt / "etc" / "jupyterhub" / "jupyterhub_config.py"
        assert shipped.read_bytes() == DOCS_CONFIG.read_bytes()
        cd_line, start_line = guide.block("start").strip().splitlines()
        assert cd_line == f"cd {srv}"
        argv = shlex.split(start_line)
        assert argv[-2:] == ["-f", str(shipped)], argv
        overlay = root / "test-overlay" / "jupyterhub_config.py"
        overlay.parent.mkdir(mode=0o700)
        admin_token = secrets.token_hex(32)
        port = free_port()
        overlay.write_text(OVERLAY.format(shipped=str(shipped), port=port, hub_port=free_port(),
                                          api_port=free_port()))
        argv[-1] = str(overlay)  # loads the shipped file, then adds ports and its service
        env = dict(root_env, RKJ_HUB_TEST_TOKEN=admin_token, **{TAG: str(os.getpid())})
        kill_pids(tagged_processes())  # a hub and proxy left by a killed earlier run
        hub = Hub(argv, str(srv), str(root), port, env, admin_token,
                  proxy_pid_file=str(srv / "jupyterhub-proxy.pid")).start()
        print(f"hub up in {hub.started_in:.2f} s at {hub.url}; bed {bed!r}")
        log = hub.log_text()
        assert "not recognized by" not in log, hub.log_tail()  # every option is this hub's
        assert wait_for(lambda: _culler_pids(hub), 30), hub.log_tail()  # the config's service
        # PAM log-in: the members of the group get in (and so become the hub's users), a
        # user outside it does not.
        for name in USERS:
            assert hub.pam_login(name, passwords[name]) == 302, hub.log_tail()
        assert hub.pam_login(OUTSIDER, passwords[OUTSIDER]) == 403

        # -- each user's key (hub:user-key as that user), for their own remote account --
        global_known_hosts_only = "rkjhub2"  # rkjhub1 also has its own ~/.ssh/known_hosts
        homes = {}
        for name, remote_user in USERS.items():
            user = users[name]
            shutil.rmtree(Path(user.pw_dir) / ".ssh", ignore_errors=True)
            res = run_as(user, ["sh", "-ec", guide.block("user-key")])
            assert res.returncode == 0, res.stderr
            ssh_dir = Path(user.pw_dir) / ".ssh"
            public = (ssh_dir / "id_ed25519.pub").read_text().strip()
            _authorize(bed, remote_user, public)
            config = f"Host {bed.host}\n    User {remote_user}\n"
            if name == global_known_hosts_only:
                config += f"    GlobalKnownHostsFile {known_hosts}\n"
            else:
                (ssh_dir / "known_hosts").write_text(known_hosts.read_text())
            (ssh_dir / "config").write_text(config)
            for path in ssh_dir.iterdir():
                os.chown(path, user.pw_uid, user.pw_gid)
            fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(ssh_dir / "id_ed25519")],
                                         capture_output=True, text=True, timeout=30,
                                         check=True).stdout.split()[1]
            homes[name] = (str(ssh_dir / "id_ed25519"), fingerprint)
            res = bed.ssh("true", user=remote_user, key_file=homes[name][0])
            assert res.returncode == 0, f"{name}'s key for {remote_user}: {res.stderr}"
        for name, other in (("rkjhub1", "rkjtest2"), ("rkjhub2", "rkjtest")):
            res = bed.ssh("true", user=other, key_file=homes[name][0])
            assert res.returncode != 0, f"{name}'s key must not open {other}"

        # -- each user starts their server, then a kernel, through the REST APIs --
        tokens = {name: hub.user_token(name) for name in USERS}
        started = time.monotonic()
        for name in USERS:
            hub.start_server(name, tokens[name])
        servers = {name: hub.wait_server_ready(name, tokens[name], timeout=100)
                   for name in USERS}
        print(f"both servers ready in {time.monotonic() - started:.2f} s")
        for name, user_uid in zip(USERS, uids, strict=True):
            [(pid, _cmdline)] = processes_of(user_uid, r"jupyterhub\.singleuser")
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = dict(item.split(b"=", 1) for item in handle.read().split(b"\0")
                               if b"=" in item)
            assert environ[b"HOME"].decode() == users[name].pw_dir
            assert b"SSH_AUTH_SOCK" not in environ

        kernel_ids = {}
        for name, remote_user in USERS.items():
            started = time.monotonic()
            kernel = start_kernel(servers[name], tokens[name], SPEC)
            kernel_ids[name] = kernel["id"]
            print(f"{name}: kernel {SPEC} started in {time.monotonic() - started:.2f} s")
            run = run_cell(servers[name], tokens[name], kernel["id"], "1+1", name)
            assert run.reply["status"] == "ok", run.reply
            assert run.results() == ["2"]
            run = run_cell(servers[name], tokens[name], kernel["id"], "$UserName", name)
            assert run.results() == [remote_user]

        # -- who runs what, on both sides --
        for (name, remote_user), user_uid in zip(USERS.items(), uids, strict=True):
            assert processes_of(user_uid, r"-m rk_jupyter\.kernel"), processes_of(user_uid)
            agents = bed.remote_processes(AGENT, user=remote_user)
            workers = bed.remote_processes(WORKER, user=remote_user)
            print(f"{name} -> {remote_user}: agent {agents}, {len(workers)} worker(s)")
            assert len(agents) == 1 and len(workers) == 1
            fp = re.escape(homes[name][1])
            assert bed.count_log(rf"Accepted publickey for {remote_user} .*{fp}") >= 1
        for name, other in (("rkjhub1", "rkjtest2"), ("rkjhub2", "rkjtest")):
            fp = re.escape(homes[name][1])
            assert bed.count_log(rf"Accepted publickey for {other} .*{fp}") == 0
        assert bed.established_ssh_connections() == 2  # one per user's server

        # -- neither reaches the other's server, kernel, files or key --
        _check_isolation(hub, servers, tokens, kernel_ids, users)

        # -- rkjhub1 shuts its rk kernel down (its engine, agent and SSH connection end with
        # it), starts a python3 kernel (quick to shut down: the stop below times the server,
        # not an rk kernel's shutdown), and then a kernel start of theirs fails --
        status, _ = http("DELETE", f"{servers['rkjhub1']}/api/kernels/{kernel_ids['rkjhub1']}",
                         tokens["rkjhub1"])
        assert status == 204, status
        assert wait_for(lambda: bed.remote_processes(user="rkjtest") == [], 20), \
            bed.remote_processes(user="rkjtest")
        assert bed.wait_established(1) == 1  # rkjhub2's is still there
        start_kernel(servers["rkjhub1"], tokens["rkjhub1"], "python3")
        status, body = http("POST", f"{servers['rkjhub1']}/api/kernels", tokens["rkjhub1"],
                            {"name": REFUSED_SPEC}, timeout=120)
        assert status == 500, (status, body)
        assert wait_for(lambda: "refused the connection" in hub.log_text(), 10), hub.log_tail()

        # -- stopping, the kernels still running: rkjhub1 its own server (after the failed
        # start: within STOP_WITHIN; its shutdown_all raised 404 for the failed kernel before,
        # and the server stopped only on the spawner's second SIGTERM, term_timeout later), the
        # admin service rkjhub2's, with its rk kernel, as the idle culler does --
        for name, stopper, limit in (("rkjhub1", tokens["rkjhub1"], STOP_WITHIN),
                                     ("rkjhub2", admin_token, 20.0)):
            started = time.monotonic()
            hub.stop_server(name, stopper)
            hub.wait_server_stopped(name, admin_token)
            stopped_in = time.monotonic() - started
            print(f"{name}'s server stopped in {stopped_in:.2f} s")
            # One SIGTERM was enough (the spawner signals again only after term_timeout, 20 s).
            assert stopped_in < limit, hub.log_tail()
        for remote_user in USERS.values():
            assert wait_for(lambda u=remote_user: bed.remote_processes(user=u) == [], 20), \
                bed.remote_processes(user=remote_user)
        assert bed.wait_established(0) == 0
        for user_uid in uids:
            assert wait_for(lambda u=user_uid: processes_of(u) == [], 20), processes_of(user_uid)
        log = hub.log_text()
        # Each server shut its kernel down itself (TermFirstSpawner's promise; the failed start
        # is no kernel), and nothing was left for the kernels to notice.
        assert log.count("Shutting down 1 kernel\n") == 2, hub.log_tail()
        assert "Kernel does not exist" not in log, hub.log_tail()
        assert "Parent appears to have exited" not in log, hub.log_tail()

        # -- the hub's own stop ends the proxy and the culler --
        proxy, culler = hub.proxy_pid(), _culler_pids(hub)
        assert proxy is not None and culler
        assert hub.stop(), "the hub needed SIGKILL"
        for pid in [proxy, *culler]:
            assert wait_for(lambda p=pid: not Path(f"/proc/{p}").exists(), 10), pid
        assert tagged_processes(os.getpid()) == []
        print(f"whole scenario {time.monotonic() - t0:.2f} s")
    except HubError as exc:
        pytest.fail(str(exc))
    finally:
        if hub is not None:
            hub.stop()
        for user_uid in uids:  # anything the hub did not end (by pid, only these users')
            kill_pids([pid for pid, _ in processes_of(user_uid)])
        shutil.rmtree(root, ignore_errors=True)
        for name in passwords:  # the log-in passwords were for this run only
            subprocess.run(["passwd", "-l", name], capture_output=True, timeout=30, check=False)
        if not group_was_there and _group_exists(GROUP):  # hub:users made it: the test's own
            subprocess.run(["groupdel", GROUP], capture_output=True, timeout=30, check=False)


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _culler_pids(hub: Hub) -> list[int]:
    """The idle culler service the hub started (its child: services get no TAG)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if b"jupyterhub_idle_culler" in cmdline and hub.proc and ppid == hub.proc.pid:
                found.append(int(entry))
    return found


def _check_isolation(hub: Hub, servers: dict[str, str], tokens: dict[str, str],
                     kernel_ids: dict[str, str], users: dict) -> None:
    import websocket

    for name, other in (("rkjhub1", "rkjhub2"), ("rkjhub2", "rkjhub1")):
        token, theirs = tokens[name], servers[other]
        for path in ("/api/kernels", f"/api/kernels/{kernel_ids[other]}", "/api/contents",
                     "/api/terminals"):
            status, _ = http("GET", theirs + path, token)
            assert status in (403, 404), f"{name} got {status} on {other}'s {path}"
        status, _ = http("POST", f"{theirs}/api/kernels/{kernel_ids[other]}/interrupt", token)
        assert status in (403, 404), status
        status, _ = hub.api("GET", f"/users/{other}", token)
        assert status in (403, 404), status
        ws_url = (theirs.replace("http://", "ws://", 1)
                  + f"/api/kernels/{kernel_ids[other]}/channels")
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(ws_url, timeout=30, suppress_origin=True,
                                        header=[f"Authorization: token {token}"]).close()
        # On the hub machine: the other's home, key and the kernel's connection file.
        home = users[other].pw_dir
        connection = f"{home}/.local/share/jupyter/runtime/kernel-{kernel_ids[other]}.json"
        assert Path(connection).is_file(), connection  # (as root: it is there)
        for target in (f"{home}/.ssh/id_ed25519", connection):
            res = run_as(users[name], ["cat", target])
            assert res.returncode != 0 and "Permission denied" in res.stderr, (target, res)
        res = run_as(users[name], ["ls", home])
        assert res.returncode != 0, res.stdout


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v", "-s"]))
