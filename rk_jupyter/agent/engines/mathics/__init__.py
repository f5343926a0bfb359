"""The Mathics3 engine: Mathics3 evaluating in a worker process (see engine.py)."""

from .engine import MathicsEngine

__all__ = ["MathicsEngine"]
