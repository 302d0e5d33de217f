"""A tenant's sync in cluster mode: the same run, over a store version and a storage home.

:class:`ClusterSync` is the one-machine :class:`~listferry.sync.run.TenantSync` with
three changes. Its store is the tenant's current version, checked out to local disk.
Each run's archived file goes to storage (``archive/NAME/``) and the store is published
as a new version (the fence) before the file leaves the home, so a worker killed at
any moment leaves either the old version and the file in the home, or the new version
with the run in it. And a run whose store write the fence refuses ends ``failed`` in
the runs index, touches nothing in the home and stops the tenant's other runs.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from listferry.app import App
from listferry.cluster.access import versions_of
from listferry.cluster.lease import TenantLease
from listferry.cluster.storage import Storage
from listferry.cluster.stores import Damaged, Fenced, StoreVersions, node_name
from listferry.config import Tenant
from listferry.errors import ListferryError
from listferry.runs import RunRecord, RunStatus, utcnow
from listferry.store.database import Store, StoreError
from listferry.store.locks import tenant_lock
from listferry.sync.retention import run_of, runs_to_trim, said_trimmed
from listferry.sync.run import Progress, TenantSync, reason_of, store_failure, tell_finished
from listferry.sync.select import Pending
from listferry.transport import Transport

log = logging.getLogger("listferry")


#: Tenants whose runs failed because the cluster's database or storage did not answer:
#: their job is tried again later (``sync --here`` exits
#: :data:`~listferry.cluster.RETRY_EXIT`).
RETRY: set[str] = set()


class Stop(Exception):
    """The tenant's runs stop here: the store cannot be published."""


def storage_of(app: App) -> Storage:
    """The cluster's storage, as ``[storage]`` describes it."""
    settings = app.config.storage
    if settings is None:
        raise ListferryError(f"{app.config.path}: no [storage] table")
    return Storage(settings.url, settings.endpoint_url, settings.region)


def job_id() -> int | None:
    """The queue's job this process runs, if a worker started it."""
    value = os.environ.get("LISTFERRY_JOB_ID", "")
    return int(value) if value.isdigit() else None


class ClusterSync(TenantSync):
    """The runs of one tenant over a checked-out store version (see the module)."""

    def __init__(
        self,
        app: App,
        tenant: Tenant,
        store: Store,
        versions: StoreVersions,
        base: int,
        force: bool = False,
        progress: Progress | None = None,
        lease: TenantLease | None = None,
        replay: tuple[int, Transport, Transport | None] | None = None,
    ) -> None:
        """``replay``: (the run replayed, a transport on the folder its archived file was
        fetched into, the tenant's home for the report)."""
        if replay is None:
            super().__init__(app, tenant, store, app.transport(tenant), force, progress)
        else:
            run_id, folder, home = replay
            super().__init__(app, tenant, store, folder, force, progress, run_id, home)
        self.lease = lease
        self.versions = versions
        self.storage = versions.storage
        self.base = base
        self.job = job_id()
        self.settled: list[RunRecord] = []
        self.published_changes = 0
        self.refusals = 0
        self.swept = False
        #: run id -> the local archived files of the run, to be put in storage
        self.uploads: dict[int, list[Path]] = {}

    # -- where a run's pieces go ---------------------------------------------------------

    def archive_key(self, name: str) -> str:
        return f"archive/{self.tenant.name}/{name}"

    def archive_local(
        self, run: RunRecord, pending: Pending, local: Path, moved: list[tuple[Path, Path]]
    ) -> str:
        """Archive on local disk as on one machine; the run's archive is where the file
        will be in storage once the run is published."""
        target = Path(super().archive_local(run, pending, local, moved))
        prefix = target.name.split("-", 2)
        self.uploads[run.run_id or 0] = sorted(self.archive.glob(f"{prefix[0]}-{prefix[1]}-*"))
        return self.storage.url_of(self.archive_key(target.name))

    def looked_at(self) -> None:
        """Not kept in the store: a look that changes nothing publishes no new version."""

    # -- making a run last ---------------------------------------------------------------

    def settle(self, run: RunRecord, taken: Pending | None) -> bool:
        """Record the run, put its archived file in storage, publish the store, and only
        then take the file out of the home."""
        self.record(run)
        try:
            paths = self.uploads.pop(run.run_id or 0, [])
            keys = [self.archive_key(path.name) for path in paths]
            if keys:
                self.versions.will_put(self.tenant.name, keys, self.base)
            for path, key in zip(paths, keys, strict=True):
                self.storage.write(path, key)
            self.publish([run], keys)
        except (ListferryError, OSError, sqlite3.Error) as exc:
            self.refused(run, exc)
            raise Stop from None
        for path in self.archive.glob(f"{run.run_id or 0:06d}-*"):
            path.unlink(missing_ok=True)  # kept in storage now
        if taken is not None:
            self.remove_from_home(taken)
        return True

    def publish(self, runs: list[RunRecord], archived: Sequence[str] = ()) -> None:
        """Publish the store as the next version, with ``runs`` in the runs index; not
        when the run's lease went (it was paused, or lost the database, for too long)."""
        if self.lease is not None and not self.lease.held():
            raise ListferryError(
                f"the run lost its lease, held while it answers at least every "
                f"{self.lease.seconds:g} s ({self.lease.why}); nothing of it was kept"
            )
        base = self.base
        self.base = self.versions.publish(
            self.tenant.name,
            self.store.conn,
            self.store.path,
            base,
            runs,
            self.job,
            archived=list(archived),
        )
        self.published_changes = self.store.conn.total_changes
        self.settled.extend(runs)
        if not self.swept:
            self.swept = True
            self.sweep_archive(base)

    def all_published(self) -> bool:
        """Whether the local copy is the version published last: no run was refused
        (its changes stay in the copy, never published), nothing changed since."""
        if self.store.conn.total_changes == self.published_changes and not self.refusals:
            return True
        log.warning(
            "%s: no return file after the sync: a run could not be published", self.tenant.name
        )
        return False

    def refused(self, run: RunRecord, exc: BaseException) -> None:
        """The run could not be published: it ends ``failed`` (indexed as such when the
        database answers), and nothing of it is kept."""
        self.refusals += 1
        if isinstance(exc, sqlite3.Error):
            reason = store_failure(self.store.path, exc)
        elif isinstance(exc, Fenced):
            reason = str(exc)
        else:
            RETRY.add(self.tenant.name)
            reason = f"the run could not be saved to the cluster: {reason_of(exc)}"
        for name in ("added", "updated", "removed", "unsubscribed", "unchanged", "ignored"):
            setattr(run, name, 0)
        run.archive = None
        run.end(RunStatus.FAILED, reason)
        log.error("%s: run %s failed: %s", self.tenant.name, run.run_id, reason)
        try:
            self.versions.index_refused(self.tenant.name, [run], self.job)
        except ListferryError as index_exc:
            log.error("%s: the failed run could not be indexed: %s", self.tenant.name, index_exc)
        self.settled.append(run)

    # -- the tenant's runs ---------------------------------------------------------------

    def run_all(self) -> list[RunRecord]:
        """The runs as on one machine; what changed the store besides them (an attempt
        that could not list the home, a list waiting for its count file) is published
        at the end. A run that cannot be published ends the tenant's runs."""
        try:
            runs = super().run_all()
        except Stop:
            return self.settled
        if self.store.conn.total_changes != self.published_changes:
            unindexed = [r for r in runs if r.run_id is not None and r not in self.settled]
            try:
                self.publish(unindexed)
            except (ListferryError, OSError, sqlite3.Error) as exc:
                for run in unindexed:
                    self.refused(run, exc)
        if any(run.archive for run in self.settled):
            self.trim_archive()
        idle = [run for run in runs if run.status == RunStatus.IDLE]
        if idle:  # the job's answer, for ``sync --wait``: no store holds it
            try:
                self.versions.index_apart(self.tenant.name, idle, self.base or None, self.job)
            except ListferryError as exc:
                log.warning("%s: the idle run could not be indexed: %s", self.tenant.name, exc)
        return runs

    def trim_archive(self) -> None:
        """The tenant's archive in storage kept to ``archive_keep_runs`` and
        ``archive_keep_days``, as on one machine, after runs that archived a file; a
        fault here is one log line."""
        if not self.tenant.archive_keep_runs and not self.tenant.archive_keep_days:
            return
        folder = f"archive/{self.tenant.name}"
        try:
            keys: dict[int, list[str]] = {}
            written: dict[int, float] = {}
            for item in self.storage.list(folder):
                run_id = run_of(item.key.rsplit("/", 1)[-1])
                if run_id is not None:
                    keys.setdefault(run_id, []).append(item.key)
                    written[run_id] = max(written.get(run_id, 0.0), item.mtime)
            trimmed = runs_to_trim(self.tenant, self.store, written)
            gone = [key for run_id in trimmed for key in keys[run_id]]
            if gone:
                self.storage.delete_many(gone)
        except (ListferryError, OSError) as exc:
            log.warning("%s: the archive in storage was not trimmed: %s", self.tenant.name, exc)
            return
        said_trimmed(self.tenant, len(gone), trimmed)

    def sweep_archive(self, base: int) -> None:
        """After this run's first publish: remove the archived files that runs from
        ``base`` or before put in storage and never published. A failure here is one
        log line: the run stands as published."""
        try:
            removed = self.versions.sweep(self.tenant.name, base)
        except (ListferryError, OSError) as exc:
            log.warning("%s: archived files of unfinished runs stay: %s", self.tenant.name, exc)
            return
        if removed:
            log.info("%s: removed %d archived files of unfinished runs", self.tenant.name, removed)


def failed(tenant: Tenant, reason: str, versions: StoreVersions | None) -> list[RunRecord]:
    """The one ``failed`` run of a sync that could not start its runs, indexed when the
    database answers; a cluster that did not answer makes the job try again later."""
    log.error("%s: failed: %s", tenant.name, reason)
    run = RunRecord(tenant.name, status=RunStatus.FAILED, finished_at=utcnow(), reason=reason)
    try:
        if versions is None:
            raise ListferryError("the cluster's database or storage is not reachable")
        versions.index_refused(tenant.name, [run], job_id())
    except ListferryError as exc:
        RETRY.add(tenant.name)
        log.error("%s: the failed run could not be indexed: %s", tenant.name, exc)
    return [run]


def sync_in_cluster(
    app: App, tenant: Tenant, force: bool = False, progress: Progress | None = None
) -> list[RunRecord]:
    """Run every pending list file of ``tenant`` over its current store version; what
    :func:`~listferry.sync.run.sync_tenant` is on one machine."""
    cluster = app.config.cluster
    assert cluster is not None
    with tenant_lock(tenant) as locked:
        if not locked:  # an export, replay or restore here: the job is tried again
            run = RunRecord(tenant.name, status=RunStatus.SKIPPED, finished_at=utcnow())
            run.reason = "another run of this tenant is in progress on this node"
            RETRY.add(tenant.name)
            try:
                with versions_of(app.config) as index:
                    index.index_apart(tenant.name, [run], None, job_id())
            except ListferryError as exc:
                log.warning("%s: the skipped run could not be indexed: %s", tenant.name, exc)
            return [run]
        versions: StoreVersions | None = None
        lease: TenantLease | None = None
        try:
            versions = versions_of(app.config)
            lease = TenantLease(cluster.database, tenant.name, cluster.stalled_after, node_name())
            if not lease.acquire():
                lease = None
                run = RunRecord(tenant.name, status=RunStatus.SKIPPED, finished_at=utcnow())
                run.reason = "another run of this tenant is in progress on another node"
                RETRY.add(tenant.name)  # the job is tried again once that one ended
                versions.index_apart(tenant.name, [run], None, job_id())
                versions.close()
                tell_finished(app, tenant, [run])
                return [run]
            try:
                base = versions.checkout(tenant.name, tenant.database)
                with Store(tenant.database) as store:
                    sync = ClusterSync(
                        app, tenant, store, versions, base, force, progress, lease=lease
                    )
                    try:
                        runs = sync.run_all()
                    finally:
                        sync.transport.close()
                    applied = any(r.status == RunStatus.APPLIED for r in runs)
                    export = tenant.export_after_sync and applied and sync.all_published()
                if export:
                    from listferry.cluster.exporting import Turn, export_after_runs

                    export_after_runs(app, Turn(tenant, versions, lease, sync.base))
            except (StoreError, Damaged) as exc:  # not the cluster's absence: not retried
                runs = failed(tenant, str(exc), versions)
            except sqlite3.Error as exc:
                runs = failed(tenant, store_failure(tenant.database, exc), versions)
            finally:
                versions.close()
                lease.release()
        except (ListferryError, OSError) as exc:  # the database or storage did not answer
            RETRY.add(tenant.name)
            runs = failed(tenant, reason_of(exc), versions)
    tell_finished(app, tenant, runs)
    return runs
