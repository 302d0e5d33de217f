"""What happens when a file arrives: plugins are told, and ``on-upload`` syncs run."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

from listferry.app import App
from listferry.config import Tenant, duration_seconds
from listferry.jobs import KILL_AFTER, JobResult
from listferry.serve.log import event, log
from listferry.store.database import waiting_lists
from listferry.sync.run import record_failure
from listferry.sync.select import select

#: After an on-upload sync whose process printed no runs (it could not read the config,
#: it crashed), the tenant is synced again after these many seconds while its files are
#: still there; then its schedule (or the next upload) takes over.
RETRY_SECONDS = (300.0, 900.0, 2700.0)


class UploadDispatcher:
    """Tells plugins that a file arrived, and runs ``on-upload`` syncs.

    A tenant with ``process = "on-upload"`` is synced once a list file is in. Uploads
    that follow each other within ``upload_grace`` seconds are taken together (a list,
    then its count file). A list whose required count file has not come yet is held by
    that sync (its ``count_file_wait`` starts), and the tenant is synced again when the
    count file comes or when the wait is over, which voids the list. ``workers`` threads
    run the syncs, each as its own ``listferry sync`` process, the tenant due first
    first, and never one tenant twice at once: a tenant's long sync holds up the others
    only when every worker is busy. One that prints no runs is recorded as a ``failed``
    run and tried again after :data:`RETRY_SECONDS`.

    In cluster mode ``queue(tenant)`` is given: a due tenant's sync is queued for any
    worker instead (a tenant queued twice runs once), and it returns what to log (the
    job); one that cannot be queued is tried again after :data:`RETRY_SECONDS`.
    """

    def __init__(
        self,
        app: App,
        grace: float,
        tenants: Callable[[], dict[str, Tenant]] | None = None,
        retry_seconds: tuple[float, ...] = RETRY_SECONDS,
        workers: int = 1,
        queue: Callable[[str], str] | None = None,
    ) -> None:
        self.app = app
        self.queue = queue
        self.grace = grace
        self.tenants = tenants or (lambda: app.config.tenants)
        self.retry_seconds = retry_seconds
        self._due: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._running: set[str] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self._workers = [
            threading.Thread(target=self._work, name=f"on-upload-{n}", daemon=True)
            for n in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    def received(self, tenant: Tenant, name: str) -> None:
        """A completed upload of ``name`` (relative to the home) for ``tenant``."""
        event("received", tenant=tenant.name, file=name)
        try:
            self.app.host.hook.file_received(tenant=tenant, path=name)
        except Exception as exc:
            log.error(
                "a file_received plugin failed for %s: %s: %s", tenant.name, type(exc).__name__, exc
            )
        if tenant.process == "on-upload":
            self._come_back(tenant.name, self.grace)

    def _come_back(self, name: str, seconds: float, sooner: bool = False) -> None:
        """Sync ``name`` in ``seconds``; with ``sooner``, only if nothing is due before."""
        at = time.monotonic() + seconds
        with self._cond:
            if sooner and name in self._due:
                at = min(at, self._due[name])
            self._due[name] = at
            self._cond.notify()

    def _pending(self, tenant: Tenant) -> bool:
        """Whether a list file lies in the tenant's home."""
        transport = self.app.transport(tenant)
        try:
            return bool(select(transport.list(), tenant).runs)
        finally:
            transport.close()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not (name := self._next_due()):
                    waiting = [at for n, at in self._due.items() if n not in self._running]
                    timeout = min(waiting, default=time.monotonic() + 60)
                    self._cond.wait(max(0.0, timeout - time.monotonic()))
                if self._stopping:
                    return
                del self._due[name]
                self._running.add(name)
            try:
                self._visit(name)
            except Exception as exc:  # the worker goes on for every other tenant
                log.error(
                    "%s: the on-upload sync could not be started: %s: %s",
                    name,
                    type(exc).__name__,
                    exc,
                )
            finally:
                with self._cond:
                    self._running.discard(name)
                    self._cond.notify_all()  # the tenant may be due again meanwhile

    def _visit(self, name: str) -> None:
        """Sync tenant ``name`` if it is still an on-upload tenant with a list waiting."""
        tenant = self.tenants().get(name)
        if self.queue is not None and tenant is not None and tenant.process == "on-upload":
            self._queue(tenant)
            return
        if tenant is None or tenant.process != "on-upload" or not self._pending(tenant):
            self._failures.pop(name, None)
            return
        runs, failure = self._sync(tenant)
        if failure is not None:
            runs = [record_failure(tenant, failure).to_json()]
        for run in runs:
            event(
                "run",
                tenant=run["tenant"],
                file=run.get("file"),
                status=run["status"],
                reason=run.get("reason"),
                hint=run.get("hint"),
            )
        if failure is not None:
            self._retry(tenant)
        else:
            self._failures.pop(name, None)
            self._until_the_wait_is_over(tenant)

    def _queue(self, tenant: Tenant) -> None:
        """Queue the tenant's sync for a worker of the cluster; the worker looks at its
        home, so nothing is read here."""
        assert self.queue is not None
        try:
            job = self.queue(tenant.name)
        except Exception as exc:
            log.error("%s: the on-upload sync could not be queued: %s", tenant.name, exc)
            self._retry(tenant)
            return
        self._failures.pop(tenant.name, None)
        event("queued", tenant=tenant.name, job=job)

    def _sync(self, tenant: Tenant) -> tuple[list[dict], str | None]:
        """``listferry sync NAME`` in a process of its own: a crash or a memory blow-up in
        one tenant's run never reaches the servers, and the run reads the config as it is
        now. The runs it printed, or why it printed none."""
        import json
        import subprocess
        import sys

        argv = [
            sys.executable,
            "-m",
            "listferry",
            "--config",
            str(self.app.config.path),
            "sync",
            tenant.name,
            "--json",
        ]
        limit = tenant.sync_timeout
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=limit + KILL_AFTER,
            )
        except subprocess.TimeoutExpired:
            took = f"took longer than sync_timeout ({limit:g} s) and was killed"
            return [], f"the on-upload sync process {took}"
        try:
            return list(json.loads(done.stdout)), None
        except (ValueError, TypeError):
            result = JobResult(done.returncode, done.stdout, done.stderr)
            return [], f"the on-upload sync process {result.how()}: {result.last_line()}"

    def _retry(self, tenant: Tenant) -> None:
        """Try a tenant whose sync could not run again later, a few times."""
        failures = self._failures[tenant.name] = self._failures.get(tenant.name, 0) + 1
        if failures > len(self.retry_seconds):
            self._failures.pop(tenant.name)
            log.error(
                "%s: the on-upload sync failed %d times; its schedule or the next upload syncs it",
                tenant.name,
                failures,
            )
            return
        wait = self.retry_seconds[failures - 1]
        log.warning("%s: the on-upload sync is tried again in %g s", tenant.name, wait)
        self._come_back(tenant.name, wait, sooner=True)

    def _until_the_wait_is_over(self, tenant: Tenant) -> None:
        """Come back to a tenant whose list waits for its count file when the wait is
        over (the sync then voids the list, unless the count file came)."""
        if tenant.count_file != "required" or not tenant.count_file_wait:
            return
        try:
            seen = waiting_lists(tenant.database)
        except sqlite3.Error as exc:
            log.error("%s: cannot read when its lists were first seen: %s", tenant.name, exc)
            return
        wait = duration_seconds(tenant.count_file_wait)
        now = time.time()
        ends = [first + wait for _size, _mtime, first in seen.values() if first + wait > now]
        if ends:  # a second past the end: the sync's own clock has passed it too
            self._come_back(tenant.name, min(ends) - now + 1, sooner=True)

    def _next_due(self) -> str | None:
        """The tenant due first that no worker is syncing, if its time has come."""
        now = time.monotonic()
        ready = [(at, n) for n, at in self._due.items() if at <= now and n not in self._running]
        return min(ready)[1] if ready else None

    def stop(self, timeout: float) -> None:
        """Stop syncing. In cluster mode the tenants still waiting out ``upload_grace``
        (or a retry) are queued now, once: a node stopped between an upload and its
        sync (a rolling restart) leaves no list to wait for the schedule."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        ends = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, ends - time.monotonic()))
        if self.queue is None:
            return
        with self._cond:
            left, self._due = sorted(self._due), {}
        for at, name in enumerate(left):
            tenant = self.tenants().get(name)
            if tenant is None or tenant.process != "on-upload":
                continue
            try:
                job = self.queue(name)
            except Exception as exc:  # the database is away: the others would wait as long
                rest = ", ".join(left[at:])
                log.error(
                    "the on-upload syncs of %s could not be queued as serve stopped: %s; "
                    "their schedule or the next upload syncs them",
                    rest,
                    exc,
                )
                return
            event("queued", tenant=name, job=job, reason="serve stopping")
