"""Scheduled jobs and the executors that run them.

A :class:`Job` is one ``listferry`` command for one tenant (a sync, an export) or for
all (the digest), as a command line. An executor runs jobs and returns a
``concurrent.futures.Future`` of each :class:`JobResult`; plugins register executors
with ``register_executors`` and the config picks one (``[listferry] executor``). The
built-in ``local`` executor runs each job as a child process of this machine, at most
``[listferry] workers`` at a time.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from listferry.text import how_ended


@dataclass(frozen=True)
class Job:
    """What to run: ``kind`` (``sync``, ``export``, ``digest``), for whom, and how."""

    kind: str
    tenant: str | None
    argv: list[str]
    #: Seconds after which the executor stops the job's process (``None``: no limit). A
    #: sync keeps its tenant's ``sync_timeout`` itself; this stops one that hangs anyway.
    timeout: float | None = None


#: A sync process still running this long after its tenant's ``sync_timeout`` (which the
#: run itself keeps, at its next batch) is killed.
KILL_AFTER = 60.0


@dataclass(frozen=True)
class JobResult:
    """How a job's process ended: its exit code (``None`` if it never ran) and output."""

    returncode: int | None
    stdout: str
    stderr: str

    def how(self) -> str:
        """How the job's process ended, in words."""
        return how_ended(self.returncode)

    def last_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else "no message"


class Executor(Protocol):
    """Runs jobs; what ``register_executors`` factories return."""

    def submit(self, job: Job) -> Future[JobResult]: ...

    def shutdown(self, wait: bool = True) -> None: ...
