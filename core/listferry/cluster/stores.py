"""Tenant stores in cluster mode: SQLite files kept as immutable versions in storage.

A run takes the tenant's current version (the copy this worker already has when it is
that version, else a download), applies on local disk as on one machine, uploads the
result as a new object and then moves the tenant's pointer in PostgreSQL with a
compare-and-swap on the version it started from. That last step is the fence: a worker
that was paused or cut off while another ran the tenant finds the pointer moved, its
write is refused and nothing it did becomes visible. The newest
``[storage] keep_versions`` versions stay in storage (``listferry_store_versions`` lists
them), so an earlier state can be restored (``listferry cluster restore``).

Objects: ``stores/NAME/VERSION-RANDOM.db`` below the storage prefix; the random part
keeps two workers that wrote the same version number from writing the same object.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import socket
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from listferry.cluster.database import connect, shown
from listferry.cluster.storage import Storage
from listferry.errors import ListferryError
from listferry.runs import RunRecord
from listferry.store.database import Store, stamp_path

log = logging.getLogger("listferry")


class Fenced(ListferryError):
    """The tenant's store moved on while this run worked: its write was refused."""


class Damaged(ListferryError):
    """A store version is missing from storage or does not match its SHA-256: trying
    again will not help; an operator restores an earlier version."""


@dataclass(frozen=True)
class Pointer:
    """Where a tenant's current store version is: its number, object key and content."""

    version: int
    key: str
    size: int
    sha256: str


def node_name() -> str:
    """This process as the runs index and logs name it: ``host:pid``."""
    return f"{socket.gethostname() or 'localhost'}:{os.getpid()}"


def job_attempt() -> int | None:
    """Which attempt of its queue job this process is (0 the first), if a worker
    started it."""
    value = os.environ.get("LISTFERRY_JOB_ATTEMPT", "")
    return int(value) if value.isdigit() else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    """Where the local copy says which published version it is."""
    return path.with_name(path.name + ".version")


def _main_stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def discard_unpublished(path: Path) -> None:
    """Drop the WAL and its index beside the local copy: what they hold was never
    published (a publish checkpoints everything into the file first)."""
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


class StoreVersions:
    """The versions of the tenants' stores: read the pointer, check out, publish."""

    def __init__(
        self, database_url: str, storage: Storage, node: str | None = None, keep: int = 0
    ) -> None:
        self.database_url = database_url
        self.storage = storage
        self.node = node or node_name()
        #: How many versions of a store stay in storage (0: all of them).
        self.keep = keep
        self._conn: Any = None

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """The connection for one step; its errors as one :class:`ListferryError` naming
        the database.

        The steps of a run share one connection (each new one costs the database a
        process and the client a few round trips), asked first with an empty query
        whether it still answers and opened again when not: a database restarted between
        two steps costs nothing. A step that failed on the database closes it.
        """
        conn = self._connection()
        try:
            yield conn
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg"):
                self.close()
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ListferryError(f"database {shown(self.database_url)}: {first}") from None
            raise

    def _connection(self) -> Any:
        if self._conn is not None:
            try:
                self._conn.execute("")
            except Exception:  # the server restarted, or ended the session: a new one
                self.close()
        if self._conn is None:
            self._conn = connect(self.database_url)
        return self._conn

    def __enter__(self) -> StoreVersions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the steps' connection (the next step opens one again)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def pointer(self, tenant: str) -> Pointer | None:
        """The tenant's current version, or ``None`` before its first run."""
        with self.session() as conn:
            row = conn.execute(
                "SELECT version, key, size, sha256 FROM listferry_stores WHERE tenant = %s",
                (tenant,),
            ).fetchone()
        return Pointer(*row) if row else None

    def checkout(self, tenant: str, path: Path) -> int:
        """Make ``path`` the tenant's current version; return its number (0: none yet).

        The local copy is used when it is that version as published (its sidecar says
        so and the file is as this node left it after publishing), else downloaded and
        checked against the pointer's SHA-256. Anything unpublished is dropped.
        """
        pointer = self.pointer(tenant)
        discard_unpublished(path)
        sidecar = _sidecar(path)
        if pointer is None:
            for stale in (path, sidecar, stamp_path(path)):
                stale.unlink(missing_ok=True)
            return 0
        try:
            known = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            known = {}
        if known.get("sha256") == pointer.sha256 and known.get("stamp") == _main_stamp(path):
            return pointer.version
        self.fetch(pointer, path)
        return pointer.version

    def fetch(self, pointer: Pointer, path: Path) -> None:
        """Download the version ``pointer`` names to ``path`` (in place of what is there,
        unpublished changes included), checked against its SHA-256."""
        discard_unpublished(path)
        _sidecar(path).unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.download")
        try:
            try:
                self.storage.get(pointer.key, temp)
            except ListferryError:
                if self.storage.head(pointer.key) is None:  # storage answers: it is gone
                    raise Damaged(
                        f"{self.storage.url_of(pointer.key)}: the store version "
                        f"{pointer.version} is missing from storage; restore an earlier "
                        "version (listferry cluster restore, docs/cluster.md)"
                    ) from None
                raise
            if sha256_file(temp) != pointer.sha256:
                raise Damaged(
                    f"{self.storage.url_of(pointer.key)}: the store version {pointer.version} "
                    "does not match its SHA-256 in the database; restore an earlier version "
                    "(listferry cluster restore, docs/cluster.md)"
                )
            stamp_path(path).unlink(missing_ok=True)  # checked again when it is opened
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        self._remember(path, pointer.sha256)

    def _remember(self, path: Path, sha256: str) -> None:
        _sidecar(path).write_text(json.dumps({"sha256": sha256, "stamp": _main_stamp(path)}))

    def publish(
        self,
        tenant: str,
        conn: sqlite3.Connection,
        path: Path,
        base: int,
        runs: list[RunRecord],
        job_id: int | None = None,
        archived: Sequence[str] = (),
        exported: dict[str, Any] | None = None,
        restored_from: int | None = None,
    ) -> int:
        """Upload the store at ``path`` (open on ``conn``) as the version after ``base``,
        move the pointer there if it still is ``base``, and index ``runs`` with it, in
        one transaction; return the new version. A pointer that moved raises
        :class:`Fenced` and nothing becomes visible (the uploaded object is removed).
        ``exported`` is the return file the version adds (its ``exports`` row);
        ``restored_from`` the earlier version it restores. Versions past the newest
        :attr:`keep` are removed from storage once the new one holds."""
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        sha256, size = sha256_file(path), path.stat().st_size
        counts = dict(conn.execute("SELECT status, count(*) FROM subscribers GROUP BY status"))
        active, unsubscribed = counts.get("active", 0), counts.get("unsubscribed", 0)
        version = base + 1
        key = f"stores/{tenant}/{version:012d}-{secrets.token_hex(6)}.db"
        self.storage.write(path, key, if_absent=True)
        try:
            with self.session() as db, db.transaction():
                if base == 0:
                    moved = db.execute(
                        "INSERT INTO listferry_stores (tenant, version, key, size, sha256, "
                        "written_by, subscribers, unsubscribed, last_export) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (tenant) DO NOTHING",
                        (
                            tenant,
                            version,
                            key,
                            size,
                            sha256,
                            self.node,
                            active,
                            unsubscribed,
                            json.dumps(exported) if exported else None,
                        ),
                    )
                else:
                    moved = db.execute(
                        "UPDATE listferry_stores SET version = %(version)s, key = %(key)s, "
                        "size = %(size)s, sha256 = %(sha256)s, written_by = %(node)s, "
                        "written_at = now(), subscribers = %(active)s, "
                        "unsubscribed = %(unsubscribed)s, "
                        "last_export = coalesce(%(exported)s::jsonb, last_export) "
                        "WHERE tenant = %(tenant)s AND version = %(base)s",
                        {
                            "version": version,
                            "key": key,
                            "size": size,
                            "sha256": sha256,
                            "node": self.node,
                            "active": active,
                            "unsubscribed": unsubscribed,
                            "exported": json.dumps(exported) if exported else None,
                            "tenant": tenant,
                            "base": base,
                        },
                    )
                if moved.rowcount != 1:
                    raise Fenced(
                        f"the store moved on from version {base} while this run "
                        "worked (another worker ran the tenant); nothing of this run was kept"
                    )
                self.index(db, tenant, runs, version, job_id)
                stale = self.remember(db, tenant, version, key, size, sha256, restored_from)
                if restored_from is not None:  # the runs of the versions after it are undone
                    db.execute(
                        "UPDATE listferry_runs SET undone_by = %s WHERE tenant = %s "
                        "AND store_version > %s AND undone_by IS NULL",
                        (version, tenant, restored_from),
                    )
                if archived:  # the version holds them now
                    db.execute(
                        "DELETE FROM listferry_archive_puts WHERE tenant = %s AND key = ANY(%s)",
                        (tenant, list(archived)),
                    )
        except Fenced:
            with contextlib.suppress(ListferryError):
                self.storage.delete(key)  # no pointer will ever name it
            raise
        except ListferryError:
            # The connection broke, perhaps during the commit: the pointer says whether
            # the version was taken. Unknown (the database still away): the object stays.
            taken = self.pointer(tenant)  # still away: this raises, and the object stays
            if taken is None or taken.key != key:
                raise  # not taken (or taken and replaced since): the object stays, unnamed
        else:
            self.forget(tenant, stale)
        self._remember(path, sha256)
        return version

    def remember(
        self,
        db: Any,
        tenant: str,
        version: int,
        key: str,
        size: int,
        sha256: str,
        restored_from: int | None = None,
    ) -> list[str]:
        """Add ``version`` to the tenant's versions (in the transaction open on ``db``),
        and take out those past the newest :attr:`keep`: their keys, for :meth:`forget`
        to remove once the transaction holds."""
        db.execute(
            "INSERT INTO listferry_store_versions (tenant, version, key, size, sha256, "
            "written_by, restored_from) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (tenant, version) DO UPDATE SET key = excluded.key, "
            "size = excluded.size, sha256 = excluded.sha256, written_at = now(), "
            "written_by = excluded.written_by, restored_from = excluded.restored_from",
            (tenant, version, key, size, sha256, self.node, restored_from),
        )
        if not self.keep:
            return []
        rows = db.execute(
            "DELETE FROM listferry_store_versions WHERE tenant = %s AND version <= %s "
            "RETURNING key",
            (tenant, version - self.keep),
        ).fetchall()
        return [stale for (stale,) in rows]

    def forget(self, tenant: str, keys: list[str]) -> None:
        """Remove old versions' objects from storage; one log line when storage does not
        take it (the objects stay, named by no version)."""
        if not keys:
            return
        try:
            self.storage.delete_many(keys)
        except (ListferryError, OSError) as exc:
            log.warning("%s: %d old store version(s) stay in storage: %s", tenant, len(keys), exc)

    def restore(self, tenant: str, version: int, path: Path, base: int) -> int:
        """Publish version ``version`` of the tenant's store again, as the version after
        ``base`` (the current one, which the caller holds the lease over), through
        ``path`` (the local copy); the new version's number. Nothing is lost: the
        versions in between stay in storage, as long as ``keep`` keeps them."""
        kept = {entry["version"]: entry for entry in self.history(tenant)}
        if version not in kept:
            have = f"{min(kept)} to {max(kept)}" if kept else "none"
            raise ListferryError(
                f"{tenant} has no store version {version} in storage (kept: {have})"
            )
        if version == base:
            raise ListferryError(f"{tenant}: version {version} is the current store already")
        entry = kept[version]
        self.fetch(Pointer(version, entry["key"], entry["size"], entry["sha256"]), path)
        with Store(path) as store:  # brought to this listferry's schema, and checked
            return self.publish(tenant, store.conn, path, base, [], restored_from=version)

    def history(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's store versions kept in storage, newest first."""
        with self.session() as db:
            rows = db.execute(
                "SELECT v.version, v.key, v.size, v.sha256, v.written_at, v.written_by, "
                "v.restored_from, (SELECT count(*) FROM listferry_runs r WHERE r.tenant = "
                "v.tenant AND r.store_version = v.version AND r.status <> 'idle') "
                "FROM listferry_store_versions v "
                "WHERE v.tenant = %s ORDER BY v.version DESC",
                (tenant,),
            ).fetchall()
        names = ("version", "key", "size", "sha256", "written_at", "written_by")
        return [
            {**dict(zip(names, row[:6], strict=True)), "restored_from": row[6], "runs": row[7]}
            for row in rows
        ]

    def will_put(self, tenant: str, keys: list[str], base: int) -> None:
        """Say that a run from version ``base`` is putting ``keys`` in storage (before it
        does): if it never publishes them, a later publish of the tenant removes them."""
        with self.session() as db, db.transaction():
            for key in keys:
                db.execute(
                    "INSERT INTO listferry_archive_puts (tenant, key, base) "
                    "VALUES (%s, %s, %s) ON CONFLICT (tenant, key) DO UPDATE SET base = "
                    "excluded.base",
                    (tenant, key, base),
                )

    def sweep(self, tenant: str, base: int) -> int:
        """Remove what runs from version ``base`` or before put in storage and never
        published (a worker that died, or was refused, between the two); the number of
        files removed. Called after a publish the fence let through: what a run from a
        newer version puts stays."""
        with self.session() as db:
            keys = [
                key
                for (key,) in db.execute(
                    "SELECT key FROM listferry_archive_puts WHERE tenant = %s AND base <= %s",
                    (tenant, base),
                ).fetchall()
            ]
        if not keys:
            return 0
        self.storage.delete_many(keys)
        with self.session() as db:
            db.execute(
                "DELETE FROM listferry_archive_puts WHERE tenant = %s AND key = ANY(%s)",
                (tenant, keys),
            )
        return len(keys)

    def index(
        self,
        conn: Any,
        tenant: str,
        runs: list[RunRecord],
        version: int | None,
        job_id: int | None,
    ) -> None:
        """Add ``runs`` to the runs index (``version``: the store version that holds them,
        ``None`` for runs no store holds)."""
        for run in runs:
            conn.execute(
                "INSERT INTO listferry_runs (tenant, run_id, store_version, job_id, attempt, "
                "node, status, file, sha256, reason, started_at, finished_at, record) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    tenant,
                    run.run_id,
                    version,
                    job_id,
                    job_attempt() if job_id is not None else None,
                    self.node,
                    str(run.status),
                    run.file,
                    run.sha256,
                    run.reason,
                    run.started_at,
                    run.finished_at,
                    json.dumps({**run.to_json(), "report": run.report}),
                ),
            )

    def index_refused(self, tenant: str, runs: list[RunRecord], job_id: int | None) -> None:
        """Index runs whose store write was refused, as the ``failed`` runs they are."""
        self.index_apart(tenant, runs, None, job_id)

    def index_apart(
        self, tenant: str, runs: list[RunRecord], version: int | None, job_id: int | None
    ) -> None:
        """Index ``runs`` that wrote no store version (refused, or ``idle``) on their own."""
        with self.session() as conn, conn.transaction():
            self.index(conn, tenant, runs, version, job_id)
