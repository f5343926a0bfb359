"""Dynamic output (issue 17 parts 1 and 5): Manipulate, Monitor, PrintTemporary and
ProgressIndicator, on the real Mathics3 engine and through the real kernel (rk-local, driven by
jupyter_client as JupyterLab drives it, widget changes sent as the browser's comm messages).
What a person sees in JupyterLab is tested in tests/test_browser_dynamic.py."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

from rk_jupyter.agent.engines.mathics import MathicsEngine
from rk_jupyter.link.packets import MANIPULATE_MIME, manipulate_request, packet_name

from kernel_helpers import execute
from test_engine_mathics import START_TIMEOUT, FakeHost, names, result, run

pytest.importorskip("mathics", reason="Mathics3 is not installed")

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


# -- the engine ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Any:
    host = FakeHost()
    engine = MathicsEngine(host, {})
    engine.start(START_TIMEOUT)
    yield engine, host
    engine.close()


def spec_of(packets: list[Any]) -> dict[str, Any]:
    return json.loads(result(packets)[MANIPULATE_MIME])


def view(engine: MathicsEngine, host: FakeHost, spec: dict[str, Any],
         values: list[Any]) -> tuple[dict[str, str], list[str]]:
    """The view's bundle and the messages that came with it (an EvaluatePacket, as the
    kernel sends it)."""
    host.log.clear()
    engine.evaluate_expression(manipulate_request(spec["id"], values))
    packets = [pkt for _, pkt in host.log]
    messages = [f"{p.args[0]}::{p.args[1]}" for p in packets if packet_name(p) == "MessagePacket"]
    return result(packets), messages


def test_manipulate_reads_every_control_form(engine) -> None:
    eng, host = engine
    packets = run(eng, host, 'Manipulate[{u, v, w, c, b}, {u, 0, 1}, {v, 1, 9, 2}, '
                             '{{w, 2.5}, 0, 5}, {{c, y, "pick"}, {x, y, z}}, '
                             '{b, {True, False}}, ContinuousAction -> False, '
                             'SaveDefinitions -> True]')
    spec = spec_of(packets)
    kinds = [(c["name"], c["label"], c["kind"], c["value"]) for c in spec["controls"]]
    assert kinds == [("u", "u", "slider", 0), ("v", "v", "slider", 1),
                     ("w", "w", "slider", 2.5), ("c", "pick", "choice", 2),
                     ("b", "b", "checkbox", True)]
    u, v, w, c, _ = spec["controls"]
    assert (u["min"], u["max"], u["step"], u["integer"]) == (0, 1, None, False)
    assert (v["min"], v["max"], v["step"], v["integer"]) == (1, 9, 2, True)
    assert w["integer"] is False and c["labels"] == ["x", "y", "z"]
    assert spec["continuous"] is False
    # The first view is the expression at the initial values, also as the result's own text.
    assert spec["view"]["text/plain"] == "{0, 1, 2.5, y, True}"
    assert result(packets)["text/plain"] == "{0, 1, 2.5, y, True}"


def test_a_view_evaluates_with_the_values_by_manipulates_scoping(engine) -> None:
    eng, host = engine
    run(eng, host, "u = 100;")
    spec = spec_of(run(eng, host, "Manipulate[{u, c, b}, {u, 0, 10, 1}, {c, {p, q, r}}, "
                                  "{b, {True, False}}]"))
    bundle, messages = view(eng, host, spec, [7, 3, False])
    assert bundle["text/plain"] == "{7, r, False}" and not messages
    bundle, _ = view(eng, host, spec, [0.25, 1, True])
    assert bundle["text/plain"] == "{0.25, p, True}"
    # Like With: the global u is not touched.
    assert result(run(eng, host, "u"))["text/plain"] == "100"
    # A plot is SVG; math is TeX.
    plot = spec_of(run(eng, host, "Manipulate[Plot[Sin[a x], {x, 0, 6}], {a, 1, 5}]"))
    first = plot["view"]["image/svg+xml"]
    bundle, _ = view(eng, host, plot, [4.0])
    assert bundle["image/svg+xml"].startswith("<svg") and bundle["image/svg+xml"] != first
    tex = spec_of(run(eng, host, "Manipulate[Expand[(1 + x)^n], {n, 1, 5, 1}]"))
    bundle, _ = view(eng, host, tex, [3])
    assert bundle["text/latex"] == "$$1+3 x+3 x^2+x^3$$"


def test_a_views_messages_come_and_a_forgotten_manipulate_says_so(engine) -> None:
    eng, host = engine
    spec = spec_of(run(eng, host, "Manipulate[1/u, {u, 0, 1}]"))
    bundle, messages = view(eng, host, spec, [0])
    assert messages == ["Power::infy"] and bundle["text/plain"] == "ComplexInfinity"
    bundle, messages = view(eng, host, {"id": "m-unknown"}, [0])
    assert messages == ["Manipulate::gone"] and bundle == {}


def test_a_control_it_cannot_read_is_a_message_and_the_expression_as_text(engine) -> None:
    eng, host = engine
    packets = run(eng, host, "Manipulate[u, u]")
    assert "MessagePacket" in names(packets)
    assert MANIPULATE_MIME not in result(packets)
    assert result(packets)["text/plain"] == "Manipulate[u, u]"


def test_print_temporary_is_a_temporary_display(engine) -> None:
    eng, host = engine
    packets = run(eng, host, 'PrintTemporary["working"]; 6*7')
    assert names(packets)[:2] == ["RKDisplay", "OutputNamePacket"]
    display_id, bundle = packets[0].args
    assert bundle == {"text/plain": "working"} and display_id
    assert result(packets)["text/plain"] == "42"


def test_monitor_shows_its_expression_as_it_changes_then_removes_it(engine) -> None:
    eng, host = engine
    packets = run(eng, host, "Monitor[Do[Pause[0.02], {i, 60}]; 6*7, "
                             "ProgressIndicator[i, {1, 60}]]")
    displays = [p.args for p in packets if packet_name(p) == "RKDisplay"]
    ids = {display_id for display_id, _ in displays}
    assert len(ids) == 1 and displays[-1][1] is None  # one display, removed at its end
    values = [float(re.search(r'value="([\d.]+)"', bundle["text/html"]).group(1))
              for _, bundle in displays[:-1]]
    assert len(values) >= 3 and values == sorted(values) and 0 < values[-1] < 1, values
    assert result(packets)["text/plain"] == "42"
    # At most four refreshes a second (1.2 s of loop: the first display and ≤ 6 more).
    assert len(values) <= 8, values


def test_progress_indicator_is_a_bar(engine) -> None:
    eng, host = engine
    bundle = result(run(eng, host, "ProgressIndicator[3, {0, 4}]"))
    assert bundle["text/plain"] == "[###############.....] 75%"
    assert 'value="0.7500"' in bundle["text/html"] and "<progress" in bundle["text/html"]


# -- the kernel ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel(rk_local: str):
    km, kc = start_new_kernel(kernel_name=rk_local, startup_timeout=90)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=False)


class Widgets:
    """The widget models the kernel opened (comm_open), and their updates as they come."""

    def __init__(self, kc: Any) -> None:
        self.kc = kc
        self.models: dict[str, dict[str, Any]] = {}
        self.updates: list[tuple[float, str, dict[str, Any]]] = []
        self.views: list[tuple[float, str, dict[str, Any]]] = []  # update_display_data
        self.displays: list[dict[str, Any]] = []  # display_data of the cell run last

    def run(self, code: str, timeout: float = 60.0) -> dict[str, Any]:
        """Run a cell; returns its execute_result content, models recorded."""
        msg_id = self.kc.execute(code)
        found: dict[str, Any] = {}
        self.displays = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
            self._note(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "execute_result":
                found = msg["content"]
            if msg["msg_type"] == "display_data":
                self.displays.append(msg["content"])
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return found

    def _note(self, msg: dict[str, Any]) -> None:
        content = msg["content"]
        if msg["msg_type"] == "comm_open":
            self.models[content["comm_id"]] = dict(content["data"]["state"])
        elif msg["msg_type"] == "comm_msg" and content["data"].get("method") == "update":
            self.updates.append((time.monotonic(), content["comm_id"], content["data"]["state"]))
        elif msg["msg_type"] == "update_display_data":
            self.views.append((time.monotonic(), content["transient"]["display_id"],
                               content["data"]))

    def of(self, model: str) -> list[str]:
        return [c for c, s in self.models.items() if s.get("_model_name") == model]

    def change(self, comm_id: str, value: Any) -> None:
        """What the browser sends when a person moves a control."""
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {
            "method": "update", "state": {"value": value}, "buffer_paths": []}})
        self.kc.shell_channel.send(msg)

    def _wait(self, found: Callable[[], list[Any]], count: int, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            seen = found()
            if len(seen) >= count or time.monotonic() > deadline:
                return seen
            try:
                self._note(self.kc.get_iopub_msg(timeout=0.2))
            except Exception:  # queue.Empty: keep waiting until the deadline
                pass

    def outputs(self, comm_id: str, after: float, timeout: float = 30.0,
                count: int = 1) -> list[list[dict[str, Any]]]:
        """The output widget's contents set after ``after`` (a view's prints and messages),
        waiting for ``count`` of them."""
        return self._wait(lambda: [s["outputs"] for t, c, s in self.updates
                                   if c == comm_id and t > after and "outputs" in s],
                          count, timeout)

    def view_id(self) -> str:
        """The display id of the view the last cell showed under its controls."""
        (view,) = [d for d in self.displays if "display_id" in d.get("transient", {})]
        return view["transient"]["display_id"]

    def new_views(self, display_id: str, after: float, timeout: float = 30.0,
                  count: int = 1) -> list[dict[str, str]]:
        """The views sent (update_display_data) after ``after``, waiting for ``count``."""
        return self._wait(lambda: [d for t, i, d in self.views if i == display_id and t > after],
                          count, timeout)


def test_manipulate_becomes_widgets_and_each_change_a_new_view(kernel) -> None:
    _, kc = kernel
    w = Widgets(kc)
    shown = w.run("Manipulate[Expand[(1 + x)^n], {n, 1, 5, 1}, {f, {Sin, Cos}}, "
                  "{b, {True, False}}]")
    data = shown["data"]
    assert WIDGET_MIME in data and MANIPULATE_MIME not in data
    assert data["text/plain"] == "Manipulate with controls n, f, b"
    # The view is ordinary output under the controls, updated in place by its display id.
    (first,) = [d["data"] for d in w.displays]
    assert first["text/plain"] == "1 + x" and first["text/latex"] == "$$1+x$$"
    display_id = w.view_id()
    (slider,) = w.of("IntSliderModel")
    (buttons,) = w.of("ToggleButtonsModel")
    (checkbox,) = w.of("CheckboxModel")
    (output,) = w.of("OutputModel")
    assert w.models[buttons]["_options_labels"] == ["Sin", "Cos"]
    assert w.models[checkbox]["value"] is True
    started = time.monotonic()
    w.change(slider, 3)
    (view,) = w.new_views(display_id, started)
    assert view["text/latex"] == "$$1+3 x+3 x^2+x^3$$"
    assert not any(w.outputs(output, started, timeout=0.5))  # it printed and said nothing
    # A view's messages go to the small output area under the controls.
    w.run("Manipulate[1/u, {u, -1, 1, 1}]")
    (output,) = [c for c in w.of("OutputModel") if c != output]
    (slider,) = w.of("IntSliderModel")[-1:]
    later = time.monotonic()
    w.change(slider, 0)
    (said,) = w.outputs(output, later)
    assert "Power::infy" in said[0]["text"]


def test_fast_changes_coalesce_to_the_latest_value(kernel) -> None:
    _, kc = kernel
    w = Widgets(kc)
    w.run("Manipulate[Pause[0.3]; n, {n, 1, 50, 1}]")
    (slider,) = w.of("IntSliderModel")
    display_id = w.view_id()
    started = time.monotonic()
    for value in range(2, 22):  # 20 changes in a burst, each view takes 0.3 s
        w.change(slider, value)
    views = w.new_views(display_id, started, count=50, timeout=4.0)
    texts = [v["text/plain"] for v in views]
    assert texts and texts[-1] == "21", texts
    assert len(texts) <= 4, f"{len(texts)} views for 20 changes: they queued up ({texts})"


def test_a_slow_view_is_interrupted_and_the_controls_stay_usable(kernel) -> None:
    km, kc = kernel
    w = Widgets(kc)
    w.run("Manipulate[If[u > 5, Pause[60]]; u, {u, 0, 10, 1}]")
    (slider,) = w.of("IntSliderModel")
    (output,) = w.of("OutputModel")
    started = time.monotonic()
    w.change(slider, 8)
    time.sleep(1.0)
    km.interrupt_kernel()
    (aborted,) = w.outputs(output, started, timeout=15)
    assert time.monotonic() - started < 10
    assert "aborted" in "".join(o.get("text", "") for o in aborted)
    later = time.monotonic()
    w.change(slider, 2)
    (again,) = w.new_views(w.view_id(), later, timeout=15)
    assert again["text/plain"] == "2"
    # Cells run as before.
    assert execute(kc, "6*7").results()[0]["data"]["text/plain"] == "42"


def test_print_temporary_is_gone_when_the_cell_ends(kernel) -> None:
    _, kc = kernel
    messages = cell_messages(kc, 'PrintTemporary["working"]; Print["kept"]; Pause[0.2]; 42')
    kinds = [m["msg_type"] for m in messages]
    assert kinds[0] == "display_data" and "clear_output" in kinds
    assert messages[0]["content"]["data"] == {"text/plain": "working"}
    # What a notebook holds in the end (clear_output applied as nbformat clients apply it).
    final = notebook_outputs(messages)
    assert [o.get("text") or o["data"]["text/plain"] for o in final] == ["kept\n", "42"]


def test_monitor_is_updated_in_place_and_removed(kernel) -> None:
    _, kc = kernel
    messages = cell_messages(kc, "Monitor[Do[Pause[0.02], {i, 60}]; 7, "
                                 "ProgressIndicator[i, {1, 60}]]")
    kinds = [m["msg_type"] for m in messages]
    assert kinds[0] == "display_data" and kinds.count("update_display_data") >= 2, kinds
    display_id = messages[0]["content"]["transient"]["display_id"]
    assert all(m["content"]["transient"]["display_id"] == display_id
               for m in messages if m["msg_type"] == "update_display_data")
    assert "<progress" in messages[1]["content"]["data"]["text/html"]
    assert [o["data"]["text/plain"] for o in notebook_outputs(messages)] == ["7"]


def cell_messages(kc: Any, code: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every iopub message of one cell but its status and input, in order (clear_output and
    update_display_data too, which kernel_helpers.collect leaves out)."""
    msg_id = kc.execute(code)
    messages = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages
        if msg["msg_type"] not in ("status", "execute_input"):
            messages.append(msg)


def notebook_outputs(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The outputs a notebook keeps from these messages (clear_output with wait clears at the
    next output, as JupyterLab and nbclient do)."""
    outputs: list[dict[str, Any]] = []
    clear_next = False
    for msg in messages:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "clear_output":
            if content["wait"]:
                clear_next = True
            else:
                outputs = []
            continue
        if kind in ("stream", "display_data", "execute_result"):
            if clear_next:
                outputs, clear_next = [], False
            outputs.append(content)
        elif kind == "update_display_data":
            for output in outputs:
                if output.get("transient", {}).get("display_id") == \
                        content["transient"]["display_id"]:
                    output["data"] = content["data"]
    return outputs
