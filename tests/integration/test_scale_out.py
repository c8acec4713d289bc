"""Story: three ``mailgate serve`` nodes share one PostgreSQL queue (DESIGN.md, scale-out).

In normal operation each acknowledged message reaches the upstream exactly once; when one
node is killed (SIGKILL) under load, the deliveries it had leased become due when their
lease ends and the other nodes deliver them, and nothing acknowledged is lost.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from fakes.load import SmtpLoad, pg_query, wait_until
from fakes.serve import ServeProcess, write_config
from fakes.upstream import Upstream

# s: [delivery] lease of the test nodes: a killed node's work moves on after it. A live
# node renews the leases of its attempts in flight every third of it.
LEASE = 6.0


def start_nodes(
    tmp_path: Path, up: Upstream, pg_url: str, count: int, database_url: str | None = None
) -> list[ServeProcess]:
    """``count`` nodes (node ids n1, n2...), each with its own data_dir and log."""
    nodes = []
    for i in range(1, count + 1):
        folder = tmp_path / f"n{i}"
        folder.mkdir()
        cfg = write_config(
            folder,
            up.port,
            server=f'node_id = "n{i}"',
            extra=(
                f'[database]\nurl = "{database_url or pg_url}"\n'
                f'[delivery]\nlease = "{LEASE}s"\nshutdown_grace = "1s"\n'
            ),
        )
        nodes.append(ServeProcess(cfg, folder / "serve.log"))
    return nodes


def test_three_nodes_no_duplicates_and_a_killed_nodes_leases_move_on(
    tmp_path: Path, pg_url: str
) -> None:
    with Upstream() as up:
        up.faults.data_delay = 0.1  # attempts take a while: a killed node has some in flight
        nodes = start_nodes(tmp_path, up, pg_url, 3)
        try:
            live = [n.port for n in nodes]
            load = SmtpLoad(lambda: live, clients=6).start()
            # Normal operation: every node accepts and delivers; nothing goes twice.
            wait_until(lambda: len(load.acked) >= 150, 30, "150 acknowledged messages")
            load.stop()
            first = dict(load.acked)
            wait_until(lambda: set(first) <= set(up.by_queue_id()), 30, "their delivery")
            delivered = up.by_queue_id()
            assert max(delivered.values()) == 1, "a message went out twice in normal operation"

            # Under load, kill -9 the second node once it holds leases.
            load = SmtpLoad(lambda: live, clients=6).start()
            victim = nodes[1]
            leased: list[Any] = []

            def victim_leases() -> bool:
                leased[:] = pg_query(
                    pg_url,
                    "SELECT message_id, rcpt_idx FROM deliveries WHERE lease_owner LIKE 'n2:%'",
                )
                return len(leased) >= 5

            wait_until(victim_leases, 30, "the second node to hold leases")
            os.kill(victim.proc.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            victim.proc.wait(10)
            live.remove(victim.port)
            leased = pg_query(
                pg_url, "SELECT message_id, rcpt_idx FROM deliveries WHERE lease_owner LIKE 'n2:%'"
            )
            assert leased, "the killed node held no lease"
            ids = [r["message_id"] for r in leased]

            def leases_delivered() -> bool:
                rows = pg_query(
                    pg_url,
                    "SELECT count(*) AS n FROM deliveries WHERE message_id = ANY($1::text[])"
                    " AND status = 'sent'",
                    ids,
                )
                return int(rows[0]["n"]) == len(ids)

            # Recorded 'sent' by a live node (the dead one records nothing) within the lease
            # and 5 s, under load: a claimed delivery is in the retry lane, which gets a share
            # of every claim, so the backlog of fresh mail does not hold it up.
            wait_until(leases_delivered, LEASE + 5, "the killed node's leases to be delivered")
            moved_after = time.monotonic() - killed_at
            time.sleep(0.5)  # more load on the two that are left
            load.stop()
            acked = {**first, **load.acked}
            wait_until(lambda: set(acked) <= set(up.by_queue_id()), 30, "every acked delivery")
            delivered = up.by_queue_id()
            missing = set(acked) - set(delivered)
            assert not missing, f"{len(missing)} acknowledged messages lost"
            again = {q: c for q, c in delivered.items() if c > 1}
            # At least once: only what the dead node had in flight may go out a second time.
            assert set(again) <= set(ids), f"duplicates beyond the killed node's leases: {again}"
            print(
                f"acked={len(acked)} leased_by_killed={len(ids)} moved_in={moved_after:.1f}s"
                f" duplicates={len(again)} replies={dict(load.replies)}"
            )
        finally:
            for node in nodes:
                node.close()


def test_a_second_node_with_the_same_node_id_is_refused(tmp_path: Path, pg_url: str) -> None:
    """Two nodes with one node_id (the default is the host name: two nodes on one host):
    the second released the first's leases as an earlier run's, and the mail the first
    had in flight went out twice. It is refused at start now; the first goes on."""
    import subprocess
    import sys

    with Upstream() as up:
        (first,) = start_nodes(tmp_path, up, pg_url, 1)
        try:
            folder = tmp_path / "twin"
            folder.mkdir()
            cfg = write_config(
                folder, up.port, server='node_id = "n1"', extra=f'[database]\nurl = "{pg_url}"\n'
            )
            twin = subprocess.run(
                [sys.executable, "-m", "mailgate.cli", "serve", "--config", str(cfg)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert twin.returncode != 0
            assert "another mailgate serve with [server] node_id 'n1'" in twin.stderr
            assert "released" not in first.text()
            assert first.proc.poll() is None
        finally:
            first.close()
