"""Dynamic output in a real browser (issue 17, parts 1 and 5): what a person sees.

``Manipulate`` becomes ipywidgets in the kernel process; JupyterLab (its own private server)
draws them in headless Chromium. Each test changes a control as a person does (drag, typing
into the slider's readout, the keyboard, a click, a dropdown) and reads the page: the picture
under the controls (the cell's view output, updated in place) must be the view at the new
value, not only a different one (the plot of ``Sin[a x]`` on [0, 6] has as many turning points
as ``(π/2 + kπ)/a < 6`` has solutions, which the SVG's polyline shows). A slow view is
interrupted with the toolbar's stop button. ``Monitor`` with a ``ProgressIndicator`` and
``PrintTemporary`` are temporary: the bar must be seen advancing while the cell runs and be
gone after it. The slider and the Monitor are tested again through an ssh kernelspec on the
test bed at 50 ms RTT (``sshbed.proxy``).

The issue also asks that a saved notebook show a Manipulate's last view as ordinary output
(readable without the kernel): ``test_saved_notebook_shows_the_last_view_as_ordinary_output``
checks the saved file for exactly that.

Screenshots of failures go to test-artifacts/browser/.  Needs chromium and playwright
(``make system-packages``); skipped with that hint when they are missing.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_helpers import (
    LabServer,
    NotebookPage,
    artefact,
    browser_unavailable_reason,
    chromium,
    close_page,
    lab_server,
    new_page,
    polyline_ys,
    screenshot,
    set_slider_readout,
    svg_of_img,
    write_notebook,
)

_missing = browser_unavailable_reason()
pytestmark = [
    pytest.mark.skipif(_missing is not None, reason=_missing or ""),
    pytest.mark.timeout(150),
]

if _missing is None:
    from playwright.sync_api import expect

SSH_SPEC = "rk-dyn-ssh"
SSH_NAME = "Wolfram Language (dynamic, ssh 50 ms)"
RTT_MS = 50.0

SLIDER = "Manipulate[Plot[Sin[a x], {x, 0, 6}], {a, 1, 5}]"
KEYS = "Manipulate[Plot[Sin[k x], {x, 0, 6}], {k, 1, 4}]"
CHOICES = ("Manipulate[{f[1.0], n^2, b}, {f, {Sin, Cos, Tan}}, {n, {1, 2, 3, 4, 5, 6, 7}}, "
           "{b, {True, False}}]")
# The first view (u = 0) is quick; views above 0.5 take 30 s unless interrupted.
SLOW = "Manipulate[If[u > 0.5, Pause[30]]; u, {u, 0, 1}]"
MONITOR = "Monitor[Do[Pause[0.05], {i, 60}], ProgressIndicator[i, {1, 60}]]"
TEMPORARY = 'PrintTemporary["rk: working on it"]; Pause[2]; 6*7'
SAVED = "Manipulate[Plot[Sin[c x], {x, 0, 6}], {c, 1, 5}]"
LOCAL_CELLS = [SLIDER, KEYS, CHOICES, SLOW, MONITOR, TEMPORARY, SAVED]
SSH_CELLS = [SLIDER, MONITOR]

WIDGET_OUTPUT = ".widget-output .jp-OutputArea"  # under the controls: a view's prints, messages
# The view: the cell's own output after the controls' (a display_data updated in place).
VIEW = ".jp-Cell-outputArea > .jp-OutputArea-child:not(:has(.jupyter-widgets))"
VIEW_TIMEOUT_MS = 30_000
STOP = 'jp-button[data-command="notebook:interrupt-kernel"]'


# -- what the picture must show -----------------------------------------------------------------


def turning_points(ys: list[float]) -> int:
    """How often the curve changes between rising and falling (flat steps ignored)."""
    slopes = [b - a for a, b in zip(ys, ys[1:], strict=False) if abs(b - a) > 1e-9]
    return sum(1 for s, t in zip(slopes, slopes[1:], strict=False) if (s > 0) != (t > 0))


def expected_turning_points(a: float, end: float = 6.0) -> set[int]:
    """Turning points of ``Sin[a x]`` on (0, end): x = (π/2 + kπ)/a.  One less is accepted
    when the last one lies within 0.05 of the end (the plot's samples may not resolve it)."""
    count = sum(1 for k in range(1000) if (math.pi / 2 + k * math.pi) / a < end)
    last = (math.pi / 2 + (count - 1) * math.pi) / a
    return {count, count - 1} if end - last < 0.05 else {count}


def readout(slider: Any) -> float:
    return float(slider.locator(".widget-readout").inner_text())


def view_img(cell: Any) -> Any:
    return cell.locator(f"{VIEW} .jp-RenderedSVG img")


def wait_for_view_of(page: Any, cell: Any, a: float, not_src: str | None = None,
                     timeout: float = VIEW_TIMEOUT_MS / 1000) -> str:
    """Wait until the widget's picture is the plot of ``Sin[a x]`` (and, when given, another
    picture than ``not_src``); returns its src.  Fails with what was last shown."""
    img = view_img(cell)
    want = expected_turning_points(a)
    deadline = time.monotonic() + timeout
    seen: Any = None
    while True:
        with contextlib.suppress(Exception):
            src = img.get_attribute("src", timeout=1_000)
            seen = turning_points(polyline_ys(svg_of_img(img)))
            if seen in want and src != not_src:
                return src
        if time.monotonic() > deadline:
            raise AssertionError(f"the picture is not the plot at a = {a} within {timeout:.0f} "
                                 f"s: it has {seen} turning points, {sorted(want)} expected"
                                 + (" (or it did not change)" if not_src else ""))
        page.wait_for_timeout(100)


def widget_text(cell: Any) -> Any:
    return cell.locator(f'{VIEW} [data-mime-type="text/plain"]')


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernels_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dynamic-kernels")


@pytest.fixture(scope="module")
def lab(rk_local: str, jupyter_env: str, kernels_prefix: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    paths = [str(kernels_prefix / "share" / "jupyter"),
             os.path.join(jupyter_env, "share", "jupyter")]
    with lab_server(tmp_path_factory.mktemp("lab-dynamic"), paths,
                    allowed_kernelspecs=[rk_local, SSH_SPEC]) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@contextlib.contextmanager
def open_notebook(lab: LabServer, browser: Any, path: str, kernel: str,
                  cells: list[str]) -> Iterator[NotebookPage]:
    """``path`` on ``kernel`` in a page of its own, kernel idle; its kernel is shut down (and
    the page closed) afterwards."""
    display_name = lab.api("GET", "/api/kernelspecs")["kernelspecs"][kernel]["spec"][
        "display_name"]
    write_notebook(lab.notebook_dir / path, kernel, display_name, cells)
    page = new_page(browser)
    try:
        nb = NotebookPage(page, lab, path, cells, display_name).open()
        nb.wait_kernel_idle(timeout_ms=120_000)
        yield nb
    finally:
        close_page(page)
        for session in lab.api("GET", "/api/sessions"):
            if session["path"] == path:
                with contextlib.suppress(Exception):
                    lab.api("DELETE", f"/api/sessions/{session['id']}", timeout=30)


@pytest.fixture(scope="module")
def local_notebook(lab: LabServer, browser: Any) -> Iterator[NotebookPage]:
    with open_notebook(lab, browser, "dynamic.ipynb", "rk-local", LOCAL_CELLS) as nb:
        yield nb


@pytest.fixture(scope="module")
def ssh_notebook(lab: LabServer, browser: Any, sshbed: Any,
                 kernels_prefix: Path) -> Iterator[NotebookPage]:
    """The same cells on an ssh kernelspec whose host is the bed behind a proxy that adds
    25 ms each way (50 ms RTT, 2 Mbit/s)."""
    from rk_jupyter import kernelspec

    proxy = sshbed.proxy(delay_ms=RTT_MS / 2)
    try:
        kernelspec.install("dyn-ssh", SSH_NAME, {
            "transport": "ssh", "host": proxy.host, "port": proxy.port, "user": sshbed.user,
            "identity_file": sshbed.key_file, "known_hosts": sshbed.known_hosts,
            "remote_python": sshbed.remote_python, "engine": "mathics"},
            prefix=str(kernels_prefix))
        with open_notebook(lab, browser, "dynamic-ssh.ipynb", SSH_SPEC, SSH_CELLS) as nb:
            yield nb
    finally:
        proxy.stop()


def _keep_failure(nb: NotebookPage, request: pytest.FixtureRequest) -> Iterator[NotebookPage]:
    failed_before = request.session.testsfailed
    yield nb
    if request.session.testsfailed > failed_before:
        with contextlib.suppress(Exception):  # it must not hide the failure
            screenshot(nb.page, f"FAILED-{request.node.name}.png")


@pytest.fixture
def nb(local_notebook: NotebookPage, request: pytest.FixtureRequest) -> Iterator[NotebookPage]:
    yield from _keep_failure(local_notebook, request)


@pytest.fixture
def nb_ssh(ssh_notebook: NotebookPage,
           request: pytest.FixtureRequest) -> Iterator[NotebookPage]:
    yield from _keep_failure(ssh_notebook, request)


# -- checks shared by the local and the ssh notebook --------------------------------------------


def check_slider_drag_changes_the_plot(nb: NotebookPage) -> None:
    cell = nb.run(SLIDER, timeout_ms=90_000)
    slider = cell.locator(".widget-slider")
    expect(slider).to_be_visible(timeout=VIEW_TIMEOUT_MS)
    assert readout(slider) == 1.0
    before = wait_for_view_of(nb.page, cell, 1.0)  # the first view: 2 turning points
    track = slider.locator(".noUi-base").bounding_box()
    handle = slider.locator(".noUi-handle").bounding_box()
    assert track and handle, "the slider has no size on the page"
    nb.page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    nb.page.mouse.down()
    target_x = track["x"] + 0.75 * track["width"]
    nb.page.mouse.move(target_x, handle["y"] + handle["height"] / 2, steps=8)
    nb.page.mouse.up()
    a = readout(slider)
    assert 3.5 <= a <= 4.5, f"dragging to 3/4 of the track reads {a}"
    wait_for_view_of(nb.page, cell, a, not_src=before)
    cell.screenshot(path=str(artefact(f"dyn-slider-{nb.path}.png")))


def check_monitor_bar_advances_and_goes(nb: NotebookPage) -> None:
    cell = nb.start(MONITOR)
    bar = cell.locator("progress.rk-progress")
    expect(bar).to_be_visible(timeout=20_000)
    values: list[float] = []
    deadline = time.monotonic() + 60
    prompt = cell.locator(".jp-InputArea-prompt")
    while not re.fullmatch(r"\[\d+\]:", prompt.inner_text().strip()):
        assert time.monotonic() < deadline, "the Monitor cell did not end within 60 s"
        seen = bar.evaluate_all("bs => bs.filter(b => b.offsetWidth > 0)"
                                ".map(b => b.value)")
        assert len(seen) <= 1, f"{len(seen)} progress bars on the page at once"
        values += seen
        nb.page.wait_for_timeout(120)
    distinct = sorted(set(values))
    assert len(distinct) >= 3, f"the bar did not advance while the cell ran: {values}"
    assert values == sorted(values), f"the bar went backwards: {values}"
    assert distinct[-1] >= 0.5, f"the bar never got past {distinct[-1]}"
    expect(bar).to_have_count(0)
    expect(cell.locator(".jp-OutputArea-output")).to_have_count(0)  # Do[...] returns Null


# -- rk-local -----------------------------------------------------------------------------------


def test_dragging_the_slider_draws_the_plot_at_the_new_value(nb: NotebookPage) -> None:
    check_slider_drag_changes_the_plot(nb)


def test_the_keyboard_moves_the_slider_and_the_plot_follows(nb: NotebookPage) -> None:
    cell = nb.run(KEYS, timeout_ms=90_000)
    slider = cell.locator(".widget-slider")
    first = wait_for_view_of(nb.page, cell, 1.0)
    handle = slider.locator(".noUi-handle")
    handle.focus()
    nb.page.keyboard.press("ArrowRight")  # one step: (4 - 1)/100
    expect(slider.locator(".widget-readout")).to_have_text("1.030")
    stepped = wait_for_view_of(nb.page, cell, 1.03, not_src=first)
    nb.page.keyboard.press("End")
    expect(slider.locator(".widget-readout")).to_have_text("4.000")
    wait_for_view_of(nb.page, cell, 4.0, not_src=stepped)  # 8 turning points
    nb.page.keyboard.press("Home")
    expect(slider.locator(".widget-readout")).to_have_text("1.000")
    wait_for_view_of(nb.page, cell, 1.0)
    assert nb.page.evaluate("() => document.activeElement.getAttribute('role')") == "slider", \
        "the slider lost the keyboard focus when its view was redrawn"


def test_buttons_dropdown_and_checkbox_each_change_the_view(nb: NotebookPage) -> None:
    cell = nb.run(CHOICES, timeout_ms=90_000)
    text = widget_text(cell)
    expect(text).to_have_text("{0.841471, 1, True}", timeout=VIEW_TIMEOUT_MS)
    buttons = cell.locator(".widget-toggle-buttons button")
    expect(buttons).to_have_text(["Sin", "Cos", "Tan"])  # three choices: a row of buttons
    buttons.filter(has_text="Cos").click()
    expect(text).to_have_text("{0.540302, 1, True}", timeout=VIEW_TIMEOUT_MS)
    expect(buttons.filter(has_text="Cos")).to_have_class(re.compile(r"\bmod-active\b"))
    dropdown = cell.locator(".widget-dropdown select")  # seven choices: a dropdown
    expect(dropdown.locator("option")).to_have_count(7)
    dropdown.select_option(label="6")
    expect(text).to_have_text("{0.540302, 36, True}", timeout=VIEW_TIMEOUT_MS)
    checkbox = cell.locator(".widget-checkbox input[type=checkbox]")
    expect(checkbox).to_be_checked()
    checkbox.click()
    expect(text).to_have_text("{0.540302, 36, False}", timeout=VIEW_TIMEOUT_MS)
    cell.screenshot(path=str(artefact("dyn-choices.png")))


def test_stop_button_aborts_a_slow_view_and_the_slider_still_works(nb: NotebookPage) -> None:
    cell = nb.run(SLOW, timeout_ms=90_000)
    slider = cell.locator(".widget-slider")
    text = widget_text(cell)
    expect(text).to_have_text("0", timeout=VIEW_TIMEOUT_MS)
    set_slider_readout(nb.page, slider, "0.8")
    nb.page.wait_for_timeout(1_500)  # the view is now in its Pause[30]
    expect(text).to_have_text("0")
    started = time.monotonic()
    nb.toolbar.locator(STOP).click()
    outputs = cell.locator(WIDGET_OUTPUT)
    expect(outputs).to_contain_text(re.compile("abort", re.IGNORECASE), timeout=10_000)
    elapsed = time.monotonic() - started
    assert elapsed < 5.0, f"the stop button took {elapsed:.1f} s to end the view"
    cell.screenshot(path=str(artefact("dyn-aborted.png")))
    set_slider_readout(nb.page, slider, "0.2")
    expect(text).to_have_text("0.2", timeout=VIEW_TIMEOUT_MS)
    expect(outputs).not_to_contain_text(re.compile("abort", re.IGNORECASE))


def test_monitor_progress_bar_advances_during_the_cell_and_is_gone_after(
        nb: NotebookPage) -> None:
    check_monitor_bar_advances_and_goes(nb)


def test_print_temporary_is_seen_during_the_cell_and_gone_after(nb: NotebookPage) -> None:
    cell = nb.start(TEMPORARY)
    outputs = cell.locator(".jp-OutputArea-output")
    expect(outputs.filter(has_text="rk: working on it")).to_be_visible(timeout=10_000)
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[*]:")  # still running
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text(re.compile(r"^\[\d+\]:$"),
                                                              timeout=30_000)
    expect(outputs).to_have_text(["42"])


def test_saved_notebook_shows_the_last_view_as_ordinary_output(nb: NotebookPage) -> None:
    """Issue 17: "A saved notebook shows the last output as ordinary output (readable without
    the kernel)".  Saved after a change to c = 3, the cell must hold the plot at c = 3 (6
    turning points) in an output's image/svg+xml, outside the widget's state: that is what
    JupyterLab without the kernel, nbviewer and GitHub show."""
    cell = nb.run(SAVED, timeout_ms=90_000)
    first = wait_for_view_of(nb.page, cell, 1.0)
    set_slider_readout(nb.page, cell.locator(".widget-slider"), "3")
    wait_for_view_of(nb.page, cell, 3.0, not_src=first)
    saved = nb.save()
    outputs = saved["cells"][LOCAL_CELLS.index(SAVED)]["outputs"]
    pictures = []
    for output in outputs:
        svg = output.get("data", {}).get("image/svg+xml")
        if svg:
            pictures.append(turning_points(polyline_ys("".join(svg))))
    assert pictures, f"no picture in the saved cell: {[o.get('data', {}).keys() for o in outputs]}"
    assert pictures[-1] in expected_turning_points(3.0), (
        f"the saved cell shows a plot with {pictures[-1]} turning points: the view at c = 1 "
        "(its first view), not the last one at c = 3 (6); the last view exists only in the "
        "kernel's widget state")


# -- over ssh at 50 ms RTT ----------------------------------------------------------------------


def test_slider_over_ssh_at_50ms_rtt(nb_ssh: NotebookPage) -> None:
    check_slider_drag_changes_the_plot(nb_ssh)


def test_monitor_over_ssh_at_50ms_rtt(nb_ssh: NotebookPage) -> None:
    check_monitor_bar_advances_and_goes(nb_ssh)
