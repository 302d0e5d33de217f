"""The ``local`` executor: scheduled jobs as child processes of this machine."""

from __future__ import annotations

import os
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from listferry import hookimpl
from listferry.config import Config
from listferry.jobs import Job, JobResult


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
                job.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            return JobResult(None, "", f"{exc.strerror or exc}")
        with self._lock:
            self._children.add(child)
        try:
            stdout, stderr = child.communicate(timeout=job.timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            stdout, stderr = child.communicate()
            stderr += f"\nstopped: still running after {job.timeout:g} s"
        finally:
            with self._lock:
                self._children.discard(child)
        return JobResult(child.returncode, stdout, stderr)

    def shutdown(self, wait: bool = True) -> None:
        """Wait for the running jobs (they finish their runs); start no new ones."""
        self._pool.shutdown(wait=wait, cancel_futures=True)


@hookimpl
def register_executors(register: Any) -> None:
    register("local", LocalExecutor)
