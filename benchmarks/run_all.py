"""Run every benchmark (``benchmarks/bench_*.py``) one after another and summarise.

``python benchmarks/run_all.py`` runs them all; ``python benchmarks/run_all.py link kernel``
only those whose name (``bench_link.py``, ``link``) matches; ``--skip ssh`` leaves some out;
``--list`` shows what would run.  Each benchmark is its own subprocess, so one that crashes or
hangs (``--timeout``) cannot take the others with it; its output is passed through as it comes.
Exit status: 0 when every selected benchmark ran (a missed goal is reported by the benchmark,
not a failure), 1 when any failed or timed out, 2 when the selection matched nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TIMEOUT = 900.0


def discover() -> list[Path]:
    """The benchmarks, in name order (new ones are picked up without touching this file)."""
    return sorted(HERE.glob("bench_*.py"))


def short_name(path: Path) -> str:
    return path.stem.removeprefix("bench_")


def matches(path: Path, names: list[str]) -> bool:
    """A name selects a benchmark by its short name, stem or file name, or as a substring."""
    return any(n in (short_name(path), path.stem, path.name) or n in path.stem for n in names)


def run(path: Path, timeout: float) -> tuple[str, float]:
    """Run one benchmark with this Python; (status, seconds).  On timeout its process group is
    killed (helpers it forked with it); Jupyter kernels run in sessions of their own and end
    when their parent process does (ipykernel's parent poller, the agent's stdin EOF)."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(path)], cwd=HERE.parent,
                            start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return f"TIMEOUT after {timeout:.0f} s", time.monotonic() - started
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    elapsed = time.monotonic() - started
    return ("ok" if code == 0 else f"FAILED (exit {code})"), elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only these (e.g. link kernel wxf)")
    parser.add_argument("--skip", action="append", default=[], metavar="NAME",
                        help="leave this benchmark out (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the selection and exit")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds per benchmark (default {DEFAULT_TIMEOUT:.0f})")
    args = parser.parse_args(argv)

    selected = [p for p in discover()
                if (not args.names or matches(p, args.names)) and not matches(p, args.skip)]
    if not selected:
        print(f"no benchmark matches {args.names or '(all)'} minus {args.skip}; available: "
              + ", ".join(short_name(p) for p in discover()), file=sys.stderr)
        return 2
    if args.list:
        for path in selected:
            print(path.relative_to(HERE.parent))
        return 0

    results = []
    for path in selected:
        print(f"\n===== {path.relative_to(HERE.parent)} =====", flush=True)
        status, elapsed = run(path, args.timeout)
        results.append((short_name(path), status, elapsed))
        sys.stdout.flush()

    print("\n===== summary =====")
    for name, status, elapsed in results:
        print(f"{name:<12} {status:<24} {elapsed:7.1f} s")
    failed = [name for name, status, _ in results if status != "ok"]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
