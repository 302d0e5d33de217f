"""The login defence every serve node shares (listferry.cluster.logins), on PostgreSQL.

Two guards stand for two nodes; the end-to-end proof through HAProxy is
tests/cluster/test_ha.py.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
import time
from contextlib import suppress

import pytest

from listferry.cluster.database import connect, create_schema
from listferry.cluster.logins import SharedLogins
from listferry.config.settings import ServerSettings
from listferry.serve.logins import LoginGuard
from listferry.testing import wait_for

from .services import free_port


def settings() -> ServerSettings:
    return ServerSettings(
        delay_after_failures=50, account_delay_after_failures=50, block_after_failures=4
    )


@pytest.fixture
def url(database_url: str) -> str:
    with connect(database_url) as conn:
        create_schema(conn)
    return database_url


def test_failures_on_two_nodes_add_up_and_the_block_holds_on_both_until_lifted(url) -> None:
    books = [SharedLogins(url, watch=True), SharedLogins(url, watch=True)]
    a, b = (LoginGuard(settings(), blocks=book) for book in books)
    try:
        for guard in (a, b, a):
            guard.failed("192.0.2.9", "acme")
        assert not a.blocked("192.0.2.9") and not b.blocked("192.0.2.9")
        # the fourth, on the second node, to a name PostgreSQL's text cannot hold
        b.failed("192.0.2.9", "bra\x00vo")
        assert b.blocked("192.0.2.9")
        wait_for(lambda: a.blocked("192.0.2.9"), "the first node to see the block", 5)
        assert not a.blocked("192.0.2.10")  # another address is not
        # The accounts are counted across nodes too (delays), and a good login forgets
        # only its own account's failures from that address.
        b.failed("198.51.100.1", "carol")
        a.succeeded("198.51.100.1", "carol")
        with connect(url) as conn:
            left = wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM listferry_login_failures WHERE source = %s",
                        ("198.51.100.1",),
                    ).fetchone()[0]
                    == 0
                ),
                "the good login to clear its failures",
                5,
            )
        assert left
        # `server unblock` (a book of its own, as the command has) lifts it on both.
        command = SharedLogins(url)
        ((listed),) = command.active(time.time())
        assert listed.source == "192.0.2.9" and listed.accounts == ("acme", "bra\\x00vo")
        assert command.remove("192.0.2.9", time.time())
        assert not command.remove("192.0.2.9", time.time())
        command.close()
        for guard in (a, b):
            wait_for(lambda guard=guard: not guard.blocked("192.0.2.9"), "the block lifted", 5)
        # ... with the failures behind it: one more is not a block again.
        a.failed("192.0.2.9", "acme")
        assert not a.blocked("192.0.2.9")
    finally:
        a.close()
        b.close()


def test_a_database_that_does_not_answer_leaves_each_node_its_own_defence(caplog) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # takes connections, never answers
    held: list[socket.socket] = []

    def take() -> None:
        with suppress(OSError):
            while True:
                held.append(silent.accept()[0])

    threading.Thread(target=take, daemon=True).start()
    url = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/test"
    try:
        with caplog.at_level(logging.INFO):
            book = SharedLogins(url, watch=True)  # serve starts; the database is away
            guard = LoginGuard(settings(), blocks=book)
            for _ in range(4):
                guard.failed("192.0.2.20", "acme")
            assert guard.blocked("192.0.2.20")  # counted here, as on one machine
            book._resting_until = 0  # as when the database is next tried
            guard.succeeded("192.0.2.21", "acme")
            # It returned while its write still waits for the database, which never answers.
            wait_for(lambda: len(held) == 2, "the write to reach the database")
            assert book._lock.locked()
            guard.close()
    finally:
        silent.close()
        for sock in held:
            sock.close()
    logged = [r.getMessage() for r in caplog.records if "event=logins" in r.getMessage()]
    assert len(logged) == 1, logged  # once, however many logins met it
    assert "result=failed" in logged[0] and "the shared login defence" in logged[0]


def test_server_blocked_names_a_database_that_does_not_answer_in_one_line(tmp_path) -> None:
    config = tmp_path / "listferry.toml"
    port = free_port()
    config.write_text(
        f'[listferry]\nstate = "state"\n\n[cluster]\n'
        f'database = "postgresql://postgres@127.0.0.1:{port}/test"\n\n'
        '[storage]\nurl = "s3://bucket/x"\nendpoint_url = "http://127.0.0.1:1"\n'
    )
    done = subprocess.run(
        ["listferry", "--config", str(config), "server", "blocked"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert f"127.0.0.1:{port}" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_catch_up_takes_when_a_tenant_was_added_from_the_database(
    tmp_path, database_url: str, bucket
) -> None:
    """On a node where `tenant add` did not run there is no state folder to date the
    tenant: a tenant added after 02:00 is not synced at once as missed when a node
    starts at 03:10 (issue #17's review)."""
    from datetime import datetime

    from listferry.ops.scheduler import Scheduler

    from .test_cluster_sync import write_config

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text)

    with connect(database_url) as conn:
        create_schema(conn)
        for name, added in (("fresh", "2026-11-30T02:30:00Z"), ("stale", "2026-11-20T12:00:00Z")):
            conn.execute(
                "INSERT INTO listferry_tenants (name, settings, created_at) VALUES (%s, %s, %s)",
                (name, '{"schedule": "02:00"}', added),
            )
    config = write_config(tmp_path / "node", database_url, bucket)
    scheduler = Scheduler(config, lambda: at("2026-11-30T03:10:00Z"))
    try:
        scheduler.reload()
        times = scheduler.next_times()
    finally:
        scheduler.executor.shutdown()
    assert times["fresh"]["sync"] == "2026-12-01T02:00:00Z"
    assert times["stale"]["sync"] == "2026-11-30T03:10:00Z"  # never ran since it was added


def test_a_block_made_while_the_database_refused_it_is_written_once_it_takes_it(url) -> None:
    """Review finding 3: a block whose write failed was kept on its node alone, where
    `server blocked` could not list it nor `server unblock` lift it."""
    with connect(url) as conn:
        conn.execute("ALTER TABLE listferry_login_blocks RENAME TO hidden_blocks")
    book = SharedLogins(url, watch=True)
    guard = LoginGuard(settings(), blocks=book)
    try:
        for _ in range(4):
            guard.failed("192.0.2.30", "acme")
        assert guard.blocked("192.0.2.30")  # here, at once
        with connect(url) as conn:
            conn.execute("ALTER TABLE hidden_blocks RENAME TO listferry_login_blocks")
        command = SharedLogins(url)
        listed = wait_for(
            lambda: command.active(time.time()), "the block to be written by the watcher", 10
        )
        assert [block.source for block in listed] == ["192.0.2.30"]
        assert guard.blocked("192.0.2.30")  # the node's own, still
        assert command.remove("192.0.2.30", time.time())
        wait_for(lambda: not guard.blocked("192.0.2.30"), "the block to be lifted here too", 5)
        command.close()
    finally:
        guard.close()
