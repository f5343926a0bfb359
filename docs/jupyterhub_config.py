# jupyterhub_config.py: JupyterHub for Wolfram Language kernels on a remote host through
# rk_jupyter (see docs/jupyterhub.md, which installs it as
# /opt/jupyterhub/etc/jupyterhub/jupyterhub_config.py). Start it as root, from the directory
# that is to hold the hub's database and cookie secret:
#   cd /srv/jupyterhub
#   /opt/jupyterhub/bin/jupyterhub -f /opt/jupyterhub/etc/jupyterhub/jupyterhub_config.py
#
# tests/test_jupyterhub.py runs this very file unchanged; it only adds, in a file of its own that
# loads this one, free ports in place of 8000/8081/8001 and an API service of its own.
import os
import signal
import sys

from jupyterhub.spawner import LocalProcessSpawner

c = get_config()  # noqa: F821  (provided by JupyterHub when it reads this file)


class TermFirstSpawner(LocalProcessSpawner):
    """LocalProcessSpawner that stops a server with SIGTERM first, not SIGINT.

    jupyter_server shuts its kernels down on SIGTERM, and then rk_jupyter ends their engines
    on the remote host at once. On SIGINT it does so only when its stdin is a terminal, which a
    spawned server's is not (e.g. under a hub run by systemd): it just exits, and the remote
    engines of its kernels live on for their reconnect grace (see docs/jupyterhub.md, 6.).
    """

    async def stop(self, now=False):
        if not now and await self.poll() is None:
            await self._signal(signal.SIGTERM)
            await self.wait_for_death(self.term_timeout)
        await super().stop(now=True)  # SIGTERM again if still there, then SIGKILL


# -- where the hub listens -----------------------------------------------------------------------
# Loopback only, for a trial: reach it through an SSH tunnel (ssh -L 8000:127.0.0.1:8000 HUB).
# Before others use it, serve HTTPS (ssl_cert/ssl_key, or a reverse proxy on this address).
c.JupyterHub.bind_url = "http://127.0.0.1:8000"

# -- who logs in, and as whom their server runs ---------------------------------------------------
# Local Unix accounts (PAM). Each single-user server runs as its user, with HOME set to that
# user's home: ~/.ssh (key, config, known_hosts) is theirs, and so is the remote account that
# their key opens. This needs the hub to run as root, which LocalProcessSpawner (the default
# spawner, here with the stop above) uses to switch to the user. SimpleLocalProcessSpawner
# would run every server as the hub's user with a made-up HOME: every user would share one SSH
# identity. Do not use it here.
c.JupyterHub.authenticator_class = "pam"
c.LocalAuthenticator.allowed_groups = {"wolfram"}  # members of this Unix group may log in
#                                                   (groupadd -f wolfram; usermod -aG wolfram NAME)
c.JupyterHub.spawner_class = TermFirstSpawner

# -- the single-user servers ----------------------------------------------------------------------
# They run on the Python environment rk_jupyter is installed in (here: the hub's own). Its
# share/jupyter/kernels holds the system-wide rk- kernelspecs made with
#   /opt/jupyterhub/bin/rk-jupyter add hpc1 --host hpc1.example.org \
#       --remote-python /opt/rk-venv/bin/python --sys-prefix
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab"
# JupyterHub passes (almost) nothing of its own environment on. In particular no
# SSH_AUTH_SOCK: there is no ssh-agent for a spawned server, so users' keys must have no
# passphrase (see "Limits" in docs/jupyterhub.md).
c.Spawner.environment = {
    "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin",
                             "/bin"]),
    "LANG": "C.UTF-8",
}

# -- stopping a server ends its remote kernels ---------------------------------------------------
# A server is stopped by its user, by an admin, or by the idle culler (below): TermFirstSpawner
# sends SIGTERM, jupyter_server shuts its kernels down, and rk_jupyter stops their engines and
# the agent on the remote host and closes the SSH connection. SIGKILL follows if the server is
# still there after term_timeout.
c.LocalProcessSpawner.term_timeout = 20

# Kernels idle for an hour are shut down by jupyter_server itself (their engines with them);
# a server with no kernel and no activity for two hours is stopped by the idle culler
# (/opt/jupyterhub/bin/pip install jupyterhub-idle-culler).
c.Spawner.args = ["--MappingKernelManager.cull_idle_timeout=3600",
                  "--MappingKernelManager.cull_interval=300"]
c.JupyterHub.services = [
    {
        "name": "jupyterhub-idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=7200"],
    }
]
c.JupyterHub.load_roles = [
    {
        "name": "jupyterhub-idle-culler-role",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["jupyterhub-idle-culler"],
    }
]
