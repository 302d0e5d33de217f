"""The ``[cluster]`` and ``[storage]`` tables: where the nodes of a cluster meet.

With ``[cluster]``, listferry runs on many machines: the queue, the tenants and the
store pointers in PostgreSQL (``database``), homes, stores, archive and outbox in
S3-compatible storage (``[storage]``). Without it nothing changes and none of the
cluster packages is imported. Neither table ever holds a secret: the database password
comes from ``$LISTFERRY_DATABASE_URL``, ``PGPASSWORD`` or ``~/.pgpass``, the storage
credentials from the usual AWS chain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from listferry.config import checks
from listferry.config.keys import REQUIRED, attributes, checked, keys_of, setting
from listferry.config.where import not_a_table, where
from listferry.errors import ConfigError

#: The tables of cluster mode.
CLUSTER_TABLES = ("cluster", "storage")
#: Where the database URL comes from when ``[cluster] database`` is not written.
DATABASE_ENV = "LISTFERRY_DATABASE_URL"


def database_url(value: Any, password: bool = False) -> str | None:
    """A PostgreSQL URL; one with a password in it only where ``password`` allows (the
    environment, never the config file)."""
    if not isinstance(value, str) or not value.strip():
        return "must be a postgresql:// URL"
    try:
        url = urlsplit(value)
        _ = url.port
    except ValueError as exc:
        return f"{value!r}: {exc}"
    if url.scheme not in ("postgresql", "postgres"):
        return f"{value!r} must be a postgresql:// URL"
    secret = {name.lower() for name in parse_qs(url.query)} & {"password", "sslpassword"}
    if (url.password or secret) and not password:
        return f"must not hold a password; use ${DATABASE_ENV}, PGPASSWORD or ~/.pgpass"
    return None


def storage_url(value: Any) -> str | None:
    """``s3://bucket`` or ``s3://bucket/prefix``."""
    if not isinstance(value, str) or not value.startswith("s3://"):
        return "must be an s3://BUCKET/PREFIX URL"
    bucket = value[len("s3://") :].split("/", 1)[0]
    if not 3 <= len(bucket) <= 63 or not all(c.isalnum() or c in ".-" for c in bucket):
        return f"{value!r}: {bucket!r} is not a bucket name (3 to 63 letters, digits, '.', '-')"
    if any(part in (".", "..") for part in value[len("s3://") :].split("/")):
        return f"{value!r} must not hold '.' or '..'"
    return None


@dataclass(frozen=True)
class ClusterSettings:
    """``[cluster]``: the PostgreSQL database every node shares, and how workers run."""

    database: str = setting(
        "",
        lambda value: None if value == "" else database_url(value),
        "The PostgreSQL database of the cluster: the queue (Procrastinate's tables), the "
        "tenants, the runs index and the store pointers. Empty: `$LISTFERRY_DATABASE_URL`. "
        "No password here: `$LISTFERRY_DATABASE_URL`, `PGPASSWORD` or `~/.pgpass`.",
        shown_default="$LISTFERRY_DATABASE_URL",
    )
    concurrency: int = setting(
        2,
        checks.whole_number(1, 256),
        "How many jobs `listferry worker` runs at once (each tenant's sync its own process); "
        "`--concurrency` overrides it.",
    )
    stalled_after: float = setting(
        60.0,
        checks.seconds_above_zero,
        "Seconds without a heartbeat after which a worker counts as dead and its jobs are "
        "queued again for another worker.",
    )


@dataclass(frozen=True)
class StorageSettings:
    """``[storage]``: the S3-compatible bucket that holds homes, stores, archive, outbox."""

    url: str = setting(
        REQUIRED,
        storage_url,
        "The bucket and prefix: `s3://BUCKET/PREFIX`; `homes/` (each with its `outbox/`), "
        "`stores/` and `archive/` are kept below it.",
    )
    endpoint_url: str | None = setting(
        None,
        checks.http_url,
        "The S3-compatible server (SeaweedFS, MinIO, Ceph, a cloud's); unset: AWS S3. "
        "Credentials come from the usual AWS chain (`AWS_ACCESS_KEY_ID`, `~/.aws`, roles).",
    )
    region: str | None = setting(None, checks.non_empty_string, "The bucket's region.")
    keep_versions: int = setting(
        30,
        checks.whole_number(0),
        "How many versions of each tenant's store stay in storage for `cluster restore` "
        "(each run, export or change makes one); older ones are removed as new ones are "
        "published. 0 keeps every version.",
    )

    def home_of(self, tenant: str) -> str:
        """The URL of ``tenant``'s home: ``s3://BUCKET/PREFIX/homes/NAME/``."""
        return f"{self.url.rstrip('/')}/homes/{tenant}/"


def parse_cluster(
    text: str, path: Path, data: dict[str, Any]
) -> tuple[ClusterSettings | None, StorageSettings | None]:
    """Check ``[cluster]`` and ``[storage]``; both or neither."""
    cluster, storage = data.get("cluster"), data.get("storage")
    for name, table in (("cluster", cluster), ("storage", storage)):
        if table is not None and not isinstance(table, dict):
            raise not_a_table(path, name)
    if cluster is None and storage is None:
        return None, None
    if cluster is None:
        raise ConfigError(f"{where(path, text, 'storage')} is used only with a [cluster] table")
    if storage is None:
        raise ConfigError(
            f"{where(path, text, 'cluster')} needs a [storage] table: where homes, stores, "
            'archive and outbox live (url = "s3://BUCKET/PREFIX")'
        )
    given = checked(text, path, "cluster", cluster, keys_of(ClusterSettings))
    settings = ClusterSettings(**attributes(keys_of(ClusterSettings).values(), given))
    if not settings.database:
        from_env = os.environ.get(DATABASE_ENV, "")
        if not from_env:
            raise ConfigError(
                f"{where(path, text, 'cluster')} database is not set, nor is ${DATABASE_ENV}"
            )
        if database_url(from_env, password=True):
            raise ConfigError(f"${DATABASE_ENV} must be a postgresql:// URL")
        given["database"] = from_env
        settings = ClusterSettings(**attributes(keys_of(ClusterSettings).values(), given))
    stored = checked(text, path, "storage", storage, keys_of(StorageSettings))
    if "url" not in stored:
        raise ConfigError(f'{where(path, text, "storage")} needs url ("s3://BUCKET/PREFIX")')
    return settings, StorageSettings(**attributes(keys_of(StorageSettings).values(), stored))
