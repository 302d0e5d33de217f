"""The cluster's PostgreSQL database: our tables beside Procrastinate's.

``listferry_stores`` points at each tenant's current store version (the fence: a new
version is taken only over the one its run started from); ``listferry_runs`` indexes
every run of every tenant, with the store version that holds it (``NULL`` for a run
whose store write the fence refused), so any node can answer ``runs`` and ``status``
without a store; ``listferry_tenants`` holds the tenants every node shares.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from listferry.cluster import INSTALL
from listferry.errors import ListferryError

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
    "CREATE INDEX IF NOT EXISTS listferry_runs_by_job ON listferry_runs (job_id)",
    """
    CREATE TABLE IF NOT EXISTS listferry_tenants (
        name text PRIMARY KEY,
        settings jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
)


def shown(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + netloc))


def connect(url: str, autocommit: bool = True, name: str | None = None) -> Any:
    """A psycopg connection to the cluster's database, or one clear error naming it;
    ``name`` is the session's ``application_name`` (``cluster status`` shows it)."""
    try:
        import psycopg
    except ImportError:
        raise ListferryError(INSTALL) from None
    try:
        extra = {"application_name": name[:63]} if name else {}
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10, **extra)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ListferryError(f"database {shown(url)}: could not connect: {first}") from None


def create_schema(conn: Any) -> None:
    """Make our tables (Procrastinate makes its own)."""
    with conn.transaction():
        for statement in SCHEMA:
            conn.execute(statement)
