"""A tenant's turn on this node, for what changes its store outside a sync.

``export`` and ``replay`` hold the same two locks as the tenant's runs (this node's lock
on the local copy, and the tenant's lease on every node), work on the current version
checked out to the local copy, and publish it through the same fence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from listferry.app import App
from listferry.cluster.access import versions_of
from listferry.cluster.database import database_error
from listferry.cluster.lease import TenantLease
from listferry.cluster.stores import Damaged, StoreVersions, node_name
from listferry.cluster.sync import RETRY, job_id
from listferry.config import Tenant
from listferry.errors import ListferryError
from listferry.store.database import Store
from listferry.store.locks import tenant_lock


@dataclass
class Turn:
    """A tenant's turn on this node: its lease held, its current version checked out."""

    tenant: Tenant
    versions: StoreVersions
    lease: TenantLease
    base: int

    def holds(self, what: str) -> None:
        """Raise one :class:`ListferryError` saying ``what`` when the lease went (the
        process was paused, or lost the database, past it): another node may run the
        tenant now."""
        if not self.lease.held():
            raise ListferryError(
                f"{self.tenant.name}: {what}: the lease went "
                f"({self.lease.why or 'the database ended its session'})"
            )

    def publish(self, what: str) -> None:
        """Publish the local copy, with its last export, as the next version; one
        :class:`ListferryError` that says ``what`` was not kept when the lease went or
        the fence refuses."""
        self.holds(f"{what} was not kept")
        with Store(self.tenant.database) as store:
            last = store.last_export()
            self.base = self.versions.publish(
                self.tenant.name,
                store.conn,
                store.path,
                self.base,
                [],
                job_id(),
                exported=dict(last) if last else None,
            )


@contextlib.contextmanager
def tenant_turn(app: App, tenant: Tenant, doing: str, checkout: bool = True) -> Iterator[Turn]:
    """Hold ``tenant``'s locks (this node's and the lease) with its current version
    checked out to its local copy (with ``checkout``; else only its number is read, for
    a restore that replaces it); one clear :class:`ListferryError` when a run of the
    tenant holds them (``doing`` names what waits: "the export")."""
    cluster = app.config.cluster
    assert cluster is not None
    with tenant_lock(tenant) as locked:
        if not locked:  # a worker's job is tried again once it ended
            RETRY.add(tenant.name)
            raise ListferryError(
                f"{tenant.name}: a run of this tenant is in progress on this node; "
                f"{doing} can be tried again when it ends"
            )
        versions = versions_of(app.config)
        lease = TenantLease(cluster.database, tenant.name, cluster.stalled_after, node_name())
        try:
            acquired = lease.acquire()
            base = 0
            if acquired and checkout:
                base = versions.checkout(tenant.name, tenant.database)
            elif acquired:
                pointer = versions.pointer(tenant.name)
                base = pointer.version if pointer else 0
        except Damaged:  # trying again will not help: an operator restores a version
            lease.release()
            raise
        except Exception as exc:  # the cluster did not answer: the job is tried again
            lease.release()
            versions.close()
            RETRY.add(tenant.name)
            if type(exc).__module__.startswith("psycopg"):
                raise database_error(cluster.database, exc) from None
            raise
        if not acquired:
            versions.close()
            RETRY.add(tenant.name)
            raise ListferryError(
                f"{tenant.name}: a run of this tenant is in progress on another node; "
                f"{doing} can be tried again when it ends"
            )
        try:
            yield Turn(tenant, versions, lease, base)
        finally:
            lease.release()
            versions.close()
