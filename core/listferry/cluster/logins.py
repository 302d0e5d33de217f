"""Login defence shared by every serve node: failed logins and blocks in PostgreSQL.

Behind a load balancer a guessing client's connections land on every node in turn. Each
node's guard (:class:`~listferry.serve.logins.LoginGuard`) records each failed login in
``listferry_login_failures`` and counts the source's and the account's failures there,
from every node; the node that reaches ``block_after_failures`` writes the block to
``listferry_login_blocks``, which every node reads again each second. ``listferry server
unblock`` deletes the block (and the failures behind it) there: every node lets the
address in again within a second.

When the database does not answer, a node goes on with what it counted itself (as one
machine does) and says so in one log line a minute; it tries the database again five
seconds later. A failed login waits at most three seconds for the database (two for a
statement); a good one never does.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

from listferry.cluster.database import shown
from listferry.cluster.queue import database_of
from listferry.config import Config
from listferry.config.shared import first_line
from listferry.serve.blocks import Block, BlockBook, BlockFile, blocks_path
from listferry.serve.log import Budget, event
from listferry.text import visible

#: Seconds between two readings of the blocks by a running node.
REFRESH_SECONDS = 1.0
#: Seconds a node leaves the database alone after it did not answer.
RETRY_SECONDS = 5.0
#: The longest any statement may take (ms), and a connection (s): a failed login never
#: waits long for the database, a good one never waits for it.
STATEMENT_MS = 2000
CONNECT_SECONDS = 3


def blocks_of(config: Config) -> BlockBook:
    """Where ``serve``, ``server blocked`` and ``server unblock`` find the blocks: the
    cluster's database in cluster mode, else ``state/server/blocked.db``."""
    if config.cluster is not None:
        return SharedLogins(database_of(config))
    return BlockFile(blocks_path(config.state_dir))


class SharedLogins:
    """The blocks and failed logins of every serve node, in the cluster's database.

    ``watch=True`` (a running ``serve``): the blocks are read again every
    :data:`REFRESH_SECONDS` in a thread of their own, so :meth:`changed` and
    :meth:`active` answer from memory and a connection never waits for the database.
    Otherwise (the commands) :meth:`active` reads the database, and a database that
    does not answer is a :class:`~listferry.ListferryError` naming it.
    """

    def __init__(self, url: str, watch: bool = False) -> None:
        self.url = url
        self._lock = threading.Lock()  # the connection's
        self._conn: Any = None
        self._resting_until = 0.0
        self._faults = Budget(lines=1)
        self._counted = 0
        self._state = threading.Lock()  # what the watcher read
        self._read: dict[str, Block] = {}
        #: blocks put here: when, what, and whether the database has it yet
        self._own: dict[str, tuple[float, Block, bool]] = {}
        self._changed = False
        self._stop = threading.Event()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="login-writes")
        self._watcher: threading.Thread | None = None
        if watch:
            self._refresh()
            self._changed = False
            self._watcher = threading.Thread(target=self._watch, name="login-blocks", daemon=True)
            self._watcher.start()

    # -- the database

    def _run(self, query: str, params: Any = (), rows: bool = True, quiet: bool = True) -> Any:
        """Run ``query``; its rows (or the cursor's row count). ``quiet``: None when the
        database does not answer (logged, within a budget), else the error."""
        import psycopg

        with self._lock:
            if time.monotonic() < self._resting_until and quiet:
                return None
            try:
                if self._conn is None:
                    self._conn = psycopg.connect(
                        self.url,
                        autocommit=True,
                        connect_timeout=CONNECT_SECONDS,
                        application_name="listferry serve logins",
                        options=f"-c statement_timeout={STATEMENT_MS}",
                    )
                cursor = self._conn.execute(query, params)
                return cursor.fetchall() if rows else cursor.rowcount
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                why = first_line(exc)  # the database is away: leave it alone a while
                self._close()
                self._resting_until = time.monotonic() + RETRY_SECONDS
            except psycopg.Error as exc:  # this statement only (nothing a client sends)
                why = first_line(exc)
        if not quiet:
            from listferry.errors import ListferryError

            raise ListferryError(f"database {shown(self.url)}: {why}")
        if self._faults.allow(("database",)) is not None:
            event("logins", result="failed", reason=f"the shared login defence: {why}")
        return None

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()

    # -- what a guard asks

    def changed(self) -> bool:
        with self._state:
            changed, self._changed = self._changed, False
        return changed

    def active(self, now: float) -> list[Block]:
        if self._watcher is not None:
            with self._state:
                found = dict(self._read)
                for source, (_when, block, _written) in self._own.items():
                    found.setdefault(source, block)
        else:
            found = {block.source: block for block in self._fetch(now, quiet=False) or []}
        return sorted((b for b in found.values() if b.until > now), key=lambda b: b.until)

    def put(self, block: Block) -> None:
        """Keep ``block`` for every node; one the database did not take is kept here and
        put again by the watcher once it answers."""
        with self._state:
            self._own[block.source] = (time.monotonic(), block, False)
        if self._write(block):
            with self._state:
                if self._own.get(block.source, (0, None))[1] is block:
                    self._own[block.source] = (time.monotonic(), block, True)

    def _write(self, block: Block) -> bool:
        done = self._run(
            """
            WITH cleared AS (DELETE FROM listferry_login_failures WHERE source = %(source)s)
            INSERT INTO listferry_login_blocks (source, until, failures, accounts)
            VALUES (%(source)s, %(until)s, %(failures)s, %(accounts)s)
            ON CONFLICT (source) DO UPDATE SET until = excluded.until,
                failures = excluded.failures, accounts = excluded.accounts
            """,
            {
                "source": block.source,
                "until": block.until,
                "failures": block.failures,
                "accounts": json.dumps([_text(account) for account in block.accounts]),
            },
            rows=False,
        )
        return done is not None

    def remove(self, source: str, now: float) -> bool:
        gone = self._run(
            """
            WITH cleared AS (DELETE FROM listferry_login_failures WHERE source = %(source)s)
            DELETE FROM listferry_login_blocks WHERE source = %(source)s AND until > %(now)s
            """,
            {"source": source, "now": now},
            rows=False,
            quiet=self._watcher is not None,
        )
        self._run("DELETE FROM listferry_login_blocks WHERE until <= %s", (now,), rows=False)
        with self._state:
            self._own.pop(source, None)
            self._read.pop(source, None)
        return bool(gone)

    def failed(self, source: str, account: str, now: float, since: float) -> tuple[int, int]:
        account = _text(account)
        self._counted += 1
        if self._counted % 256 == 0:  # forget what is too old to count, and ended blocks
            self._run("DELETE FROM listferry_login_failures WHERE at <= %s", (since,), rows=False)
            self._run("DELETE FROM listferry_login_blocks WHERE until <= %s", (now,), rows=False)
        found = self._run(
            """
            WITH added AS (
                INSERT INTO listferry_login_failures (source, account, at)
                VALUES (%(source)s, %(account)s, %(now)s)
            )
            SELECT
                (SELECT count(*) FROM listferry_login_failures
                 WHERE source = %(source)s AND at > %(since)s),
                (SELECT count(*) FROM listferry_login_failures
                 WHERE account = %(account)s AND at > %(since)s)
            """,
            {"source": source, "account": account, "now": now, "since": since},
        )
        if not found:
            return 0, 0
        by_source, by_account = found[0]
        return by_source + 1, by_account + 1  # the row added is not seen by its statement

    def succeeded(self, source: str, account: str) -> None:
        """Forget the account's failures from the source, in the background: a good login
        does not wait for the database."""
        self._writer.submit(
            self._run,
            "DELETE FROM listferry_login_failures WHERE source = %s AND account = %s",
            (source, _text(account)),
            False,
        )

    def close(self) -> None:
        self._stop.set()
        self._writer.shutdown(wait=True, cancel_futures=True)
        if self._watcher is not None:
            self._watcher.join(STATEMENT_MS / 1000 + 1)
        with self._lock:
            self._close()

    # -- the watcher

    def _fetch(self, now: float, quiet: bool = True) -> list[Block] | None:
        rows = self._run(
            "SELECT source, until, failures, accounts FROM listferry_login_blocks "
            "WHERE until > %s ORDER BY until",
            (now,),
            quiet=quiet,
        )
        if rows is None:
            return None
        return [Block(s, u, f, tuple(a)) for s, u, f, a in rows]

    def _refresh(self) -> None:
        now = time.time()
        with self._state:
            unwritten = [put[1] for put in self._own.values() if not put[2] and put[1].until > now]
        for block in unwritten:  # blocks made while the database was away
            if self._write(block):
                with self._state:
                    if self._own.get(block.source, (0, None))[1] is block:
                        self._own[block.source] = (time.monotonic(), block, True)
        began = time.monotonic()
        found = self._fetch(now)
        if found is None:  # the database did not answer: keep what was read last
            return
        read = {block.source: block for block in found}
        with self._state:
            # a block written after the reading began may not be in it yet; one not
            # written yet is kept until it is (or it ends)
            self._own = {
                source: put
                for source, put in self._own.items()
                if (put[0] >= began or not put[2]) and put[1].until > now
            }
            if read != self._read:
                self._read = read
                self._changed = True

    def _watch(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            self._refresh()


def _text(value: str) -> str:
    """``value`` with its control characters escaped: what a client sent as a user name
    may hold a NUL, which PostgreSQL's text refuses."""
    return visible(value)
