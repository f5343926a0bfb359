"""JupyterLab in a real browser (issue 6, part 1): what a person sees.

A private ``jupyter lab`` (loopback, random token, its own Jupyter dirs) and Debian's headless
Chromium driven by Playwright.  A notebook on ``rk-local`` runs cells and the tests read the
page: MathJax typesetting of TeX, the SVG plot, the stderr style of messages, the
``%rkernel status`` table, the toolbar's stop button, the launcher's logo and names, and the
"Error Starting Kernel" dialog with the transport's precise cause (an invalid kernelspec on the
local transport; a refused key on the ssh transport against the ssh test bed).

Screenshots are kept in test-artifacts/browser/.  Needs .ci/install-browser.sh (chromium,
playwright); skipped with that hint when they are missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from browser_helpers import (
    LabServer,
    NotebookPage,
    artefact,
    browser_unavailable_reason,
    chromium,
    clear_artefacts,
    close_page,
    lab_server,
    new_page,
    screenshot,
    write_notebook,
)

_missing = browser_unavailable_reason()
pytestmark = [
    pytest.mark.skipif(_missing is not None, reason=_missing or ""),
    pytest.mark.timeout(150),
]

if _missing is None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

# What a person picks in the launcher: README's quickstart says so, and `rk-jupyter add local
# --local --engine mathics` is documented to give it.
LOCAL_NAME = "Wolfram Language (Mathics3, local)"
BAD_ENGINE = "rk-badengine"
REFUSED = "rk-refused"

INTEGRATE = "Integrate[x^2, x]"
PLOT = "Plot[Sin[x], {x, 0, 6}]"
PLOT3D = "Plot3D[Sin[x y], {x, 0, 3}, {y, 0, 3}]"
ONE_OVER_ZERO = "1/0"
STATUS = "%rkernel status"
SET_X = "x = 0;"
LOOP = "While[True, x++]"
X_POSITIVE = "x > 0"
CELLS = [INTEGRATE, PLOT, PLOT3D, ONE_OVER_ZERO, STATUS, SET_X, LOOP, X_POSITIVE]

STDERR = '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]'


def ssh_transport_available() -> bool:
    """True once rk_jupyter.provisioning.transports can make an ``ssh`` transport."""
    from rk_jupyter.provisioning import transports

    try:
        transports.create_transport({"transport": "ssh"}, os.devnull)
    except transports.TransportError as exc:
        return "unknown transport" not in str(exc)
    return True


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernels_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests' own kernelspecs go (beside rk-local's prefix)."""
    return tmp_path_factory.mktemp("browser-kernels")


@pytest.fixture(scope="module")
def lab(rk_local: str, jupyter_env: str, kernels_prefix: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    paths = [str(kernels_prefix / "share" / "jupyter"), os.path.join(jupyter_env, "share",
                                                                      "jupyter")]
    with lab_server(tmp_path_factory.mktemp("lab"), paths,
                    allowed_kernelspecs=[rk_local, BAD_ENGINE, REFUSED]) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    clear_artefacts()
    with chromium() as b:
        yield b


@pytest.fixture
def page_factory(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """Fresh pages; each is screenshotted if the test failed, and closed."""
    pages: list[Any] = []
    failed_before = request.session.testsfailed

    def make() -> Any:
        page = new_page(browser)
        pages.append(page)
        return page

    yield make
    for i, page in enumerate(pages):
        if request.session.testsfailed > failed_before:
            with contextlib.suppress(Exception):  # it must not hide the failure
                screenshot(page, f"FAILED-{request.node.name}-{i}.png")
        close_page(page)


@pytest.fixture(scope="module")
def notebook(lab: LabServer, browser: Any) -> Iterator[NotebookPage]:
    """main.ipynb on rk-local, open in one page for the notebook tests, kernel idle."""
    # Waits use the installed display name, so that a wrong name fails only the tests that
    # check names.
    installed = lab.api("GET", "/api/kernelspecs")["kernelspecs"]["rk-local"]
    display_name = installed["spec"]["display_name"]
    write_notebook(lab.notebook_dir / "main.ipynb", "rk-local", display_name, CELLS)
    page = new_page(browser)
    try:
        nb = NotebookPage(page, lab, "main.ipynb", CELLS, display_name).open()
        nb.wait_kernel_idle()
        yield nb
    finally:
        close_page(page)


@pytest.fixture
def nb(notebook: NotebookPage, request: pytest.FixtureRequest) -> Iterator[NotebookPage]:
    failed_before = request.session.testsfailed
    yield notebook
    if request.session.testsfailed > failed_before:
        with contextlib.suppress(Exception):  # it must not hide the failure
            screenshot(notebook.page, f"FAILED-{request.node.name}.png")


def _open_and_expect_start_error(page: Any, lab: LabServer, path: str) -> Any:
    """Open ``path``; return the "Error Starting Kernel" dialog that must appear."""
    page.goto(lab.lab_url(path))
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_be_visible(timeout=60_000)
    expect(dialog.locator(".jp-Dialog-header")).to_have_text("Error Starting Kernel")
    return dialog


def _sideways_overflow(dialog: Any) -> tuple[int, int]:
    """(width of the message, width the dialog shows): JupyterLab puts the message in a <pre>,
    so a long line runs out of the dialog and is read only by scrolling sideways."""
    sizes = dialog.locator(".jp-Dialog-body").evaluate(
        "b => [b.scrollWidth, b.clientWidth]")
    return int(sizes[0]), int(sizes[1])


def _assert_readable(overflow: tuple[int, int]) -> None:
    needed, shown = overflow
    assert needed <= shown + 1, (
        f"the dialog shows {shown} of the message's {needed} px: a person sees it cut off "
        "(long line in a <pre>); the TransportError message needs line breaks")


def _dismiss_and_check_no_kernel(page: Any, lab: LabServer, path: str, kernel: str) -> None:
    """Ok the error; JupyterLab then offers "Select Kernel": pick "No Kernel".  Nothing of
    the failed start may remain on the server."""
    dialog = page.locator(".jp-Dialog")
    dialog.get_by_role("button", name="Ok").click()
    select = dialog.filter(has=page.locator(".jp-Dialog-header", has_text="Select Kernel"))
    try:
        select.wait_for(timeout=5_000)
    except PlaywrightTimeout:
        pass  # a JupyterLab that does not ask
    else:
        select.get_by_role("button", name="No Kernel").click()
    expect(dialog).to_have_count(0)
    toolbar = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Toolbar-kernelName "
                           ".jp-ToolbarButtonComponent-label")
    expect(toolbar).to_have_text("No Kernel")
    assert [k for k in lab.api("GET", "/api/kernels") if k["name"] == kernel] == []
    assert [s for s in lab.api("GET", "/api/sessions") if s["path"] == path] == []


# -- the launcher -------------------------------------------------------------------------------


def test_launcher_shows_rk_local_with_its_logo_and_name(lab: LabServer, page_factory) -> None:
    page = page_factory()
    page.goto(lab.lab_url())
    launcher = page.locator(".jp-Launcher")
    expect(launcher).to_be_visible(timeout=60_000)
    logo_svg = resources.files("rk_jupyter.kernelspecs").joinpath("logo-svg.svg").read_bytes()
    logo = 'img.jp-Launcher-kernelIcon[src$="/kernelspecs/rk-local/logo-svg.svg"]'
    cards = {}
    for category in ("Notebook", "Console"):
        card = launcher.locator(f'.jp-LauncherCard[data-category="{category}"]',
                                has=page.locator(logo))
        expect(card).to_have_count(1)
        img = card.locator(logo)
        img.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                               arg=img.element_handle(), timeout=10_000)
        box = img.bounding_box()
        assert box and box["width"] >= 32 and box["height"] >= 32, box
        cards[category] = card
    screenshot(page, "01-launcher.png")
    # The picture the browser loaded is the package's logo...
    src = launcher.locator(logo).first.get_attribute("src")
    auth = {"Authorization": f"token {lab.token}"}
    served = page.request.get(urllib.parse.urljoin(lab.url, src), headers=auth)
    assert served.ok and served.body() == logo_svg
    assert "svg" in served.headers["content-type"]
    # ...and the PNG logos other front ends use are served too.
    spec = lab.api("GET", "/api/kernelspecs")["kernelspecs"]["rk-local"]
    assert spec["spec"]["language"] == "wolfram-language"
    assert {"logo-32x32", "logo-64x64", "logo-svg"} <= set(spec["resources"])
    for key in ("logo-32x32", "logo-64x64"):
        png = page.request.get(urllib.parse.urljoin(lab.url, spec["resources"][key]),
                               headers=auth)
        assert png.ok and png.body().startswith(b"\x89PNG"), key
    # The name under the logo (and in the tooltip) is the documented one.
    for card in cards.values():
        expect(card.locator(".jp-LauncherCard-label")).to_have_text(LOCAL_NAME)
        expect(card).to_have_attribute("title", LOCAL_NAME)


# -- a notebook on rk-local ---------------------------------------------------------------------


def test_toolbar_and_status_bar_name_the_kernel(nb: NotebookPage) -> None:
    screenshot(nb.page, "02-notebook-opened.png")
    label = nb.toolbar.locator(".jp-Toolbar-kernelName .jp-ToolbarButtonComponent-label")
    expect(label).to_have_text(LOCAL_NAME)
    expect(nb.kernel_status()).to_have_text(f"{LOCAL_NAME} | Idle")


def test_integrate_result_is_typeset_by_mathjax(nb: NotebookPage) -> None:
    cell = nb.run(INTEGRATE)
    latex = cell.locator('.jp-RenderedLatex[data-mime-type="text/latex"]')
    math = latex.locator("mjx-container")
    expect(math).to_be_visible(timeout=30_000)
    expect(latex.locator("mjx-merror")).to_have_count(0)  # MathJax's mark for TeX it rejects
    mml = math.locator("mjx-assistive-mml").inner_html()  # what MathJax understood: x^3 / 3
    assert re.search(r"<mfrac><msup><mi>x</mi><mn>3</mn></msup><mn>3</mn></mfrac>", mml), mml
    box = math.bounding_box()
    assert box and box["height"] > 20 and box["width"] > 10, box  # a built-up fraction
    cell.screenshot(path=str(artefact("03-integrate-mathjax.png")))


def test_plot_shows_as_an_svg_image(nb: NotebookPage) -> None:
    cell = nb.run(PLOT, timeout_ms=90_000)
    # JupyterLab renders image/svg+xml as <img src="data:image/svg+xml,...">: no inline <svg>.
    img = cell.locator('.jp-RenderedSVG[data-mime-type="image/svg+xml"] img')
    expect(img).to_be_visible(timeout=30_000)
    nb.page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                              arg=img.element_handle(), timeout=10_000)
    src = img.get_attribute("src")
    assert src.startswith("data:image/svg+xml,")
    svg = urllib.parse.unquote(src.split(",", 1)[1])
    assert svg.lstrip().startswith("<svg") and "</svg>" in svg
    points = re.findall(r"<polyline[^>]*points=\"([^\"]+)\"", svg)
    assert points and max(len(p.split()) for p in points) > 50, "no curve in the plot"
    box = img.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 100, box
    cell.screenshot(path=str(artefact("04-plot-svg.png")))


def test_plot3d_shows_a_picture_that_turns_when_dragged(nb: NotebookPage) -> None:
    """Graphics3D comes as HTML whose canvas (drawn by its own script, shipped with the
    package) replaces the static SVG; dragging it draws another view."""
    cell = nb.run(PLOT3D, timeout_ms=90_000)
    canvas = cell.locator(".rk-graphics3d canvas")
    expect(canvas).to_be_visible(timeout=30_000)
    box = canvas.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 200, box
    painted = ("c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
               " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }")
    snapshot = "c => c.toDataURL()"
    handle = canvas.element_handle()
    assert nb.page.evaluate(painted, handle) > 10_000, "the surface is drawn"
    before = nb.page.evaluate(snapshot, handle)
    cell.screenshot(path=str(artefact("04b-plot3d.png")))
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    nb.page.mouse.move(x, y)
    nb.page.mouse.down()
    nb.page.mouse.move(x + 60, y + 20, steps=5)
    nb.page.mouse.up()
    assert nb.page.evaluate(snapshot, handle) != before, "dragging turns the view"
    cell.screenshot(path=str(artefact("04c-plot3d-turned.png")))


def test_message_is_shown_in_the_stderr_style(nb: NotebookPage) -> None:
    cell = nb.run(ONE_OVER_ZERO)
    stderr = cell.locator(STDERR)
    expect(stderr).to_have_count(1)
    expect(stderr).to_contain_text("Power::infy")
    expect(stderr).to_contain_text("Infinite expression")
    result = cell.locator(".jp-OutputArea-executeResult .jp-OutputArea-output")
    expect(result).to_contain_text("ComplexInfinity")
    background = stderr.evaluate("e => getComputedStyle(e).backgroundColor")
    normal = result.evaluate("e => getComputedStyle(e).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent", normal), (background, normal)
    cell.screenshot(path=str(artefact("05-message-stderr.png")))


def test_status_magic_is_rendered_as_a_table(nb: NotebookPage) -> None:
    cell = nb.run(STATUS)
    table = cell.locator('.jp-RenderedHTMLCommon[data-mime-type="text/html"] table')
    expect(table).to_be_visible()
    rows = {th.strip(): td.strip() for th, td in zip(table.locator("th").all_inner_texts(),
                                                     table.locator("td").all_inner_texts(),
                                                     strict=True)}
    assert list(rows) == ["transport", "launched by", "endpoint", "engine", "state",
                          "engine state",
                          "engine memory", "engine restarts", "uptime", "rtt", "sent",
                          "received", "compression", "large outputs", "reconnects"], rows
    assert rows["engine state"] == "running" and rows["engine restarts"] == "0", rows
    assert re.fullmatch(r"[\d.]+ [KMG]iB in use, limit none", rows["engine memory"]), rows
    assert rows["reconnects"] == "0", rows
    assert rows["transport"] == "local" and rows["state"] == "connected", rows
    assert rows["launched by"].startswith("the provisioner"), rows
    assert rows["engine"].startswith("Mathics3"), rows
    assert re.fullmatch(r"[\d.]+ ms", rows["rtt"]), rows
    assert table.bounding_box()["height"] > 9 * 15
    cell.screenshot(path=str(artefact("06-status-table.png")))


def test_stop_button_interrupts_a_loop_and_keeps_its_definitions(nb: NotebookPage) -> None:
    nb.run(SET_X)
    loop = nb.start(LOOP)
    expect(loop.locator(".jp-InputArea-prompt")).to_have_text("[*]:")
    expect(nb.kernel_status()).to_have_text(f"{nb.display_name} | Busy", timeout=10_000)
    time.sleep(1.5)  # let x count for a while
    stop = nb.toolbar.locator('jp-button[data-command="notebook:interrupt-kernel"]')
    expect(stop).to_have_attribute("title", "Interrupt the kernel")
    started = time.monotonic()
    stop.click()
    expect(loop.locator(".jp-InputArea-prompt")).to_have_text(re.compile(r"^\[\d+\]:$"),
                                                              timeout=15_000)
    elapsed = time.monotonic() - started
    assert elapsed < 5.0, f"the stop button took {elapsed:.1f} s to end the loop"
    expect(loop.locator(STDERR)).to_contain_text("$Aborted")
    nb.wait_kernel_idle(timeout_ms=10_000)
    check = nb.run(X_POSITIVE)
    result = check.locator('.jp-OutputArea-executeResult [data-mime-type="text/plain"]')
    expect(result).to_have_text("True")
    nb.page.screenshot(path=str(artefact("07-after-interrupt.png")))


# -- kernels that cannot start ------------------------------------------------------------------


def test_start_error_dialog_names_the_cause(lab: LabServer, kernels_prefix: Path,
                                            page_factory) -> None:
    """A kernelspec the local transport refuses: JupyterLab's dialog carries the precise
    message of the TransportError raised in the provisioner's pre_launch."""
    from rk_jupyter import kernelspec

    kernelspec.install("badengine", "Wolfram Language (bad engine)",
                       {"transport": "local", "engine": "nonsense", "compression": "brotli"},
                       prefix=str(kernels_prefix))
    write_notebook(lab.notebook_dir / "bad-engine.ipynb", BAD_ENGINE,
                   "Wolfram Language (bad engine)", ["1 + 1"])
    page = page_factory()
    dialog = _open_and_expect_start_error(page, lab, "bad-engine.ipynb")
    body = dialog.locator(".jp-Dialog-body")
    expect(body).to_contain_text("unknown engine 'nonsense' in the kernelspec")
    expect(body).to_contain_text("mathics, wolfram")
    expect(body).not_to_contain_text("Unhandled error")
    overflow = _sideways_overflow(dialog)
    screenshot(page, "08-error-starting-kernel-bad-engine.png")
    _dismiss_and_check_no_kernel(page, lab, "bad-engine.ipynb", BAD_ENGINE)
    _assert_readable(overflow)


@pytest.mark.skipif(not ssh_transport_available(), reason="ssh transport not available")
def test_refused_key_dialog_names_host_user_and_key(lab: LabServer, kernels_prefix: Path,
                                                    sshbed, page_factory) -> None:
    """An ssh kernelspec whose key the host refuses (the host key itself is known and right):
    the dialog says that the login was refused, for whom, where, and which key was tried."""
    from rk_jupyter.cli import main

    destination = f"{sshbed.user}@{sshbed.host}:{sshbed.port}"
    argv = ["add", "refused", "--host", destination,
            "--identity", sshbed.unauthorized_key_file,
            "--known-hosts", sshbed.known_hosts,
            "--remote-python", sshbed.remote_python,
            "--engine", "mathics",
            "--prefix", str(kernels_prefix)]
    try:
        assert main(argv) == 0
    except SystemExit as exc:
        pytest.fail(f"rk-jupyter {' '.join(argv)} failed ({exc}): transports knows 'ssh' "
                    "but the CLI cannot add an ssh kernelspec")
    write_notebook(lab.notebook_dir / "refused.ipynb", REFUSED, "Wolfram Language (refused)",
                   ["1 + 1"])
    page = page_factory()
    dialog = _open_and_expect_start_error(page, lab, "refused.ipynb")
    body = dialog.locator(".jp-Dialog-body")
    expect(body).to_contain_text(re.compile(r"refused|denied|not accepted", re.IGNORECASE))
    expect(body).to_contain_text(sshbed.user)
    expect(body).to_contain_text(f"{sshbed.host}:{sshbed.port}")
    expect(body).to_contain_text(sshbed.unauthorized_key_file)
    expect(body).not_to_contain_text(re.compile(r"host key", re.IGNORECASE))
    expect(body).not_to_contain_text("Unhandled error")
    overflow = _sideways_overflow(dialog)
    screenshot(page, "09-error-starting-kernel-refused-key.png")
    _dismiss_and_check_no_kernel(page, lab, "refused.ipynb", REFUSED)
    _assert_readable(overflow)
