"""Replay one input through a harness's ``TestOneInput``, without atheris or libFuzzer.

    python fuzz/repro.py FILE TARGET      # TARGET: wxf, frames or handshake

Prints the input (hex), then the exception and its traceback, or that the input passed, and
how long it took (libFuzzer's ``-timeout`` in run.py is 5 s).  Exit status 1 on a crash.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("wxf", "frames", "handshake", "delta")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("target", choices=TARGETS)
    args = parser.parse_args()
    sys.path[:0] = [str(HERE), str(HERE.parent)]
    harness = importlib.import_module(f"fuzz_{args.target}")
    data = args.file.read_bytes()
    print(f"input ({len(data)} bytes): {data.hex()}")
    started = time.monotonic()
    try:
        harness.TestOneInput(data)
    except Exception:
        print(f"CRASH after {time.monotonic() - started:.3f} s:")
        traceback.print_exc(file=sys.stdout)
        return 1
    print(f"no crash ({time.monotonic() - started:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
