"""Large results on a slow path are compressed (issue 16), end to end on the ssh test bed.

A real agent and Mathics3 engine behind a real sshd, reached through the bed's shaping proxy
limited to 2 Mbit/s: between the agent and that limit sit the loopback socket buffers, sshd's
channel buffer and the SSH window, which swallowed a few MB without blocking and made the old
policy send everything raw.  Asserted in bytes on the wire (not time), as the kernel's link
counts them; the same result over the unshaped path and over a local agent for comparison.
"""

from __future__ import annotations

import pytest

from rk_jupyter.client import AgentClient, Collected, Endpoint
from rk_jupyter.client import run as evaluate
from rk_jupyter.client.status import bulk_row
from rk_jupyter.link.frames import BulkReceipt
from rk_jupyter.provisioning.settings import LaunchSettings
from rk_jupyter.provisioning.ssh import backend
from rk_jupyter.provisioning.ssh.pool import ConnectionPool, ConnectOptions
from rk_jupyter.provisioning.ssh.remote_agent import AgentSettings

from sshbed import SSHBed

# ~1.4 MB of numbers as text: compressible like a table or a CSV export.
BIG = 'StringRepeat[ToString[Range[2500]] <> "\\n", 100]'
ENGINE = {"output_limit": 10**8}  # the whole string comes back, not its short form


def big_result_through(bed: SSHBed, host: str, port: int, tmp_path) -> BulkReceipt | None:
    pool = ConnectionPool()
    target = backend.resolve(LaunchSettings(
        transport="ssh", host=host, port=port, user=bed.user, identity_file=bed.key_file,
        known_hosts=bed.known_hosts))
    lease = pool.acquire(target, ConnectOptions(
        agent=AgentSettings(python=bed.remote_python), log_dir=str(tmp_path)))
    client = AgentClient(Endpoint("127.0.0.1", lease.port, lease.token, transport="ssh",
                                  engine_options=ENGINE))
    try:
        client.open(120)
        out = Collected()
        evaluate(client, BIG, out, timeout=120)
        assert len(out.results[-1]["text/plain"]) > 1_300_000
        return client.link.last_bulk
    finally:
        client.close()
        pool.release(lease)
        pool.shutdown()


@pytest.mark.parametrize("shaped", [True, False], ids=["2-Mbit", "unshaped"])
def test_a_large_result_is_compressed_on_a_slow_path(sshbed: SSHBed, tmp_path,
                                                     shaped: bool) -> None:
    if shaped:
        proxy = sshbed.proxy(delay_ms=25, rate_bps=2_000_000)
        try:
            receipt = big_result_through(sshbed, proxy.host, proxy.port, tmp_path)
        finally:
            proxy.stop()
    else:
        receipt = big_result_through(sshbed, sshbed.host, sshbed.port, tmp_path)
    assert receipt is not None and receipt.raw_bytes > 1_300_000
    print(bulk_row(receipt, "ssh"))
    if shaped:  # every chunk compressed: brotli q1 takes this text to well under a tenth
        assert receipt.compressed_chunks == receipt.chunks
        assert receipt.wire_bytes < 0.15 * receipt.raw_bytes, receipt
        assert "compressed;" in bulk_row(receipt, "ssh")
    else:  # a fast path: whatever the policy chose, it crossed, and the row says how
        assert receipt.wire_bytes <= receipt.raw_bytes + 64 * receipt.chunks
