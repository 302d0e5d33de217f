"""A tenant's return file in cluster mode: made over its current store version.

The export is the one-machine :func:`~listferry.export.run.export_tenant`, run on the
node that asks for it under the same two locks as the tenant's runs: this node's lock
on the local copy, and the tenant's lease on every node. It checks out the current
version, renders and delivers the return file (by default to ``outbox/`` of the
tenant's home in storage), and publishes the store with the export recorded in it,
through the same fence as a run. So two exports never send the same changes twice, and
an export never overlaps a run that would move the store under it.

A publish that fails after the delivery (the database went away, the lease was lost)
leaves the file delivered but unrecorded: the next return file repeats its changes,
which the CRM's import takes twice without harm. Nothing is ever recorded that was not
delivered.
"""

from __future__ import annotations

import logging
import os

from listferry.app import App
from listferry.cluster.sync import RETRY
from listferry.cluster.turn import Turn, tenant_turn
from listferry.config import Tenant
from listferry.errors import ListferryError
from listferry.export.run import ExportResult, _export

log = logging.getLogger("listferry")


def export_in_cluster(app: App, tenant: Tenant, to: str | None = None) -> ExportResult:
    """Make and deliver ``tenant``'s return file over its current store version, and
    publish the store with the export recorded (see the module)."""
    with tenant_turn(app, tenant, "the export") as turn:
        return export_over(app, turn, to)


def export_over(app: App, turn: Turn, to: str | None = None) -> ExportResult:
    """The export on the checked-out copy of ``turn``, then its publish."""
    delivering: list[bool] = []

    def ready() -> None:
        delivering.append(True)
        turn.holds("nothing was delivered")

    try:
        result = _export(app, turn.tenant, to, ready=ready)
    except (ListferryError, OSError):
        if delivering:  # the target, or the lease, was not there: a job tries again later
            RETRY.add(turn.tenant.name)
        raise
    try:
        turn.publish("the return file's record")
    except (ListferryError, OSError) as exc:
        raise ListferryError(
            f"{turn.tenant.name}: {result.file} was delivered to {result.target} but could "
            f"not be recorded ({exc}); the next return file repeats its changes"
        ) from None
    return result


def export_after_runs(app: App, turn: Turn) -> ExportResult | None:
    """``export_after_sync`` in cluster mode, in the sync's own turn; a failure is one
    log line, and the runs stand as they ended."""
    try:
        result = export_over(app, turn)
    except (ListferryError, OSError) as exc:
        RETRY.discard(turn.tenant.name)  # the sync's job is done: trying it again makes none
        log.error(
            "%s: the return file after the sync was not written: %s",
            turn.tenant.name,
            exc,
            exc_info=bool(os.environ.get("LISTFERRY_DEBUG")),
        )
        return None
    log.info(
        "%s: return file %s, %d records, delivered to %s",
        turn.tenant.name,
        result.file,
        result.records,
        result.target,
    )
    return result
