"""Engines the agent can drive, by name."""

from __future__ import annotations

from .base import Engine, EngineError, EngineHost, EngineInfo

__all__ = ["Engine", "EngineError", "EngineHost", "EngineInfo", "create_engine", "ENGINE_NAMES",
           "warm", "end_warm"]

ENGINE_NAMES = ("mathics", "wolfram")


def create_engine(name: str, host: EngineHost, options: dict) -> Engine:
    """Instantiate engine ``name`` (not started yet); raise EngineError for an unknown name."""
    if name == "mathics":
        from .mathics import MathicsEngine

        return MathicsEngine(host, options)
    if name == "wolfram":
        from .wolfram import WolframEngine

        if options.get("warm_spare"):
            from .wolfram.spare import SPARES

            spare = SPARES.take(host, options)  # raises the spare's licence failure
            SPARES.replenish(options)
            if spare is not None:
                return spare
        return WolframEngine(host, options)
    raise EngineError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_NAMES)}")


def warm(name: str) -> None:
    """Prepare engine ``name`` so that its engines start fast (the agent's ``--warm``, at
    start).  Mathics3: its template for the agent's own interpreter (``mathics.forkserver``),
    started in the background.  The Wolfram engine prepares per configuration instead (engine
    option ``warm_spare``, ``wolfram.spare``)."""
    if name == "mathics":
        import sys

        from .mathics.forkserver import TEMPLATES

        TEMPLATES.warm(sys.executable)


def end_warm() -> None:
    """End whatever ``warm`` (or an engine's start) prepared: the agent is stopping."""
    import sys

    module = sys.modules.get(f"{__name__}.mathics.forkserver")
    if module is not None:
        module.TEMPLATES.close()
    spares = sys.modules.get(f"{__name__}.wolfram.spare")
    if spares is not None:
        spares.SPARES.close()
