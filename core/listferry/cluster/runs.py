"""A tenant's runs as the cluster's runs index holds them: any node answers ``runs``.

Every run a worker published is indexed with the store version that holds it; a run
whose store write the fence refused, or that ended before it reached its store, is
indexed with none. Idle looks are indexed for ``sync --wait`` only, not shown here (as
on one machine, where they are not recorded).
"""

from __future__ import annotations

from typing import Any

from listferry.runs import RunRecord, RunStatus


def from_index(record: dict[str, Any], undone_by: int | None = None) -> RunRecord:
    """A run of the index, as a :class:`RunRecord`; one a restore undid says so."""
    run = RunRecord(**record)
    if undone_by is not None:
        run.hint = (
            f"undone: the tenant's store was restored to an earlier version (version "
            f"{undone_by}); its run numbers go on from there"
        )
    return run


def tenant_runs(
    conn: Any, tenant: str, limit: int | None = None, undone: bool = True, offset: int = 0
) -> list[RunRecord]:
    """``tenant``'s runs, newest first (at most ``limit``, after the ``offset`` newest);
    without ``undone``, not those a restore undid (what the tenant's store holds, for
    ``status``)."""
    rows = conn.execute(
        "SELECT record, undone_by FROM listferry_runs WHERE tenant = %s AND status <> %s "
        "AND (%s OR undone_by IS NULL) ORDER BY id DESC LIMIT %s OFFSET %s",
        (tenant, str(RunStatus.IDLE), undone, limit, offset),
    ).fetchall()
    return [from_index(record, undone_by) for record, undone_by in rows]


def tenant_run(conn: Any, tenant: str, run_id: int) -> RunRecord | None:
    """The run ``run_id`` of ``tenant``: the one the store holds, else one a restore
    undid, else the last attempt that had that number (a run the fence refused)."""
    row = conn.execute(
        "SELECT record, undone_by FROM listferry_runs WHERE tenant = %s AND run_id = %s "
        "ORDER BY undone_by IS NOT NULL, store_version IS NULL, id DESC LIMIT 1",
        (tenant, run_id),
    ).fetchone()
    return from_index(*row) if row else None
