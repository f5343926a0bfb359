"""A started Wolfram kernel kept idle for the next engine of the same configuration.

Engine option ``warm_spare`` (default off: an idle spare holds a licence seat).  A Wolfram
kernel takes seconds to start and to load the helper package, and its licence check happens
only then; with a spare, the next kernel (a second notebook, a restart) gets a kernel that is
already up, and a licence problem found by the spare is reported at once to the next start
instead of after its own wait.  ``create_engine`` takes the spare (``take``) and has a new one
started in the background (``replenish``): one spare per configuration, replaced when taken.
The agent ends every spare when it stops (``close``).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from ....link.expr import Function
from ....link.launcher import ENGINE_START_TIMEOUT
from ..base import EngineError, EngineHost, InputAborted
from .engine import WolframEngine

log = logging.getLogger(__name__)


class _Idle:
    """The host of a spare nobody has taken: nothing is asked of it but a start, which says
    nothing worth a notebook (what it says goes to the agent's log)."""

    def emit(self, pkt: Function) -> None:
        log.info("wolfram spare said %r", pkt)

    def read_input(self, prompt: Function) -> str:
        raise InputAborted()


def _key(options: dict[str, Any]) -> str:
    """Spares are shared by engines whose options agree except on the kernel they serve."""
    return json.dumps({k: v for k, v in options.items() if k != "kernel"}, sort_keys=True,
                      default=str)


class Spares:
    """The agent's spare Wolfram kernels, one per configuration."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[str, WolframEngine] = {}
        self._starting: dict[str, WolframEngine] = {}
        self._failed: dict[str, EngineError] = {}
        self._closed = False

    def take(self, host: EngineHost, options: dict[str, Any]) -> WolframEngine | None:
        """The started spare of ``options``' configuration, now serving ``host`` (its
        ``start`` returns at once), or None.  Raises the EngineError of the last spare that
        failed to start (a licence problem, said before anyone waits; once: the start after
        tries again)."""
        key = _key(options)
        with self._lock:
            failure = self._failed.pop(key, None)
            spare = self._ready.pop(key, None)
        if failure is not None:
            raise failure
        if spare is None:
            return None
        if not spare.alive():
            spare.close()
            return None
        spare.host = host
        log.info("wolfram: a spare kernel (pid %s) serves a new engine", spare.pid)
        return spare

    def replenish(self, options: dict[str, Any]) -> None:
        """Start a spare for ``options``' configuration in the background, unless one is
        ready or starting."""
        key = _key(options)
        with self._lock:
            if self._closed or key in self._ready or key in self._starting:
                return
            spare = WolframEngine(_Idle(), {**options, "kernel": ""})
            self._starting[key] = spare
        timeout = float(options.get("start_timeout", ENGINE_START_TIMEOUT))
        threading.Thread(target=self._start, args=(key, spare, timeout), daemon=True,
                         name="wolfram-spare").start()

    def _start(self, key: str, spare: WolframEngine, timeout: float) -> None:
        try:
            spare.prestart(timeout)
        except EngineError as exc:
            log.warning("wolfram: the spare kernel did not start: %s", exc)
            with self._lock:
                self._starting.pop(key, None)
                if not self._closed:
                    self._failed[key] = exc
            return
        with self._lock:  # none is ready meanwhile: replenish starts one only without one
            self._starting.pop(key, None)
            closed = self._closed
            if not closed:
                self._ready[key] = spare
        if closed:
            spare.close()
            return
        log.info("wolfram: a spare kernel (pid %s) is ready", spare.pid)

    def close(self) -> None:
        """End every spare, started or starting (the agent stops)."""
        with self._lock:
            self._closed = True
            spares = [*self._ready.values(), *self._starting.values()]
            self._ready.clear()
            self._starting.clear()
        for spare in spares:
            spare.close()


SPARES = Spares()
