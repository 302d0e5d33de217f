"""A tenant's run history, as ``listferry runs`` and the console show it.

On one machine it is read from the tenant's store, read-only (a tenant that never ran
has no runs, and looking does not make it a store); in cluster mode from the runs index
in the cluster's database, which answers on any node.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

from listferry.config import Config, Tenant
from listferry.ops.status import open_read_only
from listferry.runs import RunRecord
from listferry.store.database import (
    checked_since_change,
    quick_check,
    read_run,
    read_runs,
    store_error,
)

T = TypeVar("T")


def run_history(
    config: Config, tenant: Tenant, limit: int | None = 20, offset: int = 0
) -> list[RunRecord]:
    """``tenant``'s runs, newest first: at most ``limit``, after the ``offset`` newest."""
    if config.cluster is not None:
        from listferry.cluster.database import connect
        from listferry.cluster.runs import tenant_runs

        with connect(config.cluster.database) as conn:
            return tenant_runs(conn, tenant.name, limit, offset=offset)
    return _from_store(tenant, lambda conn: read_runs(conn, tenant.name, limit, offset)) or []


def one_run(config: Config, tenant: Tenant, run_id: int) -> RunRecord | None:
    """Run ``run_id`` of ``tenant`` with its report, or ``None``."""
    if config.cluster is not None:
        from listferry.cluster.database import connect
        from listferry.cluster.runs import tenant_run

        with connect(config.cluster.database) as conn:
            return tenant_run(conn, tenant.name, run_id)
    return _from_store(tenant, lambda conn: read_run(conn, tenant.name, run_id))


def _from_store(tenant: Tenant, read: Callable[[sqlite3.Connection], T]) -> T | None:
    """What ``read`` finds in the tenant's store, opened read-only; ``None`` without one."""
    try:
        conn = open_read_only(tenant.database)
    except sqlite3.Error as exc:
        raise store_error(tenant.database, exc, "cannot be read") from None
    if conn is None:
        return None
    try:
        if not checked_since_change(tenant.database):  # changed by no run of ours
            quick_check(conn, tenant.database)
        return read(conn)
    except sqlite3.Error as exc:
        raise store_error(tenant.database, exc, "cannot be read") from None
    finally:
        conn.close()
