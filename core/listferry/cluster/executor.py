"""The schedule's executor in cluster mode: a due sync is a job queued for the workers.

The job's answer is its queueing, not its runs: the worker that takes it records them
(``listferry runs``, ``sync --wait``). A tenant queued while its last job still waits
runs once.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future
from typing import Any

from listferry.config import Config
from listferry.errors import ListferryError
from listferry.jobs import Job, JobResult

log = logging.getLogger("listferry")


class QueueExecutor:
    """Queues each scheduled sync in the cluster's Procrastinate queue."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._app: Any = None

    def _queue(self) -> Any:
        if self._app is None:
            from listferry.cluster.queue import build_app

            app = build_app(self.config)
            app.open()
            self._app = app
        return self._app

    def submit(self, job: Job) -> Future[JobResult]:
        from listferry.cluster.queue import queue_sync

        future: Future[JobResult] = Future()
        if job.kind != "sync" or job.tenant is None:
            reason = f"a scheduled {job.kind} is not run in cluster mode yet (docs/cluster.md)"
            future.set_result(JobResult(None, "", reason))
            return future
        try:
            job_id, queued = queue_sync(self._queue(), job.tenant)
        except ListferryError as exc:
            self.close()
            future.set_result(JobResult(None, "", str(exc)))
            return future
        except Exception as exc:  # the queue's own errors: the database went away
            self.close()
            future.set_result(JobResult(None, "", f"could not queue: {type(exc).__name__}: {exc}"))
            return future
        answer = [{"tenant": job.tenant, "job_id": job_id, "queued": queued}]
        log.info("%s: %s as job %s", job.tenant, "queued" if queued else "already queued", job_id)
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
