"""Soak test: cut the network in front of sshd again and again in the middle of printing cells.

Run as ``python benchmarks/soak_reconnect.py`` (root: the bed makes accounts and a namespace);
not part of CI (tests/test_ssh_reconnect.py runs one such cut).  One kernel, reached through a
ShapingProxy in front of the real sshd (tests/sshbed.py), runs ``--repeat`` cells; in each the
proxy goes silent (no FIN, no RST) ``--cut-at`` s into the cell for ``--cut`` s.  A repetition
succeeds when the cell's whole output arrived through jupyter_client in order exactly once, the
variable set before the first cut still holds, and the kernel never died.  The issue's scenario
(a 60 s cut in a 90 s cell) is ``--prints 180 --cut 60``.  Exit status: 0 when all succeeded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from jupyter_client.manager import start_new_kernel  # noqa: E402

from kernel_helpers import collect, execute  # noqa: E402
from sshbed import ShapingProxy, SSHBed  # noqa: E402
from test_ssh_reconnect import add_spec  # noqa: E402


def one_cut(kc, proxy: ShapingProxy, prints: int, cut_at: float, cut: float) -> str:
    """Run one printing cell with a cut in it; '' on success, else what went wrong."""
    def outage() -> None:
        time.sleep(cut_at)
        proxy.cut()
        time.sleep(cut)
        proxy.restore()

    cutter = threading.Thread(target=outage, daemon=True)
    msg_id = kc.execute(f'Do[Print[i]; Pause[0.5], {{i, 1, {prints}}}]; "done"')
    cutter.start()
    try:
        run = collect(kc, msg_id, timeout=prints * 0.5 + cut + 120)
    except Exception as exc:  # noqa: BLE001 - a soak reports every failure and goes on
        return f"no complete reply: {exc!r}"
    finally:
        cutter.join(timeout=cut_at + cut + 5)
        proxy.restore()
    expected = "".join(f"{i}\n" for i in range(1, prints + 1))
    got = run.streams("stdout")
    if run.reply.get("status") != "ok":
        return f"status {run.reply.get('status')}: {run.reply.get('evalue')}"
    if got != expected:
        lines = got.splitlines()
        return (f"output differs: {len(lines)} lines for {prints}, duplicates "
                f"{len(lines) - len(set(lines))}, first lines {lines[:8]}")
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--prints", type=int, default=30, help="one every 0.5 s")
    parser.add_argument("--cut-at", type=float, default=3.0)
    parser.add_argument("--cut", type=float, default=8.0, help="seconds of silence")
    parser.add_argument("--keepalive", type=float, default=1.0)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="rkj-soak-")
    os.environ.update({"JUPYTER_PATH": f"{root}/share/jupyter",
                       "JUPYTER_RUNTIME_DIR": f"{root}/runtime",
                       "JUPYTER_DATA_DIR": f"{root}/data"})
    os.environ.pop("SSH_AUTH_SOCK", None)
    with SSHBed(users=["rkjtest"]) as bed:
        proxy = bed.proxy(delay_ms=1, rate_bps=None)
        spec = add_spec(bed, root, "soak", proxy.port, keepalive=args.keepalive,
                        reconnect_grace=args.cut + 120)
        km, kc = start_new_kernel(kernel_name=spec, startup_timeout=120)
        successes = 0
        try:
            lease = km.provisioner.transport.lease
            execute(kc, "kept = 7;")
            for n in range(1, args.repeat + 1):
                started = time.monotonic()
                problem = one_cut(kc, proxy, args.prints, args.cut_at, args.cut)
                if not problem:
                    kept = execute(kc, "kept").results()
                    if not kept or kept[0]["data"]["text/plain"] != "7":
                        problem = f"kept is {kept}"
                if not problem and not km.is_alive():
                    problem = "the kernel died"
                successes += not problem
                print(f"{n:2d}: {'ok' if not problem else 'FAILED: ' + problem} in "
                      f"{time.monotonic() - started:.1f} s (SSH reconnects so far: "
                      f"{lease.shared.reconnects})", flush=True)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    print(f"{successes}/{args.repeat} cuts of {args.cut:g} s survived with the whole output "
          "in order, exactly once")
    return 0 if successes == args.repeat else 1


if __name__ == "__main__":
    sys.exit(main())
