"""pytest fixtures for the real SSH test bed (tests/sshbed.py).

Use from tests/conftest.py with either::

    pytest_plugins = ["conftest_sshbed"]     # preferred (tests/ must be on sys.path)
    from conftest_sshbed import *            # also works: __all__ lists fixtures and hook

Fixtures:
- ``sshbed`` (session): one started SSHBed, accounts from $RKJ_SSHBED_USERS
  (default "rkjtest,rkjtest2"); skips when the machine cannot host a bed (not root, no sshd).
- ``sshbed_factory`` (session): ``make(**SSHBed kwargs)`` for extra beds (e.g. other
  sshd_options or mode="loopback"); all stopped at session end.
- ``sshbed_proxy`` (function): ``make(delay_ms=25, rate_bps=2_000_000)`` → a ShapingProxy in
  front of the session bed's sshd, stopped after the test.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)

from sshbed import ShapingProxy, SSHBed, SSHBedError, unavailable_reason  # noqa: E402

__all__ = ["pytest_terminal_summary", "sshbed", "sshbed_factory", "sshbed_proxy"]

_started: list[SSHBed] = []
_summary_done = False


@pytest.fixture(scope="session")
def sshbed_factory() -> Iterator[Callable[..., SSHBed]]:
    """Make extra beds; every bed made is stopped when the session ends."""
    beds: list[SSHBed] = []

    def make(**kwargs: Any) -> SSHBed:
        reason = unavailable_reason()
        if reason:
            pytest.skip(reason)
        bed = SSHBed(**kwargs)
        beds.append(bed)
        bed.start()
        _started.append(bed)
        print(f"\nsshbed: {bed!r} started in {bed.startup_seconds:.2f}s", file=sys.stderr)
        return bed

    try:
        yield make
    finally:
        for bed in reversed(beds):
            bed.stop()


@pytest.fixture(scope="session")
def sshbed(sshbed_factory: Callable[..., SSHBed]) -> SSHBed:
    """The session's SSH bed (netns if possible, loopback otherwise: see ``bed.mode``)."""
    users = [u for u in os.environ.get("RKJ_SSHBED_USERS", "rkjtest,rkjtest2").split(",") if u]
    try:
        return sshbed_factory(users=users)
    except SSHBedError as exc:
        pytest.fail(f"SSH test bed could not be started: {exc}")


@pytest.fixture
def sshbed_proxy(sshbed: SSHBed) -> Iterator[Callable[..., ShapingProxy]]:
    """Factory for shaping proxies in front of the session bed; stopped after the test."""
    proxies: list[ShapingProxy] = []

    def make(delay_ms: float = 25, rate_bps: float | None = 2_000_000) -> ShapingProxy:
        proxy = sshbed.proxy(delay_ms=delay_ms, rate_bps=rate_bps)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which mode the bed ran in, so a loopback fallback is never silent."""
    global _summary_done
    if _summary_done or not _started:
        return
    _summary_done = True
    terminalreporter.section("ssh test bed")
    for bed in _started:
        extra = f" (fallback: {bed.fallback_reason})" if bed.fallback_reason else ""
        terminalreporter.write_line(
            f"{bed.bed_id}: mode={bed.mode}{extra} {bed.user}@{bed.host}:{bed.port} "
            f"start={bed.startup_seconds:.2f}s"
        )
