"""JupyterLab in a real browser: a private ``jupyter lab`` server and Debian's headless Chromium
driven by Playwright, for tests/test_browser.py.

Plain module (no fixtures, no pytest imports): the test module wraps these context managers in
fixtures, so every server and browser is torn down in a ``finally``.

- ``lab_server(root, kernel_paths, allowed_kernelspecs)``: ``jupyter lab`` on 127.0.0.1 with a
  random token, in Jupyter dirs of its own under ``root`` (config, data, runtime, HOME), seeing
  only the kernelspecs in ``kernel_paths`` (plus the system ones, filtered by
  ``allowed_kernelspecs``).
- ``chromium()``: Playwright's Chromium driver on ``/usr/bin/chromium`` (Debian's package; the
  driver never downloads a browser of its own).
- ``NotebookPage``: open a notebook, wait for its kernel, run cells, read what a person sees.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import site
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google on this closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"
VIEWPORT = {"width": 1280, "height": 1000}
SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 5.0
# What JupyterLab shows for a kernel's states, in the status bar ("<display name> | Idle").
IDLE = "Idle"


def browser_unavailable_reason() -> str | None:
    """Why the browser tests cannot run here (None when they can), for pytest.skip."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not installed (run .ci/install-browser.sh)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "python package playwright not installed (run .ci/install-browser.sh)"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab not installed"
    return None


def artefact(name: str) -> Path:
    """Path for a screenshot kept as a test artefact (the directory is created)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def clear_artefacts() -> None:
    """Remove the screenshots of an earlier run, so that all in the directory are this run's."""
    if ARTIFACTS.is_dir():
        for old in ARTIFACTS.glob("*.png"):
            old.unlink()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
    except OSError:
        return ""


# -- the server ---------------------------------------------------------------------------------


@dataclass
class LabServer:
    """A running ``jupyter lab``; ``url`` is its base URL (no token)."""

    url: str
    token: str
    root: Path
    notebook_dir: Path
    runtime_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def lab_url(self, path: str = "", reset: bool = True) -> str:
        """URL of a JupyterLab page; ``reset`` starts from the default workspace (no tabs left
        over from an earlier page), the token logs the browser in."""
        query = ("reset&" if reset else "") + f"token={self.token}"
        return f"{self.url}/lab{'/tree/' + path if path else ''}?{query}"

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Call the server's REST API; returns the decoded JSON (None for an empty body)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method,
            headers={"Authorization": f"token {self.token}",
                     "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def log(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def shutdown_kernels(self, timeout: float = 20.0) -> None:
        """Shut down every kernel through the REST API, as the "Shut Down All" menu does, so
        that the provisioner stops each agent before the server goes away."""
        for kernel in self.api("GET", "/api/kernels"):
            with contextlib.suppress(urllib.error.URLError, OSError):
                self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=timeout)

    def agent_pids(self) -> list[int]:
        """Agents this server's kernels started (their log files are in our runtime dir)."""
        marker = str(self.runtime_dir).encode()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"rk_jupyter.agent" in cmdline and marker in cmdline:
                pids.append(int(entry))
        return pids


def _wait_ready(server: LabServer, deadline: float) -> None:
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with status {server.process.returncode}:\n"
                               f"{server.log()}")
        try:
            server.api("GET", "/api/status", timeout=2.0)
            return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"jupyter lab did not answer within {SERVER_START_TIMEOUT:.0f} s:"
                               f"\n{server.log()}")
        time.sleep(0.2)


def _stop_process_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the server's process group, SIGKILL it if it is still there after ``timeout``."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            # jupyter_server 2.x never finishes its shutdown once a kernel failed to start
            # (the failed kernel stays in MultiKernelManager._pending_kernels and
            # shutdown_all raises 404 for it), so a server that showed "Error Starting
            # Kernel" ignores SIGTERM.  The kernels were shut down over REST before this.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything it left in its group


def _write_config(root: Path, allowed_kernelspecs: Sequence[str]) -> Path:
    config = root / "config"
    (config / "labconfig").mkdir(parents=True, exist_ok=True)
    # No "Would you like to get notified about official Jupyter news?" toast over the page.
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    (config / "jupyter_server_config.json").write_text(json.dumps({
        "KernelSpecManager": {"allowed_kernelspecs": list(allowed_kernelspecs)},
        "LabApp": {"extension_manager": "readonly", "news_url": None,
                   "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"},
    }, indent=1))
    return config


@contextlib.contextmanager
def lab_server(
    root: Path, kernel_paths: Sequence[str], allowed_kernelspecs: Sequence[str]
) -> Iterator[LabServer]:
    """Start ``jupyter lab`` on loopback; stop it (kernels first) when the block ends.

    ``kernel_paths`` become JUPYTER_PATH (each holds ``kernels/<name>/kernel.json``).  HOME is
    a fresh directory, so ssh sees no ~/.ssh of the user's, and SSH_AUTH_SOCK is dropped: an
    ssh kernelspec offers exactly the keys it names.
    """
    root.mkdir(parents=True, exist_ok=True)
    notebook_dir = root / "notebooks"
    runtime_dir = root / "runtime"
    home = root / "home"
    for d in (notebook_dir, runtime_dir, home):
        d.mkdir(exist_ok=True)
    config_dir = _write_config(root, allowed_kernelspecs)
    env = dict(os.environ)
    for var in ("SSH_AUTH_SOCK", "JUPYTER_TOKEN", "JUPYTER_CONFIG_PATH"):
        env.pop(var, None)
    user_site = site.getusersitepackages()
    if os.path.isdir(user_site):  # a new HOME must not hide packages installed with --user
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [user_site, env.get("PYTHONPATH")]))
    env.update(
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(config_dir),
        JUPYTER_DATA_DIR=str(root / "data"),
        JUPYTER_RUNTIME_DIR=str(runtime_dir),
        JUPYTER_PATH=os.pathsep.join(kernel_paths),
        IPYTHONDIR=str(root / "ipython"),
        PYTHONUNBUFFERED="1",
    )
    port = _free_port()
    token = secrets.token_hex(24)
    argv = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={notebook_dir}",
    ]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    log_path = root / "jupyter-lab.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, env=env, cwd=notebook_dir,
                                   start_new_session=True)
    server = LabServer(f"http://127.0.0.1:{port}", token, root, notebook_dir, runtime_dir,
                       log_path, process)
    try:
        _wait_ready(server, time.monotonic() + SERVER_START_TIMEOUT)
        yield server
    finally:
        try:
            if process.poll() is None:
                with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
                    server.shutdown_kernels()
        finally:
            _stop_process_group(process, SERVER_STOP_TIMEOUT)
            _end_stray_agents(server)


def _end_stray_agents(server: LabServer, grace: float = 5.0) -> None:
    """Agents end when their kernel is shut down (or when the server's pipe to them closes);
    any of ours still there after ``grace`` seconds is killed with its engine."""
    deadline = time.monotonic() + grace
    while server.agent_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in server.agent_pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # the agent leads its own session (and group)


def write_notebook(path: Path, kernel_name: str, display_name: str, cells: Sequence[str]) -> Path:
    """A notebook whose metadata asks for ``kernel_name``, with one code cell per source."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": display_name,
                                 "language": "wolfram-language"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, str(path))
    return path


# -- the browser --------------------------------------------------------------------------------


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright; closed when the block ends."""
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


def new_page(browser: Any, timeout_ms: int = 30_000) -> Any:
    """A page in a fresh context (own cookies and storage), every wait bounded."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(timeout_ms)
    context.set_default_navigation_timeout(timeout_ms)
    return context.new_page()


def close_page(page: Any) -> None:
    with contextlib.suppress(Exception):
        page.context.close()


def screenshot(page: Any, name: str) -> Path:
    path = artefact(name)
    page.screenshot(path=str(path))
    return path


_PROMPT_DONE = re.compile(r"^\[\d+\]:$")


class NotebookPage:
    """One notebook open in JupyterLab, seen as a person sees it."""

    def __init__(self, page: Any, server: LabServer, path: str, cells: Sequence[str],
                 display_name: str) -> None:
        self.page = page
        self.server = server
        self.path = path
        self.sources = list(cells)
        self.display_name = display_name

    def open(self) -> NotebookPage:
        self.page.goto(self.server.lab_url(self.path))
        self.cells.first.wait_for(state="visible", timeout=60_000)
        return self

    @property
    def cells(self) -> Any:
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")

    @property
    def toolbar(self) -> Any:
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-NotebookPanel-toolbar")

    def kernel_status(self) -> Any:
        """The status bar's "<kernel display name> | <state>" item."""
        return self.page.locator("#jp-main-statusbar .jp-StatusBar-TextItem",
                                 has_text=" | ")

    def wait_kernel_idle(self, timeout_ms: int = 90_000) -> None:
        from playwright.sync_api import expect

        expect(self.kernel_status()).to_have_text(f"{self.display_name} | {IDLE}",
                                                   timeout=timeout_ms)

    def cell(self, source: str) -> Any:
        return self.cells.nth(self.sources.index(source))

    def prompt(self, source: str) -> Any:
        return self.cell(source).locator(".jp-InputArea-prompt")

    def outputs(self, source: str) -> Any:
        return self.cell(source).locator(".jp-OutputArea-output")

    def start(self, source: str) -> Any:
        """Select the cell (command mode) and run it with Ctrl+Enter, as a person does;
        returns the cell without waiting for the result."""
        from playwright.sync_api import expect

        cell = self.cell(source)
        prompt = cell.locator(".jp-InputArea-prompt")
        assert not _PROMPT_DONE.match(prompt.inner_text().strip()), \
            f"cell {source!r} ran before; each cell is run once"
        prompt.click()
        expect(cell).to_have_class(re.compile(r"\bjp-mod-active\b"))
        self.page.keyboard.press("Control+Enter")
        return cell

    def run(self, source: str, timeout_ms: int = 60_000) -> Any:
        """Run the cell and wait until its prompt shows an execution count."""
        from playwright.sync_api import expect

        cell = self.start(source)
        expect(cell.locator(".jp-InputArea-prompt")).to_have_text(_PROMPT_DONE,
                                                                   timeout=timeout_ms)
        return cell

    def save(self, timeout: float = 20.0) -> dict[str, Any]:
        """Save with Ctrl+S in command mode, as a person does; returns the notebook as the
        server then holds it (contents API), once its modification time has moved on."""
        before = self.server.api("GET", f"/api/contents/{self.path}?content=0")["last_modified"]
        self.page.keyboard.press("Escape")  # command mode: Ctrl+S saves the notebook
        self.page.keyboard.press("Control+s")
        deadline = time.monotonic() + timeout
        while True:
            model = self.server.api("GET", f"/api/contents/{self.path}")
            if model["last_modified"] != before:
                return model["content"]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path} was not saved within {timeout:.0f} s")
            time.sleep(0.2)


# -- ipywidgets (Manipulate) --------------------------------------------------------------------


def svg_of_img(img: Any) -> str:
    """The SVG document an ``<img src="data:image/svg+xml,...">`` shows (JupyterLab renders
    image/svg+xml that way, also inside an ipywidgets Output)."""
    import urllib.parse

    src = img.get_attribute("src") or ""
    if not src.startswith("data:image/svg+xml"):
        raise ValueError(f"not an SVG data URL: {src[:60]!r}")
    head, data = src.split(",", 1)
    if head.endswith(";base64"):
        import base64

        return base64.b64decode(data).decode()
    return urllib.parse.unquote(data)


def polyline_ys(svg: str, min_points: int = 3) -> list[float]:
    """The y coordinates of the points of the ``<polyline>``s with at least ``min_points``
    points (a Plot's curves: its axes and ticks are two-point polylines), in order; SVG's y
    grows downwards."""
    ys: list[float] = []
    for points in re.findall(r"<polyline[^>]*points=\"([^\"]+)\"", svg):
        if len(points.split()) >= min_points:
            ys += [float(p.split(",")[1]) for p in points.split()]
    return ys


def set_slider_readout(page: Any, slider: Any, text: str) -> None:
    """Type a value into an ipywidgets slider's readout (the number beside it, editable) and
    press Enter: one change of the value, as a person sets it exactly."""
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+a")
    page.keyboard.type(text)
    page.keyboard.press("Enter")
