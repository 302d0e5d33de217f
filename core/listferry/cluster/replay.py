"""``listferry replay`` in cluster mode: a run's archived file, from storage, as a new run.

As on one machine (:mod:`listferry.sync.replay`), the archived copy and its count file
go through the whole pipeline again, recorded as a new run that says which run it
replays; here the copy is fetched from ``archive/NAME/`` in storage into the tenant's
work folder, and the run is a :class:`~listferry.cluster.sync.ClusterSync` in the
tenant's turn: archived again, published through the fence, reported to the home.
"""

from __future__ import annotations

import shutil
from dataclasses import replace

from listferry.app import App
from listferry.cluster.sync import ClusterSync
from listferry.cluster.turn import tenant_turn
from listferry.config import Tenant
from listferry.errors import ListferryError
from listferry.names import find_count
from listferry.runs import RunRecord
from listferry.store.database import Store
from listferry.sync.replay import archived_run, report_home
from listferry.sync.run import tell_finished
from listferry.transport import Endpoint, open_transport


def replay_in_cluster(app: App, tenant: Tenant, run_id: int, force: bool = False) -> RunRecord:
    """Apply the file that run ``run_id`` archived once more, as a new run (see the
    module); one :class:`ListferryError` when there is no such run or file."""
    with tenant_turn(app, tenant, "the replay") as turn:
        storage = turn.versions.storage
        with Store(tenant.database) as store:
            old = archived_run(store, tenant, run_id)
            assert old.archive is not None and old.file is not None
            name = old.archive.rstrip("/").rsplit("/", 1)[-1]
            prefix = name[: len(name) - len(old.file)]
            folder_key = f"archive/{tenant.name}"
            beside = [
                item.key.rsplit("/", 1)[-1]
                for item in storage.list(folder_key)
                if item.key.rsplit("/", 1)[-1].startswith(prefix)
            ]
            if name not in beside:
                raise ListferryError(
                    f"run {run_id} of {tenant.name} has no archived file to replay: "
                    f"{storage.url_of(f'{folder_key}/{name}')} is not in storage any more"
                )
            folder = tenant.state_dir / "replay"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, mode=0o700)
            try:
                storage.get(f"{folder_key}/{name}", folder / old.file)
                count = find_count(old.file, [entry[len(prefix) :] for entry in beside])
                if count is not None:
                    storage.get(f"{folder_key}/{prefix}{count}", folder / count)
                again = replace(
                    tenant, home=str(folder), pattern="*", settle_seconds=0, stable_seconds=0
                )
                files = open_transport(app.host.transports, Endpoint(str(folder)))
                home = report_home(app, tenant)  # the new report goes to the customer
                sync = ClusterSync(
                    app,
                    again,
                    store,
                    turn.versions,
                    turn.base,
                    force,
                    lease=turn.lease,
                    replay=(run_id, files, home),
                )
                try:
                    runs = sync.run_all()
                finally:
                    files.close()
                    if home is not None:
                        home.close()
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    tell_finished(app, tenant, runs)
    return runs[-1]
