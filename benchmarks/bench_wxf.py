"""Benchmark rk_jupyter's WXF codec against wolframclient (the spec asks for ≥ 5× on both ends).

Run as ``python benchmarks/bench_wxf.py``: prints best-of-N times for encoding and decoding a 50k
mixed list and a 2000-term polynomial with each codec, measured in the same run, the ratio
(wolframclient time / ours), and whether every ratio meets the goal.  Exit status is 0 either
way: this measures, it does not gate.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wolframclient.deserializers import binary_deserialize  # noqa: E402
from wolframclient.language import wl  # noqa: E402
from wolframclient.serializers import export  # noqa: E402

from rk_jupyter.link.wxf import Function, Symbol, dumps, loads  # noqa: E402

GOAL = 5.0


def mixed_list(n: int = 50_000, seed: int = 1) -> list:
    """Ints of all machine sizes, floats and short strings, interleaved."""
    rnd = random.Random(seed)
    out: list = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append(rnd.randint(-(10 ** rnd.randint(1, 12)), 10 ** rnd.randint(1, 12)))
        elif kind == 1:
            out.append(rnd.uniform(-1e6, 1e6))
        else:
            out.append(f"item-{rnd.randint(0, 10**6)}")
    return out


def polynomial(terms: int = 2000, seed: int = 2) -> tuple[Any, Any]:
    """Plus[Times[c0, Power[x, 0]], ...] as (our Function, wolframclient's WLFunction)."""
    rnd = random.Random(seed)
    coefs = [rnd.randint(-(10**6), 10**6) for _ in range(terms)]
    x = Symbol("x")
    ours = Function(
        Symbol("Plus"),
        *(
            Function(Symbol("Times"), c, Function(Symbol("Power"), x, k))
            for k, c in enumerate(coefs)
        ),
    )
    theirs = wl.Plus(*(wl.Times(c, wl.Power(wl.x, k)) for k, c in enumerate(coefs)))
    return ours, theirs


def best_of(
    ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int
) -> tuple[float, float]:
    """Best times of both, run alternately so that load from elsewhere hits both alike."""
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, fn in enumerate((ours, theirs)):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="best of this many runs")
    args = parser.parse_args(argv)

    data = mixed_list()
    poly_ours, poly_theirs = polynomial()
    cases = [("50k mixed list", data, data), ("2000-term polynomial", poly_ours, poly_theirs)]

    rows = []
    for name, ours, theirs in cases:
        wxf = dumps(ours)
        if wxf != export(theirs, target_format="wxf"):
            print(f"warning: {name}: encodings differ from wolframclient's", file=sys.stderr)
        if loads(wxf) != ours:
            print(f"error: {name}: round trip failed", file=sys.stderr)
        enc_ours, enc_wc = best_of(
            lambda o=ours: dumps(o), lambda t=theirs: export(t, target_format="wxf"), args.repeats
        )
        dec_ours, dec_wc = best_of(
            lambda b=wxf: loads(b), lambda b=wxf: binary_deserialize(b), args.repeats
        )
        rows.append((name, "encode", len(wxf), enc_ours, enc_wc))
        rows.append((name, "decode", len(wxf), dec_ours, dec_wc))

    header = f"{'case':<22} {'op':<7} {'bytes':>8} {'ours ms':>9} {'wolframclient ms':>17} ratio"
    print(header)
    print("-" * len(header))
    met = True
    for name, op, size, ours_t, wc_t in rows:
        ratio = wc_t / ours_t
        met &= ratio >= GOAL
        print(
            f"{name:<22} {op:<7} {size:>8} {ours_t * 1e3:>9.2f} {wc_t * 1e3:>17.2f} {ratio:>5.1f}x"
        )
    verdict = "MET" if met else "NOT MET"
    print(f"\ngoal ≥ {GOAL:.0f}× faster than wolframclient on every row: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
