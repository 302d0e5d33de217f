"""The schedule's leader: one node at a time, by a PostgreSQL advisory lock.

Every node may run ``listferry serve`` or ``listferry schedule``; only the one holding
the lock queues the due jobs. The lock is held by a session of its own, so it goes with
that node's connection: a node that dies, or loses the database, lets another take it
at its next look (each tick of the schedule). Even two nodes that both believed they
lead could not run a tenant twice: a tenant queued twice runs once (the queueing lock).
"""

from __future__ import annotations

import logging
from typing import Any

from listferry.cluster.database import connect
from listferry.cluster.stores import node_name
from listferry.errors import ListferryError

log = logging.getLogger("listferry")

#: The advisory lock's key: any fixed 64-bit number the cluster's other users do not use.
LEADER_LOCK = 0x6C66_7363_6865_64  # "lfsched"


class Leadership:
    """Whether this node leads the schedule; :meth:`held` looks (and tries to take it)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._conn: Any = None
        self.leading = False

    def held(self) -> bool:
        """True while this node holds the lock; takes it when it is free."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.database_url, name=f"listferry leader {node_name()}")
                self.leading = False
            if self.leading:
                self._conn.execute("SELECT 1")  # the session (and so the lock) still stands
                return True
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,))
            self.leading = bool(row.fetchone()[0])
            if self.leading:
                log.info("schedule: this node leads (it queues the due jobs)")
        except ListferryError as exc:
            self._lost(f"the database does not answer: {exc}")
        except Exception as exc:  # psycopg's errors: the session is gone, and the lock
            self._lost(f"the database session ended: {type(exc).__name__}: {exc}")
        return self.leading

    def _lost(self, why: str) -> None:
        if self.leading:
            log.warning("schedule: this node no longer leads: %s", why)
        self.leading = False
        self.release()

    def release(self) -> None:
        """Give the lead up (the lock goes with the session)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a broken connection
                log.debug("closing the leader's connection failed", exc_info=True)
            self._conn = None
        self.leading = False


def leader(conn: Any) -> str | None:
    """The node that leads the schedule (``host:pid``), if any (for ``cluster status``)."""
    row = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND ((l.classid::bigint << 32) | l.objid::bigint) = %s",
        (LEADER_LOCK,),
    ).fetchone()
    return row[0].removeprefix("listferry leader ") if row else None
