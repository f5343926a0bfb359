"""A real JupyterHub on loopback for tests: local Unix users with their own ~/.ssh, the hub and
its proxy as processes, the hub's and the single-user servers' REST APIs, and a minimal
client of jupyter_server's kernel websocket (the JSON protocol, no subprotocol).

Plain module (no pytest), used by tests/test_jupyterhub.py.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

from kernel_helpers import wait_for
from sshbed import file_lock, free_loopback_port, kill_pids

LOCK_NAME = "rkj-hub-test.lock"
CMD_TIMEOUT = 30.0


class HubError(RuntimeError):
    """The hub, a server or a kernel did not do what the test needed in time."""


def hub_unavailable_reason() -> str | None:
    """Why a hub cannot be run here (None when it can), for pytest.skip."""
    if os.geteuid() != 0:
        return "the JupyterHub test needs root (it creates Unix users and spawns as them)"
    # The guide's hub:venv and hub:system, as .ci/install-hub.sh does them for the test.
    for module in ("jupyterhub", "jupyterlab", "jupyterhub_idle_culler", "jupyter_server",
                   "websocket", "ensurepip"):
        try:
            __import__(module)
        except ImportError:
            return f"Python package {module} missing (run .ci/install-hub.sh)"
    if shutil.which("configurable-http-proxy") is None:
        return "configurable-http-proxy missing (run .ci/install-hub.sh)"
    for tool in ("useradd", "groupadd", "usermod", "gpasswd", "chpasswd", "runuser", "setpriv",
                 "ssh-keygen", "ssh-keyscan", "ps"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


def exclusive(timeout: float = 300.0) -> contextlib.AbstractContextManager[None]:
    """One hub test at a time on this machine: the Unix users and their ~/.ssh are shared."""
    return file_lock(LOCK_NAME, timeout, poll=0.2)


free_port = free_loopback_port


# -- local Unix users -----------------------------------------------------------------------------


def ensure_unix_user(name: str) -> pwd.struct_passwd:
    """The Unix user ``name`` with a home, created if missing (idempotent, never uid 0)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        proc = subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/bash",
             "--comment", "rk_jupyter JupyterHub test user", name],
            capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False,
        )  # fmt: skip
        try:  # a concurrent run may have made it meanwhile
            entry = pwd.getpwnam(name)
        except KeyError:
            raise HubError(f"useradd {name}: {proc.stderr.strip()}") from None
    if entry.pw_uid == 0:
        raise HubError(f"refusing to use {name}: it is uid 0")
    if not os.path.isdir(entry.pw_dir):
        os.makedirs(entry.pw_dir, mode=0o750)
        os.chown(entry.pw_dir, entry.pw_uid, entry.pw_gid)
    return entry


def run_as(user: pwd.struct_passwd, argv: list[str], timeout: float = CMD_TIMEOUT
           ) -> subprocess.CompletedProcess[str]:
    """Run argv as ``user`` with a login-like environment (HOME, USER), in their home."""
    env = [f"HOME={user.pw_dir}", f"USER={user.pw_name}", f"LOGNAME={user.pw_name}",
           "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]
    full = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
            "--", "env", "-i", *env, *argv]
    return subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                          cwd=user.pw_dir, stdin=subprocess.DEVNULL, check=False)


def processes_of(uid: int, pattern: str | None = None) -> list[tuple[int, str]]:
    """(pid, cmdline) of the local processes running as ``uid`` (matching a regex)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{entry}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except (OSError, IndexError):
            continue
        if pattern is None or re.search(pattern, cmdline):
            found.append((int(entry), cmdline))
    return found


TAG = "RKJ_HUB_TEST"  # in the environment of the hub and its proxy: "<pid of the test>"


def tagged_processes(owner: int | None = None) -> list[int]:
    """Processes carrying TAG: of the test process ``owner``, or (None) of test processes
    that are gone (a hub left behind by a killed run)."""
    found = []
    prefix = f"{TAG}=".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                tags = [v for v in handle.read().split(b"\0") if v.startswith(prefix)]
        except OSError:
            continue
        if not tags:
            continue
        tagged = int(tags[0][len(prefix):] or 0)
        if tagged == owner or (owner is None and not Path(f"/proc/{tagged}").exists()):
            found.append(int(entry))
    return found


# -- HTTP ----------------------------------------------------------------------------------------


def http(method: str, url: str, token: str, body: Any = None, timeout: float = 60.0
         ) -> tuple[int, Any]:
    """A JSON request with ``Authorization: token``; (status, decoded body or None)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


# -- the hub -------------------------------------------------------------------------------------


@dataclass
class Hub:
    """A JupyterHub on loopback, run as ``argv`` in ``state_dir`` (its working directory: the
    database and cookie secret land there); its proxy is started by the hub itself."""

    argv: list[str]
    state_dir: str
    log_dir: str
    port: int
    env: dict[str, str]
    admin_token: str
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""
    started_in: float = 0.0
    proxy_pid_file: str = ""
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, token: str | None = None, body: Any = None,
            timeout: float = 60.0) -> tuple[int, Any]:
        return http(method, f"{self.url}/hub/api{path}", token or self.admin_token, body,
                    timeout)

    def start(self, timeout: float = 60.0) -> Hub:
        self.log_path = os.path.join(self.log_dir, "jupyterhub.log")
        self._log = open(self.log_path, "ab")  # closed in stop()
        started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.state_dir, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise HubError(f"jupyterhub exited {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = http("GET", f"{self.url}/hub/api/", "", timeout=2)
                return status == 200
            return False

        if not wait_for(ready, timeout):
            raise HubError(f"jupyterhub not answering after {timeout:g} s:\n{self.log_tail()}")
        self.started_in = time.monotonic() - started
        return self

    def log_text(self) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def proxy_pid(self) -> int | None:
        try:
            return int(Path(self.proxy_pid_file).read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM: the hub stops the servers it spawned and the proxy it started; whatever
        outlives ``timeout`` is killed by pid.  True when the hub exited on SIGTERM alone."""
        proxy = self.proxy_pid()
        clean = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                clean = False
                self.proc.kill()
                self.proc.wait(timeout=10)
        if proxy is not None and Path(f"/proc/{proxy}").exists():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{proxy}/cmdline").read_bytes()
                if b"configurable-http-proxy" in cmdline:
                    kill_pids([proxy])
        kill_pids(tagged_processes(os.getpid()))  # anything of this hub that is left
        if self._log is not None:
            self._log.close()
            self._log = None
        return clean

    def pam_login(self, username: str, password: str) -> int:
        """Log in through the hub's login form (PAM); the HTTP status of the form's answer:
        302 (logged in, redirected on) or 403 (refused)."""
        jar = CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                             NoRedirect())
        with opener.open(f"{self.url}/hub/login", timeout=30) as response:
            page = response.read().decode(errors="replace")
        match = re.search(r'name="_xsrf"\s+value="([^"]+)"', page)
        form = {"username": username, "password": password}
        if match:
            form["_xsrf"] = html.unescape(match.group(1))
        request = urllib.request.Request(f"{self.url}/hub/login?next=",
                                         data=urllib.parse.urlencode(form).encode())
        try:
            with opener.open(request, timeout=60) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    # -- users and their servers ------------------------------------------------------------

    def user_token(self, name: str) -> str:
        """A new API token of user ``name`` (its own permissions), made by the admin service."""
        status, body = self.api("POST", f"/users/{name}/tokens",
                                body={"note": "rk_jupyter hub test", "expires_in": 900})
        if status != 201:
            raise HubError(f"token for {name}: HTTP {status}: {body}")
        return str(body["token"])

    def server_state(self, name: str, token: str) -> dict[str, Any] | None:
        status, body = self.api("GET", f"/users/{name}", token)
        if status != 200:
            raise HubError(f"GET /users/{name}: HTTP {status}: {body}")
        return body.get("servers", {}).get("")

    def start_server(self, name: str, token: str) -> None:
        status, body = self.api("POST", f"/users/{name}/server", token)
        if status not in (201, 202):
            raise HubError(f"starting {name}'s server: HTTP {status}: {body}\n{self.log_tail()}")

    def wait_server_ready(self, name: str, token: str, timeout: float = 60.0) -> str:
        """Wait for ``name``'s server; return its base URL through the proxy."""
        state: dict[str, Any] | None = None

        def ready() -> bool:
            nonlocal state
            state = self.server_state(name, token)
            return bool(state and state.get("ready"))

        if not wait_for(ready, timeout, step=0.3):
            raise HubError(f"{name}'s server not ready after {timeout:g} s ({state}):\n"
                           f"{self.log_tail()}")
        assert state is not None
        return self.url + state["url"].rstrip("/")

    def stop_server(self, name: str, token: str) -> None:
        status, body = self.api("DELETE", f"/users/{name}/server", token)
        if status not in (202, 204):
            raise HubError(f"stopping {name}'s server: HTTP {status}: {body}")

    def wait_server_stopped(self, name: str, token: str, timeout: float = 60.0) -> None:
        if not wait_for(lambda: self.server_state(name, token) is None, timeout, step=0.3):
            raise HubError(f"{name}'s server still there after {timeout:g} s:\n"
                           f"{self.log_tail()}")


# -- a kernel through a single-user server -------------------------------------------------------


@dataclass
class CellRun:
    """What one execute_request produced on the kernel's websocket."""

    reply: dict[str, Any]
    outputs: list[dict[str, Any]]

    def results(self) -> list[str]:
        return [m["content"]["data"].get("text/plain", "") for m in self.outputs
                if m["header"]["msg_type"] == "execute_result"]

    def streams(self, name: str) -> str:
        return "".join(m["content"]["text"] for m in self.outputs
                       if m["header"]["msg_type"] == "stream" and m["content"]["name"] == name)


def start_kernel(server_url: str, token: str, kernel_name: str, timeout: float = 120.0
                 ) -> dict[str, Any]:
    status, body = http("POST", f"{server_url}/api/kernels", token, {"name": kernel_name},
                        timeout=timeout)
    if status != 201:
        raise HubError(f"starting kernel {kernel_name} at {server_url}: HTTP {status}: {body}")
    return dict(body)


def run_cell(server_url: str, token: str, kernel_id: str, code: str, username: str,
             timeout: float = 60.0) -> CellRun:
    """Send ``code`` as an execute_request over the kernel's websocket; collect its iopub
    output until the kernel is idle and the shell reply has come."""
    import websocket  # websocket-client

    session = uuid.uuid4().hex
    ws_url = (server_url.replace("http://", "ws://", 1)
              + f"/api/kernels/{kernel_id}/channels?session_id={session}")
    ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True,
                                     header=[f"Authorization: token {token}"])
    try:
        msg_id = secrets.token_hex(8)
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session,
                       "username": username, "version": "5.3",
                       "date": datetime.now(timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))
        outputs: list[dict[str, Any]] = []
        reply: dict[str, Any] | None = None
        idle = False
        deadline = time.monotonic() + timeout
        while reply is None or not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HubError(f"no answer to {code!r} within {timeout:g} s "
                               f"(reply={reply is not None}, idle={idle})")
            ws.settimeout(left)
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if msg["channel"] == "shell" and kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
            elif kind in ("stream", "execute_result", "display_data", "error"):
                outputs.append(msg)
        return CellRun(reply, outputs)
    finally:
        ws.close()
