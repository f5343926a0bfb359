"""What papermill loads from rk_jupyter's ``papermill.engine`` entry point when it starts.

Papermill has no entry point for parameter translators, so this one is the way in: loading it
imports ``rk_jupyter.parameters``, which registers the Wolfram Language translator.  (A module
of its own, so that importing ``rk_jupyter.parameters`` first, which imports papermill, which
loads this entry point, is no import cycle.)
"""

from __future__ import annotations

from papermill.engines import NBClientEngine

from . import parameters  # noqa: F401  (registers the translator)


class RKEngine(NBClientEngine):
    """Papermill's nbclient engine, unchanged (``--engine rk_jupyter`` is the default's
    equal)."""
