"""The schedule's executor in cluster mode: a due sync or export is a job queued for
the workers; the digest runs on the node that leads the schedule.

A queued job's answer is its queueing, not its runs: the worker that takes it records
them (``listferry runs``, ``sync --wait``). A tenant queued while its last job still
waits runs once. The digest is one command for every tenant, run by the leader's own
executor (``local`` unless the config names another), so it is sent once.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future
from typing import Any

from listferry.config import Config
from listferry.errors import ListferryError
from listferry.jobs import Executor, Job, JobResult

log = logging.getLogger("listferry")


class QueueExecutor:
    """Queues each scheduled sync and export in the cluster's Procrastinate queue; hands
    the digest to ``here``, the executor of this node."""

    def __init__(self, config: Config, here: Executor | None = None) -> None:
        self.config = config
        self.here = here
        self._app: Any = None

    def _queue(self) -> Any:
        if self._app is None:
            from listferry.cluster.queue import build_app

            app = build_app(self.config)
            app.open()
            self._app = app
        return self._app

    def submit(self, job: Job) -> Future[JobResult]:
        from listferry.cluster.queue import queue_export, queue_sync

        future: Future[JobResult] = Future()
        if job.kind == "digest" and self.here is not None:
            return self.here.submit(job)
        if job.kind not in ("sync", "export") or job.tenant is None:
            future.set_result(JobResult(None, "", f"a scheduled {job.kind} has no place here"))
            return future
        queue = queue_sync if job.kind == "sync" else queue_export
        try:
            job_id, queued = queue(self._queue(), job.tenant)
        except ListferryError as exc:
            self.close()
            future.set_result(JobResult(None, "", str(exc)))
            return future
        except Exception as exc:  # the queue's own errors: the database went away
            self.close()
            future.set_result(JobResult(None, "", f"could not queue: {type(exc).__name__}: {exc}"))
            return future
        answer = [{"tenant": job.tenant, "job_id": job_id, "queued": queued}]
        how = "queued" if queued else "already queued"
        log.info("%s: %s %s as job %s", job.tenant, job.kind, how, job_id)
        future.set_result(JobResult(0, json.dumps(answer), ""))
        return future

    def close(self) -> None:
        if self._app is not None:
            try:
                self._app.close()
            except Exception:  # a connection that broke already
                log.debug("closing the queue failed", exc_info=True)
            self._app = None

    def shutdown(self, wait: bool = True) -> None:
        self.close()
        if self.here is not None:
            self.here.shutdown(wait=wait)
