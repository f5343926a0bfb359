"""Engines the agent can drive, by name."""

from __future__ import annotations

from .base import Engine, EngineError, EngineHost, EngineInfo

__all__ = ["Engine", "EngineError", "EngineHost", "EngineInfo", "create_engine", "ENGINE_NAMES"]

ENGINE_NAMES = ("mathics", "wolfram")


def create_engine(name: str, host: EngineHost, options: dict) -> Engine:
    """Instantiate engine ``name`` (not started yet); raise EngineError for an unknown name."""
    if name == "mathics":
        from .mathics import MathicsEngine

        return MathicsEngine(host, options)
    if name == "wolfram":
        from .wolfram import WolframEngine

        return WolframEngine(host, options)
    raise EngineError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_NAMES)}")
