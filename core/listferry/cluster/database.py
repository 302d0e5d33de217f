"""The cluster's PostgreSQL database: our tables beside Procrastinate's.

``listferry_stores`` points at each tenant's current store version (the fence: a new
version is taken only over the one its run started from); ``listferry_runs`` indexes
every run of every tenant, with the store version that holds it (``NULL`` for a run
whose store write the fence refused), so any node can answer ``runs`` and ``status``
without a store; ``listferry_tenants`` holds the tenants every node shares, each change
numbered from ``listferry_tenant_changes`` (:mod:`listferry.config.shared`);
``listferry_login_failures`` and ``listferry_login_blocks`` are the serve nodes' shared
login defence (:mod:`listferry.cluster.logins`).
"""

from __future__ import annotations

from typing import Any

from listferry.config.shared import connect, database_error, shown

__all__ = ["SCHEMA", "connect", "create_schema", "database_error", "shown"]

#: Our tables, made by ``listferry cluster init``; each statement is safe to run twice.
SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS listferry_stores (
        tenant text PRIMARY KEY,
        version bigint NOT NULL CHECK (version > 0),
        key text NOT NULL,
        size bigint NOT NULL,
        sha256 text NOT NULL,
        written_at timestamptz NOT NULL DEFAULT now(),
        written_by text NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS listferry_runs (
        id bigserial PRIMARY KEY,
        tenant text NOT NULL,
        run_id bigint,
        store_version bigint,
        job_id bigint,
        node text NOT NULL,
        status text NOT NULL,
        file text,
        sha256 text,
        reason text,
        started_at text,
        finished_at text,
        record jsonb NOT NULL
    )
    """,
    # what status shows of a store without it: counted as each version is published
    "ALTER TABLE listferry_stores ADD COLUMN IF NOT EXISTS subscribers bigint",
    "ALTER TABLE listferry_stores ADD COLUMN IF NOT EXISTS unsubscribed bigint",
    "CREATE INDEX IF NOT EXISTS listferry_runs_by_tenant ON listferry_runs (tenant, id)",
    # which attempt of its job made a run (0 the first): `sync --wait` tells the retried
    "ALTER TABLE listferry_runs ADD COLUMN IF NOT EXISTS attempt integer",
    # the store version that undid the run (a restore to a version before it)
    "ALTER TABLE listferry_runs ADD COLUMN IF NOT EXISTS undone_by bigint",
    # the last return file the version holds (its ``exports`` row): the schedule's catch-up
    "ALTER TABLE listferry_stores ADD COLUMN IF NOT EXISTS last_export jsonb",
    # archived files put in storage by runs not yet published (the store version they
    # started from): what the next publish of the tenant may remove if no run holds it
    """
    CREATE TABLE IF NOT EXISTS listferry_archive_puts (
        tenant text NOT NULL,
        key text NOT NULL,
        base bigint NOT NULL,
        PRIMARY KEY (tenant, key)
    )
    """,
    "CREATE INDEX IF NOT EXISTS listferry_runs_by_job ON listferry_runs (job_id)",
    "CREATE SEQUENCE IF NOT EXISTS listferry_tenant_changes",
    """
    CREATE TABLE IF NOT EXISTS listferry_tenants (
        name text PRIMARY KEY,
        settings jsonb NOT NULL,
        version bigint NOT NULL DEFAULT nextval('listferry_tenant_changes'),
        updated_at timestamptz NOT NULL DEFAULT now(),
        updated_by text
    )
    """,
    """
    ALTER TABLE listferry_tenants
        ADD COLUMN IF NOT EXISTS version bigint NOT NULL
            DEFAULT nextval('listferry_tenant_changes'),
        ADD COLUMN IF NOT EXISTS updated_by text
    """,
    # every store version kept in storage, for `cluster restore` and the trimming of old
    # ones ([storage] keep_versions); the current ones of a cluster made before it first
    """
    CREATE TABLE IF NOT EXISTS listferry_store_versions (
        tenant text NOT NULL,
        version bigint NOT NULL,
        key text NOT NULL,
        size bigint NOT NULL,
        sha256 text NOT NULL,
        written_at timestamptz NOT NULL DEFAULT now(),
        written_by text NOT NULL,
        restored_from bigint,
        PRIMARY KEY (tenant, version)
    )
    """,
    """
    INSERT INTO listferry_store_versions (tenant, version, key, size, sha256, written_at,
        written_by)
    SELECT tenant, version, key, size, sha256, written_at, written_by FROM listferry_stores
    ON CONFLICT (tenant, version) DO NOTHING
    """,
    # when each tenant was added: the schedule's catch-up runs nothing added since
    "ALTER TABLE listferry_tenants "
    "ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now()",
    # the login defence every serve node shares (listferry.cluster.logins): failed logins
    # (seconds since the epoch) and the sources blocked after them
    """
    CREATE TABLE IF NOT EXISTS listferry_login_failures (
        source text NOT NULL,
        account text NOT NULL,
        at double precision NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS listferry_login_failures_by_source "
    "ON listferry_login_failures (source, at)",
    "CREATE INDEX IF NOT EXISTS listferry_login_failures_by_account "
    "ON listferry_login_failures (account, at)",
    """
    CREATE TABLE IF NOT EXISTS listferry_login_blocks (
        source text PRIMARY KEY,
        until double precision NOT NULL,
        failures integer NOT NULL,
        accounts jsonb NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS listferry_login_blocks_by_until ON listferry_login_blocks (until)",
)


def create_schema(conn: Any) -> None:
    """Make our tables (Procrastinate makes its own)."""
    with conn.transaction():
        for statement in SCHEMA:
            conn.execute(statement)
