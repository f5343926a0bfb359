"""The chaos test's short version (issue 22), for CI: 3 kernels of one SSH kernelspec on the
real bed, each running checked cells, while every fault type is injected at least once (an
engine and the agent SIGKILLed, the SSH connection killed both ways, the network cut, an
engine stopped) and proven by its effect; then nothing may be lost, doubled, hung, left dead
or left behind.  The harness and the definitions are in tests/chaos.py; ``make soak`` runs
the long version (20 kernels, 10 minutes).

Why one test with one assertion over many counts: the harness's report names, for every
failure, the kernel, the cell, what came back (ename/evalue, what was missing) and the fault
before it; the assertion message carries that report, so a CI failure says what to fix.
"""

from __future__ import annotations

from pathlib import Path

from chaos import SUMMARY_RE, run

from sshbed import SSHBed

#: 9 faults in the 66 s fault phase (the default cycle: engine-kill, stop, cut, ssh-kill,
#: agent-kill): every type at least once, the SSH kill both ways (sshd SIGKILL, ss -K); cuts
#: and stops short enough to leave time for the rest.  About 80 s when all is well, under 3
#: minutes when it fails (hang and dead bounds of 40 s).
ARGS = ["--kernels", "3", "--minutes", "1.1", "--every", "7", "--cut", "3,6", "--stop", "2,4",
        "--hang-after", "40", "--dead-after", "40", "--leftover-wait", "20"]


def test_chaos_short(sshbed: SSHBed, tmp_path: Path) -> None:
    report = tmp_path / "chaos.json"  # every cell and fault, for a failure's post-mortem
    result = run([*ARGS, "--report", str(report)], bed=sshbed)
    print(result.report)
    print(result.summary)
    fields = SUMMARY_RE.match(result.summary)
    assert fields, result.summary
    message = f"{result.report}\n{result.summary}\n(every record: {report})"
    assert not result.missing_types and not result.unproven, message
    counts = {k: int(fields[k]) for k in ("lost", "doubled", "hung", "dead", "leftovers")}
    assert counts == dict.fromkeys(counts, 0), message
    assert int(fields["cells"]) > 0, message
    assert result.seconds < 180, f"the short version took {result.seconds:.0f} s\n{message}"
