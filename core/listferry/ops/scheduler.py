"""The schedule: each tenant's sync (and return file, and the digest) at its time.

``listferry serve`` runs it beside the servers, ``listferry schedule`` alone. Each due
job goes to the executor the config names (``[listferry] executor``, ``local`` by
default), which runs it as its own ``listferry`` process: one tenant's crash, hang or
memory blow-up never touches another's run or the servers. The config is read again
when it changes, so a tenant added or a schedule changed needs no restart; it is checked
against the plugins loaded at the start (a pack installed since loads at the next).

A sync or export that fell due in the six hours before the schedule started (the
server was rebooted at 02:00) and did not run, runs at once.

A tenant whose home changed in the last ``[server] upload_grace`` seconds is given
that long again (up to a minute), so a list and the count file uploaded just after it
are taken together. A tenant whose previous job is still running when its time comes
again is not started twice; a run that finds the tenant locked by some other process
(an operator's ``sync``) ends ``skipped``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from listferry.app import App, ConfigReload, open_app
from listferry.config import Tenant
from listferry.config.schedule import Schedule
from listferry.errors import ListferryError
from listferry.jobs import KILL_AFTER, Executor, Job, JobResult
from listferry.ops.status import added_at, open_read_only, parse_time
from listferry.sync.run import record_failure, tell_finished
from listferry.times import iso

if TYPE_CHECKING:
    from listferry.cluster.leader import Leadership

log = logging.getLogger("listferry")

#: The longest a due sync waits for uploads to its home to go quiet.
MAX_GRACE = timedelta(seconds=60)
#: How often the loop looks at the clock when nothing is due sooner.
TICK = 30.0
#: How often a node that does not lead the schedule (cluster mode) tries to take the lead.
LEADER_LOOK = 3.0
#: A sync or export that fell due this long before the schedule started, and did not
#: run, runs at once (a server rebooted at 02:00 still syncs that night).
CATCH_UP = timedelta(hours=6)


def listferry_argv(config: Path, *args: str) -> list[str]:
    """The command line of a ``listferry`` subcommand with this config, in this Python."""
    return [sys.executable, "-m", "listferry", "--config", str(config), *args]


@dataclass
class Due:
    """One scheduled thing: what, for which tenant, and when next."""

    kind: str  # "sync", "export" or "digest"
    tenant: str | None
    schedule: Schedule
    at: datetime
    postponed: timedelta = field(default=timedelta(0))


class Scheduler:
    """Starts jobs when they are due, through an executor, until ``stop`` is set."""

    def __init__(
        self,
        config_path: Path,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_result: Callable[[Job, JobResult], None] | None = None,
    ) -> None:
        self.config_path = config_path
        self.clock = clock
        self.on_result = on_result
        self.app: App | None = None
        self.reloading: ConfigReload | None = None
        self.due: dict[tuple[str, str | None], Due] = {}
        self.running: dict[tuple[str, str | None], Future[JobResult]] = {}
        self.executor: Executor | None = None
        #: In cluster mode, whether this node leads the schedule (only the leader queues).
        self.leadership: Leadership | None = None

    # -- the plan -----------------------------------------------------------------

    def reload(self) -> None:
        """Read the config if it changed; keep the times of what did not change."""
        first = self.app is None
        if self.reloading is None:
            app: App | None = open_app(self.config_path)
            self.reloading = ConfigReload(app)
        else:
            try:
                app = self.reloading.changed()
            except Exception as exc:  # a plugin's registration can raise anything
                log.error("the config changed but cannot be used, keeping the old one: %s", exc)
                return
        if app is None:
            return
        self.app = app
        if self.executor is None:
            self.executor = self._executor(app)
        now = self.clock()
        wanted: dict[tuple[str, str | None], Schedule] = {}
        for tenant in app.config.tenants.values():
            if tenant.schedule:
                wanted[("sync", tenant.name)] = Schedule.parse(tenant.schedule, tenant.timezone)
            if tenant.export_schedule:
                wanted[("export", tenant.name)] = Schedule.parse(
                    tenant.export_schedule, tenant.timezone
                )
        notify = app.config.notify
        if notify.digest_at and notify.email is not None:
            wanted[("digest", None)] = Schedule.parse(notify.digest_at, notify.digest_timezone)
        for key, schedule in wanted.items():
            old = self.due.get(key)
            if (
                old is None
                or old.schedule.text != schedule.text
                or old.schedule.zone != schedule.zone
            ):
                self.due[key] = Due(key[0], key[1], schedule, schedule.next_after(now))
                if first and self._missed(key, schedule, now):
                    self.due[key].at = now
        for key in set(self.due) - set(wanted):
            del self.due[key]
        if not first:
            log.info("config re-read: %d scheduled job(s)", len(self.due))

    def _executor(self, app: App) -> Executor:
        """The config's executor; in cluster mode the queue (the digest still runs on this
        node's executor, when it leads), with this node's leadership."""
        if app.config.cluster is None:
            return app.host.executors.get(app.config.executor)(app.config)
        from listferry.cluster.executor import QueueExecutor
        from listferry.cluster.leader import Leadership

        self.leadership = Leadership(app.config.cluster.database)
        here = app.host.executors.get(app.config.executor)(app.config)  # for the digest
        return QueueExecutor(app.config, here)

    def _last_started(self, tenant: Tenant, kind: str) -> str | None:
        """When the tenant's last sync (or export) started, as its records say."""
        if self.app is not None and self.app.config.cluster is not None:
            from listferry.cluster.database import connect

            query = (
                "SELECT max(started_at) FROM listferry_runs WHERE tenant = %s"
                if kind == "sync"
                else "SELECT max(last_export->>'started_at') FROM listferry_stores "
                "WHERE tenant = %s"
            )
            with connect(self.app.config.cluster.database) as conn:
                row = conn.execute(query, (tenant.name,)).fetchone()
            return row[0]
        table = "runs" if kind == "sync" else "exports"
        conn = open_read_only(tenant.database)
        if conn is None:
            return None
        try:
            return conn.execute(f"SELECT max(started_at) FROM {table}").fetchone()[0]
        finally:
            conn.close()

    def _added(self, tenant: Tenant) -> datetime | None:
        """When the tenant was added: in cluster mode when its row was made (a node's
        state folder is made only where `tenant add` ran), else :func:`added_at`."""
        if self.app is None or self.app.config.cluster is None:
            return parse_time(added_at(tenant))
        from listferry.cluster.database import connect

        try:
            with connect(self.app.config.cluster.database) as conn:
                row = conn.execute(
                    "SELECT created_at FROM listferry_tenants WHERE name = %s", (tenant.name,)
                ).fetchone()
        except Exception:  # a database before `cluster init` made the column: not known
            return None
        return row[0] if row else None

    def _missed(self, key: tuple[str, str | None], schedule: Schedule, now: datetime) -> bool:
        """A sync or export that fell due in the last ``CATCH_UP`` while no schedule ran
        (a reboot at 02:00) and did not happen: run it at once."""
        kind, name = key
        if kind == "digest" or self.app is None or name not in self.app.config.tenants:
            return False
        missed = schedule.previous_at_or_before(now, CATCH_UP)
        if missed is None:
            return False
        tenant = self.app.config.tenants[name]
        try:
            last = self._last_started(tenant, kind)
        except (sqlite3.Error, ListferryError):
            return True  # the run itself will say what is wrong with the store
        done = parse_time(last)
        if done is not None and done >= missed:
            return False
        added = self._added(tenant) if done is None else None
        if added is not None and added > missed:
            return False  # a tenant added after that time missed nothing
        log.info("%s: the %s due at %s did not run; it runs now", name, kind, iso(missed))
        return True

    def next_times(self) -> dict[str, dict[str, str]]:
        """``{tenant: {"sync": ISO time, "export": ...}}`` of what is planned."""
        out: dict[str, dict[str, str]] = {}
        for due in self.due.values():
            out.setdefault(due.tenant or "", {})[due.kind] = iso(due.at)
        return out

    # -- the loop -----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Start what is due, sleep until the next thing, until ``stop`` is set."""
        self.reload()
        log.info("schedule: %d job(s); next at %s", len(self.due), self._soonest() or "never")
        try:
            while not stop.is_set():
                self.reload()
                self.start_due(self.clock())
                soonest = self._soonest()
                wait = TICK
                if soonest is not None:
                    wait = max(0.05, min(TICK, (soonest - self.clock()).total_seconds()))
                if self.leadership is not None and not self.leadership.leading:
                    wait = min(wait, LEADER_LOOK)  # a leader that died is replaced soon
                stop.wait(wait)
        finally:
            if self.executor is not None:
                self.executor.shutdown(wait=True)
            if self.leadership is not None:
                self.leadership.release()

    def _soonest(self) -> datetime | None:
        return min((due.at for due in self.due.values()), default=None)

    def start_due(self, now: datetime) -> list[Job]:
        """Submit every job whose time has come; their next times move on. In cluster
        mode only the node that leads submits; the others move their times on alike."""
        assert self.app is not None
        started: list[Job] = []
        if self.leadership is not None and not self.leadership.held():
            for due in self.due.values():
                if due.at <= now:
                    due.at = due.schedule.next_after(now)
            return started
        for key, due in sorted(self.due.items(), key=lambda item: item[1].at):
            if due.at > now:
                continue
            if due.kind == "sync" and self._postpone(due, now):
                continue
            due.at = due.schedule.next_after(now)
            due.postponed = timedelta(0)
            if key in self.running and not self.running[key].done():
                log.warning(
                    "%s: the %s due now is skipped: the last one is still running", key[1], key[0]
                )
                continue
            job = self._job(due)
            future = self.executor.submit(job)
            self.running[key] = future
            future.add_done_callback(lambda f, job=job: self._finished(job, f))
            started.append(job)
        return started

    def _postpone(self, due: Due, now: datetime) -> bool:
        """Give a home that is still receiving files a little longer (at most a minute)."""
        assert self.app is not None
        tenant = self.app.config.tenants.get(due.tenant or "")
        if tenant is None or not tenant.is_local or due.postponed >= MAX_GRACE:
            return False
        grace = timedelta(seconds=self.app.config.server.upload_grace)
        newest = _newest_change(Path(tenant.home))
        if newest is None or now - newest >= grace:
            return False
        wait = grace - (now - newest)
        due.postponed += wait
        due.at = now + wait
        log.info(
            "%s: files are still arriving; the sync waits %.1f s", due.tenant, wait.total_seconds()
        )
        return True

    def _job(self, due: Due) -> Job:
        if due.kind == "digest":
            argv = listferry_argv(self.config_path, "digest", "--send")
        elif due.kind == "export":
            argv = listferry_argv(self.config_path, "export", due.tenant or "", "--json")
        else:
            argv = listferry_argv(self.config_path, "sync", due.tenant or "", "--json")
            tenant = self.app.config.tenants.get(due.tenant or "") if self.app else None
            if tenant is not None:
                timeout = tenant.sync_timeout + KILL_AFTER
                return Job(kind=due.kind, tenant=due.tenant, argv=argv, timeout=timeout)
        return Job(kind=due.kind, tenant=due.tenant, argv=argv)

    def _finished(self, job: Job, future: Future[JobResult]) -> None:
        try:
            result = future.result()
        except Exception as exc:  # the executor itself failed
            result = JobResult(returncode=None, stdout="", stderr=f"{type(exc).__name__}: {exc}")
        if job.kind == "sync":
            self._told_crash(job, result)
        if result.returncode not in (0, 1):
            log.error(
                "%s: scheduled %s ended with %s: %s",
                job.tenant or "-",
                job.kind,
                result.how(),
                result.last_line(),
            )
        else:
            log.info(
                "%s: scheduled %s done (exit %s)", job.tenant or "-", job.kind, result.returncode
            )
        if self.on_result is not None:
            self.on_result(job, result)

    def _told_crash(self, job: Job, result: JobResult) -> None:
        """A sync process that died without its JSON: its tenant's run is ``failed``,
        recorded in its store and told to the ``run_finished`` plugins."""
        if result.returncode in (0, 1):
            try:
                json.loads(result.stdout)
                return
            except ValueError:
                pass
        if self.app is None or job.tenant not in self.app.config.tenants:
            return
        if self.app.config.cluster is not None:
            return  # nothing was queued, so no run began: the line logged says why
        tenant: Tenant = self.app.config.tenants[job.tenant]
        reason = f"the scheduled sync process {result.how()}: {result.last_line()}"
        tell_finished(self.app, tenant, [record_failure(tenant, reason)])


def _newest_change(home: Path) -> datetime | None:
    """The latest modification time among the files at the top of ``home`` (symbolic
    links are not followed)."""
    newest = None
    try:
        with os.scandir(home) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        newest = max(newest or 0.0, entry.stat(follow_symlinks=False).st_mtime)
                except OSError:
                    continue
    except OSError:
        return None
    return datetime.fromtimestamp(newest, UTC) if newest is not None else None
