"""A sync's time limit, ``sync_timeout``: a run checks it as it hashes, reads and applies
(a thread cannot be stopped from outside), and one past it ends ``failed``."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from listferry.errors import ListferryError

#: How many SQLite virtual-machine steps pass between two looks at the clock.
SQL_STEPS = 100_000


class TookTooLong(ListferryError):
    """The sync ran past its ``sync_timeout``; nothing of the run was applied."""


class Deadline:
    """``seconds`` from now; :meth:`check` raises :class:`TookTooLong` once they passed."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.ends = clock() + seconds

    @property
    def reason(self) -> str:
        return (
            f"took longer than sync_timeout ({self.seconds:g} s) and was stopped; "
            "nothing of it was applied"
        )

    def passed(self) -> bool:
        return self.clock() >= self.ends

    def check(self) -> None:
        if self.passed():
            raise TookTooLong(self.reason)

    def watch(self, conn: sqlite3.Connection) -> None:
        """Interrupt a statement on ``conn`` still running when the time is up."""
        conn.set_progress_handler(self.passed, SQL_STEPS)
