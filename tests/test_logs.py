"""Logs of a kernel launch, like the old tunnel.log but without secrets: the launch log on the
Jupyter side (rk-<kernel_id>.log), the ssh channel's copy of the agent's output
(rk-ssh-<user>@<host>-<port>.log), and the agent's own log on the remote host; ``%rkernel log``
shows the last lines of the launch log and of the agent's own one."""

from __future__ import annotations

import glob
import os
import secrets
import stat
import time
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel
from jupyter_core.paths import jupyter_runtime_dir

from rk_jupyter import kernelspec

from kernel_helpers import collect, execute
from sshbed import SSHBed

LOG_USER = "rkjlogs"


@pytest.fixture(autouse=True)
def _only_chosen_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


#: What the launch log says of the connection, by SSH client.
CONNECT_STEPS = {
    "paramiko": ("TCP connection to", "host key of", "authenticated to"),
    "openssh": ("OpenSSH master for", "logged in in", "control socket"),
}


@pytest.mark.parametrize("ssh_client", sorted(CONNECT_STEPS))
def test_a_full_ssh_life_cycle_logs_every_step_and_no_secret(
    sshbed_factory, jupyter_env: str, monkeypatch: pytest.MonkeyPatch, ssh_client: str
) -> None:
    bed: SSHBed = sshbed_factory(users=[LOG_USER])
    bed.run_remote("rm -rf ~/.cache/rk_jupyter")
    tokens: list[str] = []
    make = secrets.token_urlsafe

    def recorded(nbytes: int | None = None) -> str:
        token = make(nbytes)
        tokens.append(token)
        return token

    monkeypatch.setattr(secrets, "token_urlsafe", recorded)  # the launch's and the agent's
    kernelspec.install("logs", "logs", {
        "engine": "mathics", "transport": "ssh", "host": bed.host, "port": bed.port,
        "user": bed.user, "identity_file": bed.key_file, "known_hosts": bed.known_hosts,
        "remote_python": bed.remote_python, "agent_deploy": "zipapp",
        "ssh_client": ssh_client}, prefix=jupyter_env)
    km, kc = start_new_kernel(kernel_name="rk-logs", startup_timeout=120)
    try:
        kernel_id = km.kernel_id
        assert execute(kc, "1 + 1").results()[0]["data"]["text/plain"] == "2"
        msg_id = kc.execute("While[True, 1]")
        time.sleep(1.0)
        km.interrupt_kernel()
        assert collect(kc, msg_id, timeout=30).reply["status"] == "error"
        run = execute(kc, "%rkernel log 200")
        assert run.reply["status"] == "ok", run.reply
        shown = run.displays()[0]["data"]["text/plain"]
        print(shown)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    assert len(tokens) >= 2 and all(len(t) >= 32 for t in tokens)

    runtime = jupyter_runtime_dir()
    launch_log = Path(runtime, f"rk-{kernel_id}.log").read_text()
    print(launch_log)
    for step in ("launch of kernel", *CONNECT_STEPS[ssh_client], "agent ", "copied to",
                 "transport ssh started in",
                 "engine ready in", "kernel process pid", "cleanup done in"):
        assert step in launch_log, step
    # %rkernel log: the launch log and the agent's own, fetched from the remote.
    assert f"launch log (Jupyter side) {runtime}" in shown and "engine ready in" in shown
    assert "agent log (ssh side)" in shown and ".cache/rk_jupyter/logs/agent-" in shown
    assert "listening on 127.0.0.1:" in shown and "attaching session" in shown

    remote_logs = glob.glob(os.path.join(bed.account.home, ".cache/rk_jupyter/logs/*.log"))
    assert remote_logs
    remote_text = "".join(Path(p).read_text(errors="replace") for p in remote_logs)
    assert "listening on 127.0.0.1:" in remote_text and "opening session" in remote_text
    # The kernel's shutdown ended the agent through its lifeline's stop line, not by a lost
    # connection (stdin closed without one), and it ended every session.
    assert "stop requested by the launcher" in remote_text, remote_text[-2000:]
    assert "stdin closed without a stop" not in remote_text
    assert "stopping: ending every session" in remote_text

    # Private on both sides (issue 21): every log 0600, in 0700 directories.
    assert stat.S_IMODE(os.stat(runtime).st_mode) == 0o700
    cache = os.path.join(bed.account.home, ".cache/rk_jupyter")
    for directory in (cache, os.path.join(cache, "logs")):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory

    local_logs = glob.glob(os.path.join(runtime, "rk-*.log"))
    assert any("rk-ssh-" in p for p in local_logs)
    key_lines = [line for line in Path(bed.key_file).read_text().splitlines()
                 if line and not line.startswith("-----")]
    for path in local_logs + remote_logs:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        text = Path(path).read_text(errors="replace")
        for secret in tokens + key_lines:
            assert secret not in text, f"a secret is in {path}"
