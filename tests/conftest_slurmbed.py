"""pytest fixture for the real Slurm cluster on the SSH test bed (tests/slurmbed.py).

- ``slurmbed`` (session): a started ``SlurmBed`` (nodes c1, c2 idle) on an SSH bed of its own,
  ``slurmbed.ssh``, whose remote host is the login node and whose one account is
  ``SLURM_USER``.  Started once, on first use, and torn down at the end of the session, which
  then checks that no Slurm daemon or job step is left.

Why an SSH bed and an account of its own: other test runs on this machine use the session
bed's accounts (``rkjtest``) at the same time and empty their ``~/.cache/rk_jupyter``, where
the agent's zipapp — which the engine's worker runs from — lives; and tests that check that
nothing is left on the session bed's remote host must not see a job's worker.

Nothing is skipped silently: where the SSH bed itself cannot exist (not root) its fixture
skips, saying why; a machine that can host the SSH bed but lacks Slurm, or a cluster that does
not come up, fails the test with the fix or the daemons' logs — CI installs Slurm
(.ci/install-system-packages.sh), so a skip there would hide a broken test bed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import pytest

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)

from slurmbed import SlurmBed, SlurmBedError, missing_programs  # noqa: E402
from sshbed import SSHBed, SSHBedError  # noqa: E402

__all__ = ["SLURM_USER", "slurmbed"]

#: The account that logs in to the login node and owns the jobs.
SLURM_USER = "rkjslurm"


@pytest.fixture(scope="session")
def slurmbed(sshbed_factory: Callable[..., SSHBed]) -> Iterator[SlurmBed]:
    """The session's Slurm cluster; its login node is ``slurmbed.ssh``."""
    try:
        ssh = sshbed_factory(users=[SLURM_USER])  # skips, saying why, where no bed can be
    except SSHBedError as exc:
        pytest.fail(f"SSH test bed (the login node) could not be started: {exc}")
    missing = missing_programs()
    if missing:
        pytest.fail(f"the Slurm test bed needs {', '.join(missing)}: run "
                    ".ci/install-system-packages.sh (as root)")
    bed = SlurmBed(ssh)
    try:
        bed.start()
    except SlurmBedError as exc:
        pytest.fail(f"Slurm test bed could not be started: {exc}")
    print(f"\nslurmbed: {bed!r} started in {bed.startup_seconds:.2f}s", file=sys.stderr)
    yield bed
    bed.stop()
    left = bed.leftover_daemons()
    assert not left, f"Slurm test bed left processes behind: {left}"
