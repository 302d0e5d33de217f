"""A tenant's night: its sync, then its return file when it asks for one after a sync.

``listferry sync`` (and so the schedule's jobs and the on-upload syncs, which run it),
the demo and the test kit run a tenant through :func:`sync_and_export`: the sync stage
knows nothing of return files, nor the export of syncs.
"""

from __future__ import annotations

import logging

from listferry.app import App
from listferry.config import Tenant
from listferry.export.run import export_after_sync
from listferry.runs import RunRecord, RunStatus
from listferry.sync.run import Progress, sync_tenant

log = logging.getLogger("listferry")


def sync_and_export(
    app: App, tenant: Tenant, force: bool = False, progress: Progress | None = None
) -> list[RunRecord]:
    """The tenant's runs (:func:`~listferry.sync.run.sync_tenant`), and with
    ``export_after_sync`` the return file after an applied one; an export that fails is
    one log line and the runs stand as they ended."""
    if app.config.cluster is not None:
        from listferry.cluster.sync import sync_in_cluster

        return sync_in_cluster(app, tenant, force, progress)  # exports in its turn
    runs = sync_tenant(app, tenant, force, progress)
    if tenant.export_after_sync and any(run.status == RunStatus.APPLIED for run in runs):
        export_after_sync(app, tenant)
    return runs
