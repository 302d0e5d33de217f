"""``listferry replay``: a run's archived file through the whole sync again, as a new run."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

from listferry.app import App
from listferry.config import Tenant
from listferry.errors import ListferryError
from listferry.names import find_count
from listferry.runs import RunRecord, RunStatus
from listferry.store.database import Store
from listferry.store.locks import tenant_lock
from listferry.sync.retention import trim_archive
from listferry.sync.run import TenantSync, reason_of, tell_finished
from listferry.times import utcnow
from listferry.transport import Endpoint, Transport, open_transport

log = logging.getLogger("listferry")


def report_home(app: App, tenant: Tenant) -> Transport | None:
    """The tenant's home, for a replay's report; ``None`` (logged) when it cannot be had."""
    try:
        return app.transport(tenant)
    except (ListferryError, OSError) as exc:
        log.warning(
            "%s: the result report stays in the run record: %s", tenant.name, reason_of(exc)
        )
        return None


def archived_run(store: Store, tenant: Tenant, run_id: int) -> RunRecord:
    """Run ``run_id`` of ``tenant``, which archived a file; one clear error when there is
    no such run, or it ended before its file was archived."""
    old = next((r for r in store.runs(tenant.name) if r.run_id == run_id), None)
    if old is None:
        raise ListferryError(f"{tenant.name} has no run {run_id}")
    if not old.archive or not old.file:
        raise ListferryError(
            f"run {run_id} of {tenant.name} has no archived file to replay "
            f"(it ended {old.status} before its file was archived)"
        )
    return old


def replay_run(app: App, tenant: Tenant, run_id: int, force: bool = False) -> RunRecord:
    """Apply the file that run ``run_id`` archived once more, as a new run.

    For after a fix (a dialect corrected, a check relaxed, a bad file applied in error
    and then a later one): the archived copy (and its count file) goes through the whole
    pipeline again, under the tenant's lock, and is archived again under the new run.
    The repeat rule does not hold it back; every other check does. Its file becomes the
    tenant's last applied one, and its result report goes to the tenant's home.
    """
    with tenant_lock(tenant) as locked:
        if not locked:
            run = RunRecord(
                tenant.name, status=RunStatus.SKIPPED, finished_at=utcnow(), replay_of=run_id
            )
            run.reason = "another run of this tenant is in progress"
            runs = [run]
        else:
            with Store(tenant.database) as store:
                old = archived_run(store, tenant, run_id)
                archived = Path(old.archive or "")
                if not archived.is_file():
                    raise ListferryError(
                        f"run {run_id} of {tenant.name} has no archived file to replay: it was "
                        f"trimmed from the archive (archive_keep_runs = "
                        f"{tenant.archive_keep_runs}, archive_keep_days = "
                        f"{tenant.archive_keep_days})"
                    )
                folder = tenant.state_dir / "replay"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True, mode=0o700)
                try:
                    shutil.copyfile(archived, folder / old.file)
                    prefix = archived.name[: len(archived.name) - len(old.file)]
                    beside = [
                        e.name[len(prefix) :]
                        for e in os.scandir(archived.parent)
                        if e.name.startswith(prefix)
                    ]
                    count = find_count(old.file, beside)
                    if count is not None:
                        shutil.copyfile(archived.with_name(prefix + count), folder / count)
                    again = replace(
                        tenant, home=str(folder), pattern="*", settle_seconds=0, stable_seconds=0
                    )
                    transport = open_transport(app.host.transports, Endpoint(str(folder)))
                    home = report_home(app, tenant)  # the new report goes to the customer
                    try:
                        sync = TenantSync(
                            app, again, store, transport, force, replay_of=run_id, reports=home
                        )
                        runs = sync.run_all()
                    finally:
                        if home is not None:
                            home.close()
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
                trim_archive(tenant, store)
    tell_finished(app, tenant, runs)
    return runs[-1]
