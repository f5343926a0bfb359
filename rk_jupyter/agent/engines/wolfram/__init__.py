"""The Wolfram engine: a licensed Wolfram kernel driven over WSTP (see engine.py)."""

from .engine import WolframEngine

__all__ = ["WolframEngine"]
