"""One run of a tenant at a time on every node: a lease in PostgreSQL.

The lease is an advisory lock held by a database session of its own, which the server
ends once it has been quiet for the lease's length (``idle_session_timeout``). A thread
of the holding process keeps the session busy while the process lives; a process that
dies, or is paused past its lease (a frozen VM, SIGSTOP), loses it, and the next run of
the tenant may start. A run that lost its lease keeps nothing: it does not publish.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from listferry.cluster.database import connect

log = logging.getLogger("listferry")


def lock_key(tenant: str) -> int:
    """The advisory lock's 64-bit key of ``tenant``'s runs."""
    digest = hashlib.sha256(f"listferry runs of {tenant}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class TenantLease:
    """Holds ``tenant``'s run lease while the process lives; ``lost`` once it went."""

    def __init__(self, database_url: str, tenant: str, seconds: float, node: str) -> None:
        self.database_url = database_url
        self.tenant = tenant
        self.seconds = max(seconds, 1.0)
        self.node = node
        self._conn: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False
        #: Why the lease went, in plain words.
        self.why = ""

    def acquire(self) -> bool:
        """Take the lease; False when another process holds it."""
        self._conn = connect(self.database_url, name=f"listferry run {self.tenant} {self.node}")
        timeout = int(self.seconds * 1000)
        self._conn.execute(f"SET idle_session_timeout = {timeout}")
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(self.tenant),))
        if not row.fetchone()[0]:
            self._close()
            return False
        self._thread = threading.Thread(target=self._keep, name="lease", daemon=True)
        self._thread.start()
        return True

    def _keep(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                self._conn.execute("SELECT 1")
            except Exception as exc:  # the session is gone, and the lease with it
                self._lose(exc)
                log.warning("%s: the run's lease is lost: %s", self.tenant, self.why)
                return

    def held(self) -> bool:
        """Whether the lease still holds: the session answers (a paused process finds out
        here that the server ended it)."""
        if self.lost or self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
        except Exception as exc:
            self._lose(exc)
        return not self.lost

    def _lose(self, exc: BaseException) -> None:
        self.lost = True
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        self.why = self.why or f"the database ended its session: {first}"

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # a session the server ended already
                log.debug("closing the lease's session failed", exc_info=True)
            self._conn = None
