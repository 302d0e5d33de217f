"""Changing the tenants every node shares: one transaction per change, on a locked row.

``tenant add/set/remove`` and the credential rotations decide what a tenant's settings
become (:mod:`listferry.ops.tenants`); here that happens on its row of
``listferry_tenants``, read ``FOR UPDATE``, so a change made at the same time on another
node waits for this one and is made over it: two changes of different keys both stay.
The new settings are checked whole, as the config file's would be, before the row is
written; a refused change leaves the row as it was. Each change takes a new number from
``listferry_tenant_changes``, which every long-running node polls
(:class:`listferry.config.shared.TenantChanges`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from listferry.app import App, tenant_problem
from listferry.cluster.stores import node_name
from listferry.config import Config, Tenant
from listferry.config.shared import connect, database_error, problem_line, tenant_of_row
from listferry.errors import ConfigError, ListferryError

#: What a change does to a tenant's settings: the row's settings (``None``: no row) in,
#: the new settings (``None``: remove the row) out; it may raise to refuse.
Change = Callable[[dict[str, Any] | None], dict[str, Any] | None]


def checked_tenant(app: App, name: str, settings: dict[str, Any]) -> Tenant:
    """The tenant ``settings`` make, checked as on load (keys, values, and the names the
    plugins must have); refused as one line naming the key."""
    try:
        tenant = tenant_of_row(app.config, name, settings)
    except ConfigError as exc:
        raise ConfigError(_left_as_it_was(name, str(exc))) from None
    problem = tenant_problem(app.host, tenant)
    if problem:
        raise ConfigError(_left_as_it_was(name, problem_line(name, *problem)))
    return tenant


def _left_as_it_was(name: str, line: str) -> str:
    said = f"database tenant {name}:"
    if line.startswith(said):
        return f"database tenant {name} is left as it was:{line[len(said) :]}"
    return f"database tenant {name} is left as it was: {line}"


def own_settings(config: Config, name: str) -> dict[str, Any]:
    """The keys tenant ``name``'s row sets (its ``[tenants.NAME]`` as it would be)."""
    url = _url(config)
    with connect(url) as conn:
        try:
            row = conn.execute(
                "SELECT settings FROM listferry_tenants WHERE name = %s", (name,)
            ).fetchone()
        except Exception as exc:
            raise database_error(url, exc) from None
    return dict(row[0]) if row else {}


def _url(config: Config) -> str:
    assert config.cluster is not None
    return config.cluster.database


def change_tenant(
    app: App, name: str, change: Change, then: Callable[[Any], None] | None = None
) -> tuple[Config, bool]:
    """Apply ``change`` to tenant ``name``'s row in one transaction, the row locked
    meanwhile, and ``then(conn)`` in that transaction when the row changed; return the
    config with the tenant as it is now, and whether it changed."""
    config = app.config
    url = _url(config)
    with connect(url) as conn:
        try:
            with conn.transaction():
                row = conn.execute(
                    "SELECT settings FROM listferry_tenants WHERE name = %s FOR UPDATE", (name,)
                ).fetchone()
                old = dict(row[0]) if row else None
                new = change(None if old is None else dict(old))
                if new == old:
                    return config, False
                tenant = None if new is None else checked_tenant(app, name, new)
                _write(conn, name, old, new)
                if then is not None:
                    then(conn)
        except ListferryError:
            raise
        except Exception as exc:
            import psycopg

            if not isinstance(exc, psycopg.Error):
                raise
            raise database_error(url, exc) from None
    tenants = {k: v for k, v in config.tenants.items() if k != name}
    if tenant is not None:
        tenants[name] = tenant
    problems = {k: v for k, v in config.tenant_problems.items() if k != name}
    return replace(config, tenants=tenants, tenant_problems=problems), True


def _write(conn: Any, name: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
    if new is None:
        conn.execute("DELETE FROM listferry_tenants WHERE name = %s", (name,))
    elif old is None:
        added = conn.execute(
            "INSERT INTO listferry_tenants (name, settings, updated_by) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO NOTHING",
            (name, json.dumps(new), node_name()),
        )
        if added.rowcount != 1:
            raise ListferryError(f"tenant {name!r} exists already")
    else:
        conn.execute(
            "UPDATE listferry_tenants SET settings = %s, "
            "version = nextval('listferry_tenant_changes'), updated_at = now(), "
            "updated_by = %s WHERE name = %s",
            (json.dumps(new), node_name(), name),
        )


def running_job(config: Config, name: str) -> int | None:
    """The id of a job of tenant ``name`` a worker is running now, if any."""
    from listferry.cluster.queue import lock_of

    url = _url(config)
    with connect(url) as conn:
        try:
            if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None:
                return None
            row = conn.execute(
                "SELECT id FROM procrastinate_jobs WHERE lock = %s AND status = 'doing' LIMIT 1",
                (lock_of(name),),
            ).fetchone()
        except Exception as exc:
            raise database_error(url, exc) from None
    return row[0] if row else None


def forget_store(conn: Any, name: str, purge: bool) -> str | None:
    """Take tenant ``name``'s store pointer out of the database (and, with ``purge``, its
    runs index), in the transaction open on ``conn``; return the key of the last store
    version, which stays in storage. Refused while a run of the tenant holds its lease
    (the check holds the lease's lock until the transaction ends, so none starts meanwhile).
    """
    from listferry.cluster.lease import lock_key

    (free,) = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (lock_key(name),)).fetchone()
    if not free:
        raise ListferryError(f"{name} has a run in progress; try again when it ends")
    row = conn.execute(
        "DELETE FROM listferry_stores WHERE tenant = %s RETURNING key", (name,)
    ).fetchone()
    conn.execute("DELETE FROM listferry_store_versions WHERE tenant = %s", (name,))
    if purge:
        conn.execute("DELETE FROM listferry_runs WHERE tenant = %s", (name,))
    return row[0] if row else None
