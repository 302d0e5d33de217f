"""The tenant store: one SQLite file per tenant, created and migrated here.

It holds the subscribers, the run history, engagement events, opt-outs and the
return files delivered (with a digest of what each said of each subscriber). The
connection runs in autocommit mode; writes that belong together go through
:meth:`Store.transaction`, which is one ``BEGIN IMMEDIATE`` ... ``COMMIT``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import sqlite_utils

from listferry.errors import ListferryError
from listferry.runs import RunRecord, utcnow

#: The columns of ``runs`` as the first schema made them; later ones were added after.
_FIRST_RUN_COLUMNS = (
    "status",
    "file",
    "strategy",
    "reason",
    "received",
    "added",
    "updated",
    "removed",
    "unsubscribed",
    "unchanged",
    "ignored",
    "invalid",
    "duplicates",
    "started_at",
    "finished_at",
    "sha256",
    "archive",
    "report",
)
RUN_COLUMNS = (*_FIRST_RUN_COLUMNS, "hint", "settings_digest", "replay_of")


EXPORT_COLUMNS = (
    "started_at",
    "finished_at",
    "template",
    "subscribers",
    "file",
    "target",
    "records",
)


COUNT_COLUMNS = frozenset(
    {
        "received",
        "added",
        "updated",
        "removed",
        "unsubscribed",
        "unchanged",
        "ignored",
        "invalid",
        "duplicates",
    }
)


def _migrate_1(db: sqlite_utils.Database) -> None:
    db["subscribers"].create(
        {
            "email": str,
            "first_name": str,
            "last_name": str,
            "segment_code": str,
            "fields": str,
            "status": str,
            "created_at": str,
            "updated_at": str,
            "status_changed_at": str,
        },
        pk="email",
        not_null={"status", "fields"},
        defaults={"status": "active", "fields": "{}"},
    )
    db["subscribers"].create_index(["status"])
    db["subscribers"].create_index(["updated_at"])
    db["runs"].create(
        {"id": int, **{c: int if c in COUNT_COLUMNS else str for c in _FIRST_RUN_COLUMNS}},
        pk="id",
    )
    db["runs"].create_index(["sha256"])
    db["events"].create(
        {"id": int, "email": str, "type": str, "at": str, "topic": str},
        pk="id",
        not_null={"email", "type", "at", "topic"},
        defaults={"topic": ""},
    )
    db["events"].create_index(["email", "type", "at", "topic"], unique=True)
    db["optouts"].create(
        {"email": str, "at": str, "source": str, "run_id": int},
        pk="email",
    )


def _migrate_2(db: sqlite_utils.Database) -> None:
    """Return files: one row per delivered file, and what each subscriber's row said."""
    db["exports"].create(
        {c: int if c in ("id", "records") else str for c in ("id", *EXPORT_COLUMNS)}, pk="id"
    )
    db["exported"].create({"email": str, "digest": bytes, "export_id": int}, pk="email")


def _migrate_3(db: sqlite_utils.Database) -> None:
    """The operator's hint beside a run's reason; facts about the tenant; files seen waiting.

    ``meta`` holds ``created_at`` (when listferry first kept this tenant's store) and
    ``looked_at`` (when a sync last listed the home). ``sightings`` holds when each list
    file waiting for its count file was first seen.
    """
    db["runs"].add_column("hint", str)
    db["meta"].create({"key": str, "value": str}, pk="key")
    first = db.execute("SELECT min(started_at) FROM runs").fetchone()[0]
    db["meta"].insert({"key": "created_at", "value": first or utcnow()})
    db["sightings"].create(
        {"name": str, "size": int, "mtime": float, "first_seen": float}, pk="name"
    )


def _migrate_4(db: sqlite_utils.Database) -> None:
    """What decided how each run's file was read and planned (a digest of the tenant's
    dialect and strategy then): the repeat rule compares it. Runs from before have none.
    And for a replay, the run whose archived file it applied again."""
    db["runs"].add_column("settings_digest", str)
    db["runs"].add_column("replay_of", int)


MIGRATIONS = [_migrate_1, _migrate_2, _migrate_3, _migrate_4]


class LastApplied(NamedTuple):
    """The tenant's last applied run: its id, its file's SHA-256, and the digest of the
    settings it was read and planned with (``None`` for a run from before digests)."""

    run_id: int
    sha256: str | None
    settings_digest: str | None


def last_applied(conn: sqlite3.Connection) -> LastApplied | None:
    """The last applied run in the store ``conn`` opens, of any schema (``listferry check``
    reads stores that no sync has migrated yet), or ``None``."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    digest = "settings_digest" if "settings_digest" in columns else "NULL"
    row = conn.execute(
        f"SELECT id, sha256, {digest} FROM runs WHERE status = 'applied' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return LastApplied(*row) if row else None


class StoreError(ListferryError):
    """The tenant database cannot be opened, is corrupt, or is from a newer listferry."""


def corrupt(path: Path, detail: str) -> StoreError:
    """The one line that says the tenant database at ``path`` is damaged, and what to do."""
    return StoreError(
        f"{path}: the tenant database is corrupt ({detail}); restore it from a backup"
    )


def store_error(path: Path, exc: sqlite3.Error, failed: str = "cannot be opened") -> StoreError:
    """SQLite's error with the tenant database at ``path`` in one line: a damaged file
    (not a database, malformed) is :func:`corrupt`; anything else the database ``failed``."""
    if getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return corrupt(path, str(exc))
    return StoreError(f"{path}: the tenant database {failed}: {exc}")


def sightings(conn: sqlite3.Connection) -> dict[str, tuple[int, float, float]]:
    """The list files the last sync saw waiting for their count file: name -> (size,
    modification time, when first seen as such), epoch seconds."""
    if conn.execute("PRAGMA user_version").fetchone()[0] < 3:
        return {}  # a store from before listferry kept them
    rows = conn.execute("SELECT name, size, mtime, first_seen FROM sightings")
    return {name: (size, mtime, first) for name, size, mtime, first in rows}


def waiting_lists(path: Path) -> dict[str, tuple[int, float, float]]:
    """:func:`sightings` of the tenant database at ``path`` (read only; none if there is
    no database yet)."""
    if not path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return sightings(conn)


#: A store unchanged since listferry last closed it is checked again after this long, so
#: that damage no write made (a failing disk) is still found within a day.
RECHECK_SECONDS = 24 * 3600


def stamp_of(path: Path) -> list[list[int] | None]:
    """Size, modification time and inode of the database file and its WAL (or None)."""
    out: list[list[int] | None] = []
    for part in (path, path.with_name(path.name + "-wal")):
        try:
            st = part.stat()
        except FileNotFoundError:
            out.append(None)
            continue
        out.append([st.st_size, st.st_mtime_ns, st.st_ino])
    return out


def stamp_path(path: Path) -> Path:
    """Where listferry keeps the :func:`stamp_of` the database had when it was last checked."""
    return path.with_name(path.name + ".checked")


def checked_at(path: Path) -> float | None:
    """When listferry last checked the database at ``path`` and found it whole, if the file
    (and its WAL) is as listferry left it since; else None."""
    try:
        known = json.loads(stamp_path(path).read_text())
        return float(known["checked_at"]) if known["files"] == stamp_of(path) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def checked_since_change(path: Path, max_age: float | None = None) -> bool:
    """Whether the database at ``path`` is as listferry left it after a good check (made
    less than ``max_age`` seconds ago, if given)."""
    checked = checked_at(path)
    return checked is not None and (max_age is None or 0 <= time.time() - checked < max_age)


def quick_check(conn: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA quick_check`` of the tenant database at ``path``: a damaged one is a
    :class:`StoreError` saying to restore it (about 0.5 s for a million subscribers)."""
    try:
        (result,) = conn.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.Error as exc:
        raise store_error(path, exc, "cannot be read") from None
    if result != "ok":
        raise corrupt(path, "quick_check: " + " ".join(str(result).split()))


def read_only(path: Path) -> sqlite3.Connection:
    """The tenant database at ``path`` opened for reading, checked as :class:`Store` checks
    it at open (:func:`quick_check` unless it is as listferry left it after a check)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=30)
    try:
        if not checked_since_change(path, RECHECK_SECONDS):
            quick_check(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _left_in(archive: Path | None, run_id: int, file: str | None) -> str | None:
    """The copy of ``file`` a killed run ``run_id`` moved into ``archive``, if any."""
    if archive is None or not file or not archive.is_dir():
        return None
    named = re.compile(rf"{run_id:06d}-([0-9a-f]{{12}}|unread)-{re.escape(file)}")
    for entry in os.scandir(archive):  # number-sha-name, as the pipeline names its copies
        if named.fullmatch(entry.name):
            return entry.path
    return None


def read_runs(
    conn: sqlite3.Connection, tenant: str, limit: int | None = None, offset: int = 0
) -> list[RunRecord]:
    """``tenant``'s runs in the store ``conn`` has open, newest first: at most ``limit``
    of them, after skipping the ``offset`` newest."""
    sql = f"SELECT id, {', '.join(RUN_COLUMNS)} FROM runs ORDER BY id DESC LIMIT ? OFFSET ?"
    return [_run_of(tenant, row) for row in conn.execute(sql, (limit or -1, offset))]


def read_run(conn: sqlite3.Connection, tenant: str, run_id: int) -> RunRecord | None:
    """Run ``run_id`` of ``tenant`` in the store ``conn`` has open, if there is one."""
    sql = f"SELECT id, {', '.join(RUN_COLUMNS)} FROM runs WHERE id = ?"
    row = conn.execute(sql, (run_id,)).fetchone()
    return _run_of(tenant, row) if row else None


def _run_of(tenant: str, row: tuple[Any, ...]) -> RunRecord:
    values = dict(zip(("id", *RUN_COLUMNS), row, strict=True))
    run_id = values.pop("id")
    counts = {c: values[c] or 0 for c in COUNT_COLUMNS}
    return RunRecord(tenant=tenant, run_id=run_id, **{**values, **counts})


class Store:
    """A tenant's database, open. Use as a context manager to close it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.checked_at: float | None = None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        except sqlite3.DatabaseError as exc:
            raise store_error(path, exc) from None
        try:
            self._check()
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.db = sqlite_utils.Database(self.conn)
            self._migrate()
        except BaseException as exc:
            self.conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise store_error(path, exc) from None
            raise

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()
        self._write_stamp()

    # -- the check at open ---------------------------------------------------------------

    def _check(self) -> None:
        """``PRAGMA quick_check`` unless the file is as listferry left it after a good check.

        The check costs about 0.5 s for a million subscribers, so it runs when the file
        (or its WAL) changed since listferry last closed it, and at least once a day.
        """
        if not self.path.stat().st_size:
            self.checked_at = time.time()  # a new database: nothing to check
            return
        if checked_since_change(self.path, RECHECK_SECONDS):
            self.checked_at = checked_at(self.path)
            return
        stamp_path(self.path).unlink(missing_ok=True)
        quick_check(self.conn, self.path)
        self.checked_at = time.time()

    def _write_stamp(self) -> None:
        """Remember the file as this process leaves it: checked, and changed only by us."""
        if self.checked_at is None or not self.path.exists():
            return
        stamp = {"checked_at": self.checked_at, "files": stamp_of(self.path)}
        temp = stamp_path(self.path).with_name(f"{stamp_path(self.path).name}.{os.getpid()}.tmp")
        try:
            temp.write_text(json.dumps(stamp))
            os.replace(temp, stamp_path(self.path))
        except OSError:  # a full disk: the next open checks the database again
            temp.unlink(missing_ok=True)

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: the database is from a newer listferry (schema {version})"
            )
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                if self.conn.execute("PRAGMA user_version").fetchone()[0] >= number:
                    continue  # another process migrated it in the meantime
                migration(self.db)
                self.conn.execute(f"PRAGMA user_version={number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside commits together or not at all."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            if self.conn.in_transaction:  # SQLite may have rolled back already (a full disk)
                self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    # -- runs ----------------------------------------------------------------------------

    def begin_run(self, run: RunRecord) -> int:
        """Record that a run started; its row says ``running`` until :meth:`save_run`."""
        with self.transaction():
            cursor = self.conn.execute(
                "INSERT INTO runs (status, file, strategy, started_at) VALUES (?, ?, ?, ?)",
                (run.status, run.file, run.strategy, run.started_at),
            )
        run.run_id = cursor.lastrowid
        return run.run_id

    def save_run(self, run: RunRecord) -> None:
        """Write the run's outcome; call inside the apply transaction for applied runs."""
        values = {c: getattr(run, c) for c in RUN_COLUMNS}
        sets = ", ".join(f"{c} = :{c}" for c in RUN_COLUMNS)
        self.conn.execute(f"UPDATE runs SET {sets} WHERE id = :id", {**values, "id": run.run_id})

    def close_interrupted_runs(self, archive: Path | None = None) -> int:
        """Mark runs left ``running`` by a process that died as ``failed``.

        A process killed after it moved its file into ``archive`` (and before it
        recorded that) left a copy there under the run's number: the run's record takes
        it, so every file in the archive belongs to a run (and can be replayed).
        """
        with self.transaction():
            left = self.conn.execute(
                "SELECT id, file FROM runs WHERE status = 'running'"
            ).fetchall()
            for run_id, file in left:
                self.conn.execute(
                    "UPDATE runs SET status = 'failed', finished_at = ?, reason = "
                    "'interrupted: the process ended before the run finished; nothing was "
                    "applied', archive = ? WHERE id = ?",
                    (utcnow(), _left_in(archive, run_id, file), run_id),
                )
        return len(left)

    def last_applied(self) -> LastApplied | None:
        """The tenant's last applied run, or ``None``."""
        return last_applied(self.conn)

    def record_attempt(self, run: RunRecord) -> None:
        """Record a run that ended before it reached a file (an unreachable home), whole,
        in one transaction: no reader sees it half written."""
        columns = ", ".join(RUN_COLUMNS)
        marks = ", ".join(f":{c}" for c in RUN_COLUMNS)
        with self.transaction():
            cursor = self.conn.execute(
                f"INSERT INTO runs ({columns}) VALUES ({marks})",
                {c: getattr(run, c) for c in RUN_COLUMNS},
            )
        run.run_id = cursor.lastrowid

    # -- facts ---------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def first_seen(self, files: Iterable[tuple[str, int, float]], now: float) -> dict[str, float]:
        """When each ``(name, size, mtime)`` was first seen as it is (epoch seconds).

        A file seen for the first time, or changed since (a new upload), is seen ``now``.
        Names not given are forgotten: the store keeps only files that still wait.
        """
        files = list(files)
        with self.transaction():
            self.conn.execute(
                f"DELETE FROM sightings WHERE name NOT IN ({', '.join('?' * len(files))})",
                [name for name, _, _ in files],
            )
            self.conn.executemany(
                "INSERT INTO sightings (name, size, mtime, first_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET size = excluded.size, "
                "mtime = excluded.mtime, first_seen = excluded.first_seen "
                "WHERE size IS NOT excluded.size OR mtime IS NOT excluded.mtime",
                [(name, size, mtime, now) for name, size, mtime in files],
            )
        return dict(self.conn.execute("SELECT name, first_seen FROM sightings"))

    def runs(self, tenant: str, limit: int | None = None) -> list[RunRecord]:
        return read_runs(self.conn, tenant, limit)

    def run(self, tenant: str, run_id: int) -> RunRecord | None:
        return read_run(self.conn, tenant, run_id)

    # -- subscribers ---------------------------------------------------------------------

    def count(self, status: str = "active") -> int:
        return self.conn.execute(
            "SELECT count(*) FROM subscribers WHERE status = ?", (status,)
        ).fetchone()[0]

    def subscribers(self, status: str = "active") -> Iterator[dict[str, Any]]:
        """The subscribers with ``status`` (or ``all``), by e-mail, as CLI.md shapes them."""
        where, params = ("", ()) if status == "all" else ("WHERE status = ?", (status,))
        cursor = self.conn.execute(
            "SELECT email, first_name, last_name, segment_code, status, fields "
            f"FROM subscribers {where} ORDER BY email",
            params,
        )
        for email, first, last, segment, state, fields in cursor:
            yield {
                "email": email,
                "first_name": first,
                "last_name": last,
                "segment_code": segment,
                "status": state,
                "fields": json.loads(fields or "{}"),
            }

    # -- engagement ----------------------------------------------------------------------

    def add_events(self, events: Iterable[tuple[str, str, str, str]]) -> tuple[int, int]:
        """Store ``(email, type, at, topic)`` events in one transaction.

        The same event twice is stored once. An ``unsubscribe`` event is a platform-side
        opt-out: the subscriber becomes ``unsubscribed`` and no import undoes it.
        Returns (stored, duplicates).
        """
        stored = seen = 0
        now = utcnow()
        with self.transaction():
            for email, kind, at, topic in events:
                seen += 1
                cursor = self.conn.execute(
                    "INSERT OR IGNORE INTO events (email, type, at, topic) VALUES (?, ?, ?, ?)",
                    (email, kind, at, topic),
                )
                stored += cursor.rowcount
                if kind == "unsubscribe":
                    self.conn.execute(
                        "INSERT INTO optouts (email, at, source) VALUES (?, ?, 'platform') "
                        "ON CONFLICT(email) DO UPDATE SET at = min(at, excluded.at), "
                        "source = 'platform'",
                        (email, at),
                    )
                    self.conn.execute(
                        "INSERT INTO subscribers (email, status, created_at, updated_at, "
                        "status_changed_at) VALUES (?, 'unsubscribed', ?, ?, ?) "
                        "ON CONFLICT(email) DO UPDATE SET status = 'unsubscribed', "
                        "status_changed_at = excluded.status_changed_at, updated_at = ? "
                        "WHERE status != 'unsubscribed'",
                        (email, now, now, at, now),
                    )
        return stored, seen - stored

    # -- return files --------------------------------------------------------------------

    def last_export(self) -> dict[str, Any] | None:
        """The latest delivered return file's row of ``exports``, or ``None``."""
        row = self.conn.execute(
            f"SELECT id, {', '.join(EXPORT_COLUMNS)} FROM exports ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return dict(zip(("id", *EXPORT_COLUMNS), row, strict=True)) if row else None

    def record_export(self, export: dict[str, Any], digests: str) -> int:
        """Record a delivered return file and the digests of its changed rows, together.

        ``digests`` names a table of ``(email, digest)``: what each row the file changed
        now says, so the next ``changed-since-last`` file can leave out the rest.
        """
        with self.transaction():
            cursor = self.conn.execute(
                f"INSERT INTO exports ({', '.join(EXPORT_COLUMNS)}) "
                f"VALUES ({', '.join(':' + c for c in EXPORT_COLUMNS)})",
                export,
            )
            self.conn.execute(
                "INSERT INTO exported (email, digest, export_id) "
                f"SELECT email, digest, ? FROM {digests} WHERE true "
                "ON CONFLICT (email) DO UPDATE SET digest = excluded.digest, "
                "export_id = excluded.export_id",
                (cursor.lastrowid,),
            )
        return cursor.lastrowid
