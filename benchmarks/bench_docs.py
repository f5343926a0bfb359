"""Benchmark Mathics3's own documentation examples through rk-local against Mathics3 itself.

Run as ``python benchmarks/bench_docs.py`` (``--help`` for options).  The workload is the one
the fidelity test checks (``doc_examples.py``: ~1,100 cells, whole pages of the documentation
in document order, filtered for what is not deterministic; issue 14 part 6).

Baseline, measured in the same run: Mathics3 itself, evaluating the same cells in the same
order in a process of its own (``doc_examples.ReferenceSession``: a MathicsSession's main loop,
timed around each cell inside that process: parse, evaluation, OutputForm text).  Ours: the
same cells through jupyter_client on a fresh rk-local kernel (``doc_examples.KernelSession``),
each timed from execute_request to holding both the execute_reply and the iopub ``idle``
status — what a notebook waits for (its MIME bundle adds TeX for math and SVG for graphics,
which Mathics3's text loop does not make).  The two sides alternate cell by cell (which goes
first alternates too) and never run at once, so that load from elsewhere hits both alike.

Goal: total time of the cells through rk-local ≤ 1.25 × Mathics3's.  Also printed: the load
average (``os.getloadavg``) before and after, the kernel's start, the median cell, the
overhead of results with a picture (SVG), with TeX and of the rest, the cells with the
largest overhead, and whether the outcomes agree (the fidelity test's comparison, for the
record: the test is what enforces it).
Exit status 0 whenever the benchmark ran: a missed goal is reported, not a failure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import doc_examples as docs  # this directory is on sys.path when a benchmark runs
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

OURS = "rk-local"
GOAL = 1.25


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (5 min: {five:.2f}) on {os.cpu_count()} CPUs"


def measure(examples: list[docs.Example], kernel_name: str
            ) -> tuple[list[docs.Outcome], list[docs.Outcome], float]:
    """Both sides' outcomes, alternating cell by cell; and the kernel's start time."""
    reference = docs.ReferenceSession()
    try:
        started = time.perf_counter()
        kernel = docs.KernelSession(kernel_name)
        start_s = time.perf_counter() - started
        try:
            ours: list[docs.Outcome] = []
            theirs: list[docs.Outcome] = []
            for index, example in enumerate(examples):
                if index % 2:
                    ours.append(kernel.cell(example.code))
                    theirs.append(reference.evaluate(example))
                else:
                    theirs.append(reference.evaluate(example))
                    ours.append(kernel.cell(example.code))
        finally:
            kernel.close()
    finally:
        reference.close()
    return theirs, ours, start_s


def kind(outcome: docs.Outcome) -> str:
    """What the kernel made of a cell's result: the renderings Mathics3's text loop lacks."""
    if "image/svg+xml" in outcome.formats or "text/html" in outcome.formats:
        return "results with a picture (SVG)"
    if "text/latex" in outcome.formats:
        return "results with TeX"
    return "results as text only, or none"


def report(examples: list[docs.Example], reference: list[docs.Outcome],
           kernel: list[docs.Outcome], kernel_name: str, top: int) -> float:
    """Print the table and the breakdown; return the ratio of the totals."""
    base = [o.seconds for o in reference]
    ours = [o.seconds for o in kernel]
    header = (f"{'side':<10} {'cells':>6} {'total s':>8} {'median ms':>10} {'p90 ms':>7} "
              f"{'max s':>6}")
    print(header)
    print("-" * len(header))
    for name, seconds in (("Mathics3", base), (kernel_name, ours)):
        p90 = statistics.quantiles(seconds, n=10)[8]
        print(f"{name:<10} {len(seconds):>6} {sum(seconds):>8.2f} "
              f"{statistics.median(seconds) * 1e3:>10.2f} {p90 * 1e3:>7.2f} {max(seconds):>6.2f}")
    overhead = [o - b for o, b in zip(ours, base, strict=True)]
    groups: dict[str, list[int]] = {}
    for i, outcome in enumerate(kernel):
        groups.setdefault(kind(outcome), []).append(i)
    for label, cells in sorted(groups.items()):
        base_s = sum(base[i] for i in cells)
        ours_s = sum(ours[i] for i in cells)
        print(f"{label}: {len(cells)} cells, Mathics3 {base_s:.2f} s, {kernel_name} "
              f"{ours_s:.2f} s (ratio {ours_s / base_s:.2f}), overhead {ours_s - base_s:.2f} s, "
              f"median {statistics.median(overhead[i] for i in cells) * 1e3:.2f} ms a cell")
    print(f"largest overheads (of {sum(overhead):.2f} s in all):")
    for i in sorted(range(len(examples)), key=lambda i: -overhead[i])[:top]:
        print(f"  {overhead[i] * 1e3:7.1f} ms (Mathics3 {base[i] * 1e3:7.1f} ms) "
              f"[{examples[i].entry}] {examples[i].code[:70]}")
    differences = docs.compare(examples, reference, kernel)
    print(f"outcomes: {len(examples) - len(differences)} of {len(examples)} cells as Mathics3 "
          f"gives them ({len(differences)} differ; tests/test_fidelity.py checks them)")
    return sum(ours) / sum(base)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=docs.STRIDE,
                        help="every N-th documentation entry (the test's workload: "
                             f"{docs.STRIDE})")
    parser.add_argument("--kernel", default=OURS, help="the kernelspec to measure")
    parser.add_argument("--top", type=int, default=10, help="cells with most overhead shown")
    args = parser.parse_args(argv)

    try:
        KernelSpecManager().get_kernel_spec(args.kernel)
    except NoSuchKernel:
        print(f"kernelspec {args.kernel} is not installed; run: make install")
        return 0
    print(f"load average before: {load()}")
    examples = docs.workload(args.stride)
    print(f"workload: {len(examples)} cells of Mathics3's documentation "
          f"({sum(e.code == docs.RESET for e in examples)} pages: every {args.stride}th entry "
          "and the tutorial), the sides alternating cell by cell")
    reference, kernel, start_s = measure(examples, args.kernel)
    print(f"{args.kernel} started in {start_s:.1f} s")
    ratio = report(examples, reference, kernel, args.kernel, args.top)
    print(f"load average after: {load()}")
    print(f"ratio {args.kernel}/Mathics3, total time of the cells: {ratio:.2f}")
    print(f"goal: total ratio ≤ {GOAL}: {ratio:.2f} -> {'MET' if ratio <= GOAL else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
