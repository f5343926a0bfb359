"""engines/process.py: what both engines use to start, watch and describe their processes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rk_jupyter.agent.engines import process
from rk_jupyter.agent.engines.process import (
    OutputTail,
    describe_exit,
    exit_status,
    python_argv,
    reap,
    spawn,
    wait_exit,
)


def test_output_tail_keeps_the_last_lines_cut_to_width_without_blanks() -> None:
    stream = io.BytesIO(b"".join(f"line {i}\n".encode() for i in range(10))
                        + b"\n   \n" + b"x" * 50 + b"\n\xff broken utf-8\n")
    tail = OutputTail(stream, lines=3, width=20, label="test")
    assert tail.wait(5.0)
    assert tail.lines() == ["line 9", "x" * 20, "\ufffd broken utf-8"]
    assert tail.text() == "line 9\n" + "x" * 20 + "\n\ufffd broken utf-8"


def test_exit_status_is_read_without_reaping_and_described() -> None:
    proc = spawn([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert wait_exit(proc, 30.0) == 3
    assert proc.returncode is None  # not reaped: its pid (= its group) is still ours
    assert exit_status(proc) == 3 and describe_exit(3) == "exited with code 3"
    reap(proc, "test child")
    assert proc.returncode == 3
    assert describe_exit(0) == "exited (Quit[] and Exit[] end the engine)"
    assert describe_exit(-signal.SIGKILL) == "was killed by signal SIGKILL"


def test_spawned_process_leads_its_own_group_and_is_reaped_with_it() -> None:
    proc = spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert subprocess.run(["ps", "-o", "pgid=", "-p", str(proc.pid)], capture_output=True,
                              text=True, check=True).stdout.strip() == str(proc.pid)
    finally:
        reap(proc, "test child")
    assert proc.returncode == -signal.SIGKILL


def test_python_child_runs_the_module_from_root_without_the_cwd_on_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bootstrap alone (an interpreter not known to have -P gets none, as another
    interpreter than the agent's would): the working directory is off sys.path, and the
    module's package comes from ``root``."""
    (tmp_path / "json.py").write_text("raise SystemExit('the planted json.py was imported')\n")
    root = tmp_path / "root"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "main.py").write_text(
        "import json, sys\nprint(json.dumps([sys.argv[1:], sys.path[0]]))\n")
    # The same interpreter under another path is still known to take -P (safepath compares
    # real paths); pretend it is not, to run the bootstrap alone as on 3.10.
    python = os.path.join(os.path.dirname(sys.executable), ".", os.path.basename(sys.executable))
    assert ("-P" in python_argv(python, "pkg.main", str(root))) == (sys.version_info >= (3, 11))
    monkeypatch.setattr(process, "has_safe_path_flag", lambda python: False)
    argv = python_argv(python, "pkg.main", str(root))
    assert "-P" not in argv
    out = subprocess.run([*argv, "arg"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    args, first = json.loads(out.stdout)
    assert args == ["arg"] and first not in ("", str(tmp_path))
    monkeypatch.undo()
    if sys.version_info >= (3, 11):
        assert "-P" in python_argv(sys.executable, "pkg.main", str(root))
