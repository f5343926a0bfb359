"""Make the seed corpora, then fuzz each target for a given time and print what it did.

    python fuzz/run.py --seconds 600                   # every target, 10 min each
    nice -n 19 python fuzz/run.py --seconds 720 wxf    # one target, low priority

Targets run one after another, each as ``python fuzz/fuzz_<target>.py fuzz/corpus/<target>``
with ``-max_total_time``, ``-rss_limit_mb=2048``, ``-timeout=5`` (an input running longer is a
hang, reported as a crash), ``-dict=fuzz/wxf.dict`` and ``-max_len``.  libFuzzer stops at the
first crash; the run then starts again for the time left (at most ``--restarts`` times), so
one bug does not end the whole run.  Crash, timeout and OOM inputs land in
``fuzz/artifacts/<target>/``, libFuzzer's output in ``fuzz/logs/<target>.log`` and the table
in ``fuzz/logs/results.json``; replay an input with ``python fuzz/repro.py FILE TARGET``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = ("wxf", "frames", "handshake", "delta")
#: libFuzzer's -max_len per target: WXF values are small, frame streams and handshakes longer.
MAX_LEN = {"wxf": 8192, "frames": 16384, "handshake": 16384, "delta": 8192}
ARTIFACT_PREFIXES = ("crash-", "timeout-", "oom-", "leak-")

_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)", re.M)
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)


def fuzz_once(target: str, seconds: int, log: Path, args: argparse.Namespace) -> dict:
    corpus = HERE / "corpus" / target
    artifacts = HERE / "artifacts" / target
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, str(HERE / f"fuzz_{target}.py"), str(corpus),
        f"-max_total_time={seconds}", "-rss_limit_mb=2048", f"-timeout={args.timeout}",
        f"-max_len={MAX_LEN[target]}", f"-dict={HERE / 'wxf.dict'}",
        f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        started = time.monotonic()
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        elapsed = time.monotonic() - started
    text = log.read_text(errors="replace")
    text = text[text.rfind("\n$ "):]  # this run only
    status = _STATUS.findall(text)
    stats = dict(_STAT.findall(text))
    last = status[-1] if status else None
    return {
        "exit": code,
        "seconds": elapsed,
        "execs": int(stats.get("number_of_executed_units", last[0] if last else 0)),
        "cov": int(last[2]) if last else None,
        "ft": int(last[3]) if last else None,
        "corp": f"{last[4]}/{last[5]}" if last else None,
        "peak_rss_mb": int(stats["peak_rss_mb"]) if "peak_rss_mb" in stats else None,
    }


def artifacts_of(target: str) -> set[str]:
    folder = HERE / "artifacts" / target
    return {p.name for p in folder.iterdir() if p.name.startswith(ARTIFACT_PREFIXES)} \
        if folder.is_dir() else set()


def signature(target: str, name: str) -> str:
    """The exception a crash input raises (last line of repro.py's traceback)."""
    if not name.startswith("crash-"):
        return name.split("-", 1)[0]
    try:
        out = subprocess.run(
            [sys.executable, str(HERE / "repro.py"), str(HERE / "artifacts" / target / name),
             target], capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
    except subprocess.TimeoutExpired:
        return "repro.py timed out"
    lines = out.strip().splitlines()
    return lines[-1] if lines else "?"


def fuzz(target: str, args: argparse.Namespace) -> dict:
    log = HERE / "logs" / f"{target}.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text("")
    before = artifacts_of(target)
    runs = []
    left = args.seconds
    while left > 0:
        run = fuzz_once(target, left, log, args)
        runs.append(run)
        left = args.seconds - round(sum(r["seconds"] for r in runs))
        new = artifacts_of(target) - before
        if run["exit"] == 0 or len(runs) > args.restarts or left < 10:
            break
        if not new:  # failed without an artifact: not a finding, do not loop on it
            print(f"{target}: libFuzzer exited {run['exit']} without an artifact; see {log}")
            break
    seconds = sum(r["seconds"] for r in runs)
    execs = sum(r["execs"] for r in runs)
    last = runs[-1]
    corpus = HERE / "corpus" / target
    return {
        "target": target,
        "seconds": round(seconds),
        "execs": execs,
        "exec_per_s": round(execs / seconds) if seconds else 0,
        "cov": last["cov"],
        "ft": last["ft"],
        "corpus": last["corp"],  # libFuzzer's: units/size after its reductions
        "files": len(list(corpus.iterdir())),  # seeds and every unit ever added
        "crashes": {name: signature(target, name)
                    for name in sorted(artifacts_of(target) - before)},
        "runs": len(runs),
        "peak_rss_mb": max((r["peak_rss_mb"] or 0) for r in runs),
    }


def table(results: list[dict]) -> str:
    rows = [("target", "seconds", "execs", "exec/s", "cov", "ft", "corpus", "files", "crashes")]
    for r in results:
        rows.append((r["target"], r["seconds"], r["execs"], r["exec_per_s"], r["cov"], r["ft"],
                     r["corpus"], r["files"], len(r["crashes"])))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True))
                     for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (all)")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--timeout", type=int, default=5, help="libFuzzer -timeout (hang)")
    parser.add_argument("--restarts", type=int, default=5,
                        help="fuzz on after up to this many crashes per target (default 5)")
    parser.add_argument("--no-seeds", action="store_true", help="skip make_corpus.py")
    args = parser.parse_args()
    targets = args.targets or list(TARGETS)
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    if not args.no_seeds:
        subprocess.check_call([sys.executable, str(HERE / "make_corpus.py"), *targets],
                              cwd=ROOT)
    results = []
    for target in targets:
        print(f"fuzzing {target} for {args.seconds} s ...", flush=True)
        result = fuzz(target, args)
        results.append(result)
        print(f"{target}: {result['execs']} execs, {result['exec_per_s']}/s, "
              f"cov {result['cov']}, ft {result['ft']}, corpus {result['corpus']} "
              f"({result['files']} files), "
              f"crashes {len(result['crashes'])}", flush=True)
        for name, sig in result["crashes"].items():
            print(f"  {HERE / 'artifacts' / target / name}: {sig}", flush=True)
    (HERE / "logs" / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(table(results))
    return 1 if any(r["crashes"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
