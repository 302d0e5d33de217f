"""Scheduled jobs and the executors that run them.

A :class:`Job` is one ``listferry`` command for one tenant (a sync, an export) or for
all (the digest), as a command line. An executor runs jobs and returns a
``concurrent.futures.Future`` of each :class:`JobResult`; plugins register executors
with ``register_executors`` and the config picks one (``[listferry] executor``). The
built-in ``local`` executor runs each job as a child process of this machine, at most
``[listferry] workers`` at a time.
"""

from __future__ import annotations

import os
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from listferry.config import Config


@dataclass(frozen=True)
class Job:
    """What to run: ``kind`` (``sync``, ``export``, ``digest``), for whom, and how."""

    kind: str
    tenant: str | None
    argv: list[str]


@dataclass(frozen=True)
class JobResult:
    """How a job's process ended: its exit code (``None`` if it never ran) and output."""

    returncode: int | None
    stdout: str
    stderr: str

    def how(self) -> str:
        if self.returncode is None:
            return "could not be started"
        if self.returncode < 0:
            import signal

            try:
                return f"was killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                return f"was killed by signal {-self.returncode}"
        return f"exited with code {self.returncode}"

    def last_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else "no message"


class Executor(Protocol):
    """Runs jobs; what ``register_executors`` factories return."""

    def submit(self, job: Job) -> Future[JobResult]: ...

    def shutdown(self, wait: bool = True) -> None: ...


class LocalExecutor:
    """Each job a child process on this machine, ``config.workers`` at a time."""

    def __init__(self, config: Config) -> None:
        self.workers = config.workers
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="job")
        self._children: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()

    def submit(self, job: Job) -> Future[JobResult]:
        return self._pool.submit(self._run, job)

    def _run(self, job: Job) -> JobResult:
        env = {**os.environ, "LISTFERRY_JOB": f"{job.kind}:{job.tenant or '-'}"}
        try:
            child = subprocess.Popen(
                job.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except OSError as exc:
            return JobResult(None, "", f"{exc.strerror or exc}")
        with self._lock:
            self._children.add(child)
        try:
            stdout, stderr = child.communicate()
        finally:
            with self._lock:
                self._children.discard(child)
        return JobResult(child.returncode, stdout, stderr)

    def shutdown(self, wait: bool = True) -> None:
        """Wait for the running jobs (they finish their runs); start no new ones."""
        self._pool.shutdown(wait=wait, cancel_futures=True)


def local_executor(config: Config) -> Any:
    return LocalExecutor(config)
