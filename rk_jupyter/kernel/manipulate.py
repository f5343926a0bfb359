"""Manipulate as ipywidgets: the controls live in this kernel process, the expression on the
engine, which evaluates it again for each change (``link.packets`` MANIPULATE_MIME).

Why here: the kernel process is Python, so it can host real widgets (JupyterLab draws them),
while the engine may be on another machine; each change is one EvaluatePacket of
``manipulate_request``, whose answer is the view's MIME bundle.

The cell shows the controls (a widget, with a small output area for the view's Print output
and messages) and, under them, the view as an ordinary ``display_data`` with a display id:
each new view replaces it by ``update_display_data`` sent as part of the Manipulate cell's
request (``Publish``), so that the notebook holds the last view as ordinary output, which a
saved notebook shows without the kernel or widgets (nbviewer, GitHub, nbconvert).

Changes faster than evaluations coalesce: a control change only records the latest values of
its Manipulate (``Updates.want``); one thread (``manipulate-updates``) evaluates the latest
values of each Manipulate that changed, in turn, holding the kernel's ``turn`` lock so that it
never runs beside a cell (the link carries one evaluation at a time).  An interrupt from the
notebook aborts a slow view like a cell, and the controls stay usable.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from ..client import AgentError, EvaluationError, SessionLost
from ..client.evaluate import Output
from ..link.packets import MANIPULATE_MIME, manipulate_request

log = logging.getLogger(__name__)

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: Choice controls with at most this many choices are buttons (a SetterBar), more a dropdown.
BUTTONS_UP_TO = 5

Run = Callable[[str, Output], Any]  # evaluate a request's text for its value
#: Send a view: (the Manipulate cell's request header, display id, MIME bundle).
Publish = Callable[[dict[str, Any], str, dict[str, str]], None]


class ViewOutput(Output):
    """A view's Print output and messages, shown above its result in the output area."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, Any]] = []

    def stdout(self, text: str) -> None:
        self._stream("stdout", text)

    def stderr(self, text: str) -> None:
        self._stream("stderr", text)

    def _stream(self, name: str, text: str) -> None:
        self.outputs.append({"output_type": "stream", "name": name,
                             "text": text + "\n"})  # one line each

    def display(self, bundle: dict[str, str], line: int | None) -> None:
        self.result(bundle)

    def result(self, bundle: dict[str, str]) -> None:
        if bundle:
            self.outputs.append({"output_type": "display_data", "data": bundle,
                                 "metadata": {}})

    def read_input(self, prompt: str) -> str:
        self.stderr("Input[] is not answered in a Manipulate's view; it gets an empty string")
        return ""

    def next_line(self, line: int) -> None:
        pass


class Manipulate:
    """One live Manipulate: its controls, its output area, and the values last asked for."""

    def __init__(self, spec: dict[str, Any], updates: Updates,
                 parent: dict[str, Any] | None = None) -> None:
        import ipywidgets as widgets

        self.id: str = spec["id"]
        self.display_id = f"rk-{self.id}"
        self.parent = parent or {}  # the request of the cell that shows it
        self.updates = updates
        self.view: dict[str, str] = {k: v for k, v in (spec.get("view") or {}).items()
                                     if k != MANIPULATE_MIME}
        self.controls = [self._control(widgets, c, bool(spec.get("continuous", True)))
                         for c in spec["controls"]]
        self.output = widgets.Output()  # the view's Print output and messages
        self.box = widgets.VBox([*self.controls, self.output])
        self.names = [str(c["name"]) for c in spec["controls"]]
        for control in self.controls:
            control.observe(self._changed, names="value")

    @staticmethod
    def _control(widgets: Any, spec: dict[str, Any], continuous: bool) -> Any:
        """The widget for one control specification (``link.packets``: slider, choice,
        checkbox)."""
        label = str(spec.get("label") or spec["name"])
        style = {"description_width": "initial"}
        if spec["kind"] == "checkbox":
            return widgets.Checkbox(value=bool(spec["value"]), description=label,
                                    indent=False)
        if spec["kind"] == "choice":
            options = [(str(text), i) for i, text in enumerate(spec["labels"], 1)]
            kind = widgets.ToggleButtons if len(options) <= BUTTONS_UP_TO else widgets.Dropdown
            return kind(options=options, value=int(spec["value"]), description=label,
                        style=style)
        low, high, step = spec["min"], spec["max"], spec.get("step")
        if spec.get("integer"):
            return widgets.IntSlider(value=spec["value"], min=low, max=high, step=step or 1,
                                     description=label, continuous_update=continuous,
                                     style=style)
        # A continuous slider: a hundred steps between the ends, as a notebook's slider moves.
        step = step or (high - low) / 100 or 1
        return widgets.FloatSlider(value=spec["value"], min=low, max=high, step=step,
                                   description=label, continuous_update=continuous,
                                   readout_format=".4g", style=style)

    def values(self) -> list[Any]:
        return [control.value for control in self.controls]

    def _changed(self, change: dict[str, Any]) -> None:
        self.updates.want(self, self.values())

    def show(self, outputs: list[dict[str, Any]], view: dict[str, str] | None) -> None:
        """A new view (None: it failed, its error is in ``outputs``) with what it printed."""
        self.output.outputs = tuple(outputs)
        if view is not None:
            self.view = {k: v for k, v in view.items() if k != MANIPULATE_MIME}
            self.updates.publish(self.parent, self.display_id, self.view)

    def controls_bundle(self) -> dict[str, Any]:
        """The cell's result: the controls (and a line of text for readers without them)."""
        return {"text/plain": f"Manipulate with controls {', '.join(self.names)}",
                WIDGET_MIME: self.box._repr_mimebundle_()[WIDGET_MIME]}

    def view_content(self) -> dict[str, Any]:
        """The display_data (or update_display_data) content of the current view."""
        return {"data": self.view, "metadata": {}, "transient": {"display_id": self.display_id}}


class Updates:
    """The evaluations that control changes ask for: the latest values of each Manipulate,
    evaluated one at a time by one thread, each while holding ``turn``."""

    def __init__(self, run: Run, turn: Callable[[], AbstractContextManager[Any]],
                 publish: Publish | None = None) -> None:
        self.run = run
        self.turn = turn
        self.publish: Publish = publish or (lambda parent, display_id, bundle: None)
        self.manipulates: dict[str, Manipulate] = {}
        self._wanted: OrderedDict[str, tuple[Manipulate, list[Any]]] = OrderedDict()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def create(self, spec_text: str, parent: dict[str, Any] | None = None) -> Manipulate | None:
        """A Manipulate for a result's specification, shown by the request ``parent``; None
        if widgets are not installed."""
        try:
            spec = json.loads(spec_text)
            manipulate = Manipulate(spec, self, parent)
        except ImportError:
            log.warning("rk_jupyter: ipywidgets is not installed: Manipulate shows its first "
                        "view only (pip install ipywidgets)")
            return None
        self.manipulates[manipulate.id] = manipulate
        return manipulate

    def want(self, manipulate: Manipulate, values: list[Any]) -> None:
        """Ask for the view at ``values``; replaces what was asked before and not yet begun."""
        with self._ready:
            self._wanted[manipulate.id] = (manipulate, values)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="manipulate-updates",
                                                daemon=True)
                self._thread.start()
            self._ready.notify()

    def pending(self) -> int:
        with self._ready:
            return len(self._wanted)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._wanted.clear()
            self._ready.notify()

    def _serve(self) -> None:
        for manipulate, values in self._next():
            try:
                with self.turn():
                    outputs, view = self.evaluate(manipulate, values)
                manipulate.show(outputs, view)
            except Exception:  # never let one view end the thread
                log.exception("rk_jupyter: Manipulate %s failed", manipulate.id)

    def _next(self) -> Iterator[tuple[Manipulate, list[Any]]]:
        while True:
            with self._ready:
                while not self._wanted and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
                _, wanted = self._wanted.popitem(last=False)
            yield wanted

    def evaluate(self, manipulate: Manipulate,
                 values: list[Any]) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
        """What the engine printed and said for ``values`` (or the error that ended the
        view), and the view's bundle (None after an error)."""
        out = ViewOutput()
        try:
            bundle = self.run(manipulate_request(manipulate.id, values), out)
        except (EvaluationError, SessionLost, AgentError) as exc:
            out.stderr(f"{exc}")
            return out.outputs, None
        return out.outputs, bundle if isinstance(bundle, dict) else {}
