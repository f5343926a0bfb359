"""Every notebook in notebooks/ is executed with nbclient, as CI's tour of the product.

Each notebook runs on the kernelspec its metadata names: rk-local (installed by the rk_local
fixture), python3 (the magics tour, which connects to rk-local), or any other rk- name, which
is written here, with the CLI, pointing at the SSH test bed. Every code cell must run without
an error, and each notebook's own checks (CHECKS) look at what its cells should show. A new
notebook needs an entry in CHECKS.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from rk_jupyter.cli import main as cli

from sshbed import SSHBed

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
LOCAL_KERNELS = ("rk-local", "python3")
CELL_TIMEOUT = 120


@dataclass
class Ran:
    """An executed notebook: its code cells, and the bed its rk- kernel used (if any)."""

    cells: list[Any]
    bed: SSHBed | None

    def cell(self, source: str) -> list[dict[str, Any]]:
        """The outputs of the one code cell whose source starts with ``source``."""
        found = [c for c in self.cells if c.source.strip().startswith(source)]
        assert len(found) == 1, f"{len(found)} code cells start with {source!r}"
        return found[0].outputs

    def cells_of(self, source: str) -> list[list[dict[str, Any]]]:
        return [c.outputs for c in self.cells if c.source.strip().startswith(source)]


def text(outputs: list[dict[str, Any]], kind: str = "execute_result",
         mime: str = "text/plain") -> str:
    values = [o["data"].get(mime, "") for o in outputs if o["output_type"] == kind]
    assert len(values) == 1, f"expected one {kind}, got {outputs}"
    return values[0]


def stream(outputs: list[dict[str, Any]], name: str) -> str:
    return "".join(o["text"] for o in outputs
                   if o["output_type"] == "stream" and o["name"] == name)


def status_table(outputs: list[dict[str, Any]]) -> dict[str, str]:
    """``%rkernel status`` as {row: value}, from its text/plain (``label  value`` lines);
    also checks that the HTML table is there."""
    [display] = [o for o in outputs if o["output_type"] == "display_data"]
    assert "<table class='rk-status'>" in display["data"]["text/html"]
    rows = {}
    for line in display["data"]["text/plain"].splitlines():
        label, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        rows[label] = value
    return rows


def traffic(value: str) -> tuple[int, float]:
    """(packets, raw bytes) of a sent/received row: "12 packets, 1.2 KiB raw, …"."""
    match = re.match(r"(\d+) packets, ([\d.]+) (B|KiB|MiB|GiB) raw", value)
    assert match, value
    scale = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[match.group(3)]
    return int(match.group(1)), float(match.group(2)) * scale


def ratio(rows: dict[str, str]) -> float:
    """wire/raw of the compression row: "brotli, wire/raw = 0.611"."""
    return float(rows["compression"].rsplit("=", 1)[1])


# -- what each notebook must show -----------------------------------------------------------------


def check_quickstart(ran: Ran) -> None:
    assert text(ran.cell("1 + 1")) == "2"
    integral = ran.cell("Integrate[x^2 Sin[x], x]")
    assert "Cos[x]" in text(integral)
    assert text(integral, mime="text/latex").startswith("$$")
    hello = ran.cell('Print["Hello from "')
    assert stream(hello, "stdout").startswith("Hello from Mathics3")
    assert "Power::infy" in stream(hello, "stderr")
    assert text(hello) == "ComplexInfinity"
    assert "<svg" in text(ran.cell("Plot["), mime="image/svg+xml")
    rows = status_table(ran.cell("%rkernel status"))
    assert rows["transport"] == "local" and rows["state"] == "connected"


def check_magics(ran: Ran) -> None:
    assert stream(ran.cell("%load_ext rk_jupyter"), "stdout").startswith(
        "connected to rk-local: Mathics3")
    integral = ran.cell("%%rkernel\nPrint[")
    assert stream(integral, "stdout") == "Integrating...\n"
    assert "Power::infy" in stream(integral, "stderr")
    assert "Cos[x]" in text(integral, "display_data")
    assert "<svg" in text(ran.cell("%%rkernel\nPlot["), "display_data", "image/svg+xml")
    assert text(ran.cell("primes, sum(primes)")) == "([2, 3, 5, 7, 11, 13, 17, 19, 23, 29], 129)"
    # numpy 2 shows the maximum as np.float64(...), numpy 1 as the bare number.
    assert re.fullmatch(r"\('ndarray', \(7, 2\), (np\.float64\()?0\.9974949866040544\)?\)",
                        text(ran.cell("type(samples)")))
    assert text(ran.cell('planet["name"]')) == "('Earth', 6.371)"
    rows = status_table(ran.cell("%rkernel status"))
    assert rows["transport"] == "local" and rows["state"] == "connected"
    assert stream(ran.cell("%rkernel disconnect"), "stdout").startswith("disconnected from")


def _check_ssh_status(rows: dict[str, str], bed: SSHBed) -> None:
    assert rows["transport"] == "ssh"
    assert f"on {bed.user}@{bed.host}:{bed.port}" in rows["endpoint"]
    assert "forwarded from 127.0.0.1:" in rows["endpoint"]
    assert rows["state"] == "connected"
    assert rows["compression"].startswith("brotli, wire/raw = ")


def check_remote_ssh(ran: Ran) -> None:
    bed = ran.bed
    assert bed is not None
    assert text(ran.cell("{$UserName, $HomeDirectory}")) == \
        f"{{{bed.user}, {bed.account.home}}}"
    # The engine runs inside the bed's SSH session: "CLIENT_IP PORT SERVER_IP SERVER_PORT".
    assert text(ran.cell('Environment["SSH_CONNECTION"]')).endswith(f" {bed.host} {bed.port}")
    assert text(ran.cell("FactorInteger[2^64 + 1]")) == "{{274177, 1}, {67280421310721, 1}}"
    integral = ran.cell('Print["integrating on "')
    assert stream(integral, "stdout").startswith("integrating on ")
    assert "ArcTan" in text(integral, mime="text/latex")
    assert "<svg" in text(ran.cell("Plot["), mime="image/svg+xml")
    _check_ssh_status(status_table(ran.cell("%rkernel status")), bed)


def check_diagnostics(ran: Ran) -> None:
    bed = ran.bed
    assert bed is not None
    first, second = (status_table(outputs) for outputs in ran.cells_of("%rkernel status"))
    _check_ssh_status(first, bed)
    _check_ssh_status(second, bed)
    ping = text(ran.cell("%rkernel ping"), "display_data")
    assert re.fullmatch(r"ping agent pid \d+ on .*: min [\d.]+ ms, avg [\d.]+ ms, "
                        r"max [\d.]+ ms \(5 round trips\)", ping), ping
    assert text(ran.cell("Expand[(1 + x)^30]"), mime="text/latex").startswith("$$1+30 x")
    # The counters followed the traffic of the cells in between.
    for row in ("sent", "received"):
        assert traffic(second[row])[0] > traffic(first[row])[0], (first[row], second[row])
    assert traffic(second["received"])[1] - traffic(first["received"])[1] > 400
    # ... and, as the notebook says, the repetitive text compressed well: wire/raw fell.
    assert ratio(second) < ratio(first), (first["compression"], second["compression"])
    message = ran.cell("1/0")
    assert "Power::infy" in stream(message, "stderr")
    assert text(message) == "ComplexInfinity"


CHECKS: dict[str, Callable[[Ran], None]] = {
    "quickstart.ipynb": check_quickstart,
    "magics.ipynb": check_magics,
    "remote-ssh.ipynb": check_remote_ssh,
    "diagnostics.ipynb": check_diagnostics,
}


# -- running them -------------------------------------------------------------------------------


def _bed_kernelspec(bed: SSHBed, prefix: str, kernel_name: str) -> None:
    """A kernelspec named as the notebook wants it, pointing at the bed (as a user would
    write it with rk-jupyter add)."""
    assert kernel_name.startswith("rk-"), kernel_name
    assert cli(["add", kernel_name[3:], "--host", f"{bed.user}@{bed.host}:{bed.port}",
                "--identity", bed.key_file, "--known-hosts", bed.known_hosts,
                "--remote-python", bed.remote_python, "--prefix", prefix]) == 0


def _show(output: dict[str, Any]) -> str:
    if output["output_type"] == "stream":
        return f"[{output['name']}] {output['text'].rstrip()}"
    if output["output_type"] == "error":
        return f"[error] {output['ename']}: {output['evalue']}"
    data = output.get("data", {})
    extra = [f"+{mime}" for mime in data if mime != "text/plain"]
    return f"{data.get('text/plain', '')[:300]} {' '.join(extra)}".strip()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_shows_what_it_should(
    path: Path, request: pytest.FixtureRequest, jupyter_env: str, rk_local: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert path.name in CHECKS, f"add checks for notebooks/{path.name} to CHECKS"
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # only the keys the spec names
    nb = nbformat.read(path, as_version=4)
    kernel_name = nb.metadata["kernelspec"]["name"]
    bed: SSHBed | None = None
    if kernel_name not in LOCAL_KERNELS:
        bed = request.getfixturevalue("sshbed")
        _bed_kernelspec(bed, jupyter_env, kernel_name)
    client = NotebookClient(nb, kernel_name=kernel_name, timeout=CELL_TIMEOUT,
                            startup_timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
    started = time.monotonic()
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name}: a cell failed:\n{exc}")
    finally:
        nbformat.write(nb, tmp_path / path.name)  # the executed notebook, for a look
    print(f"\n{path.name} on {kernel_name}: {time.monotonic() - started:.2f} s")
    cells = [c for c in nb.cells if c.cell_type == "code"]
    for cell in cells:
        print(f"In[{cell.execution_count}]:= {cell.source}")
        for output in cell.outputs:
            print("   ", _show(output))
        assert cell.execution_count is not None, cell.source
        assert not [o for o in cell.outputs if o["output_type"] == "error"], cell.source
    CHECKS[path.name](Ran(cells, bed))
    if bed is not None:  # the kernel is shut down: nothing of it stays on the host
        deadline = time.monotonic() + 20
        while bed.remote_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert bed.remote_processes() == []


def test_remote_ssh_shows_what_rk_jupyter_add_writes(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel.json printed in remote-ssh.ipynb is what its rk-jupyter add line writes."""
    nb = nbformat.read(NOTEBOOKS_DIR / "remote-ssh.ipynb", as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    command = re.search(r"```sh\n(rk-jupyter add .*?)\n```", markdown, re.S).group(1)
    shown = json.loads(re.search(r"```json\n(.*?)\n```", markdown, re.S).group(1))
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    for name in ("id_ed25519", "known_hosts"):
        (home / ".ssh" / name).write_text("")
    monkeypatch.setenv("HOME", str(home))
    argv = command.replace("\\\n", " ").split()[1:]  # as the shell would split it
    argv = [os.path.expanduser(a) if a.startswith("~/") else a for a in argv]
    prefix = tmp_path / "prefix"
    argv = [a for a in argv if a != "--user"] + ["--prefix", str(prefix)]
    assert cli(argv) == 0
    written = json.loads((prefix / "share/jupyter/kernels/rk-hpc1/kernel.json").read_text())
    config = written["metadata"]["kernel_provisioner"]["config"]
    for key in ("identity_file", "known_hosts"):
        config[key] = config[key].replace(str(home), "/home/jdoe")
    written["argv"][0] = shown["argv"][0]  # the Python that ran rk-jupyter
    # The kernelspec's own directory: under --prefix here, under ~/.local with --user.
    assert written["argv"][-1] == f"--rk-kernelspec={prefix}/share/jupyter/kernels/rk-hpc1"
    written["argv"][-1] = shown["argv"][-1]
    assert written == shown
