"""A tenant's runs as the cluster's runs index holds them: any node answers ``runs``.

Every run a worker published is indexed with the store version that holds it; a run
whose store write the fence refused, or that ended before it reached its store, is
indexed with none. Idle looks are indexed for ``sync --wait`` only, not shown here (as
on one machine, where they are not recorded).
"""

from __future__ import annotations

from typing import Any

from listferry.runs import RunRecord, RunStatus


def from_index(record: dict[str, Any]) -> RunRecord:
    """A run of the index, as a :class:`RunRecord`."""
    return RunRecord(**record)


def tenant_runs(conn: Any, tenant: str, limit: int | None = None) -> list[RunRecord]:
    """``tenant``'s runs, newest first (at most ``limit``)."""
    rows = conn.execute(
        "SELECT record FROM listferry_runs WHERE tenant = %s AND status <> %s "
        "ORDER BY id DESC LIMIT %s",
        (tenant, str(RunStatus.IDLE), limit),
    ).fetchall()
    return [from_index(record) for (record,) in rows]


def tenant_run(conn: Any, tenant: str, run_id: int) -> RunRecord | None:
    """The run ``run_id`` of ``tenant``: the one a store version holds, else the last
    attempt that had that number (a run the fence refused)."""
    row = conn.execute(
        "SELECT record FROM listferry_runs WHERE tenant = %s AND run_id = %s "
        "ORDER BY store_version IS NULL, id DESC LIMIT 1",
        (tenant, run_id),
    ).fetchone()
    return from_index(row[0]) if row else None
