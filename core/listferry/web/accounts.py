"""The console's own store: operator accounts, API tokens and the audit log.

One SQLite file, ``STATE/web/console.db`` (mode 0600), apart from the tenants' stores.
Passwords are kept as the same salted scrypt hashes as tenants' logins; an API token is
shown once when it is made and kept only as its SHA-256 (a token is 256 random bits, so
a fast hash is enough). Each operator has a ``generation``, raised when its password or
role changes: the sessions made before then end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from listferry.errors import ListferryError, UsageError
from listferry.times import utcnow
from listferry.web import schemas

#: What each role may do: a viewer reads, an admin also acts (replay, force, settings).
ROLES = ("viewer", "admin")
OPERATOR_NAME = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,62}$")
#: The audit log's entries kept (the oldest go, a thousand at a time).
AUDIT_KEEP = 100_000
#: How an API token starts, so that a leaked one is easy to recognise and search for.
TOKEN_PREFIX = "lft_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS operators (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY,
    operator TEXT NOT NULL REFERENCES operators(name) ON DELETE CASCADE,
    digest TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    created_at TEXT NOT NULL,
    used_at TEXT
);
CREATE TABLE IF NOT EXISTS ended_sessions (
    sid TEXT PRIMARY KEY,
    until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    operator TEXT NOT NULL,
    address TEXT,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT
);
"""


@dataclass(frozen=True)
class Operator:
    """An operator account as the console and ``operator list --json`` show it."""

    name: str
    role: str
    created_at: str
    generation: int = 1

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "created_at": self.created_at}


def name_problem(name: str) -> str | None:
    if OPERATOR_NAME.fullmatch(name):
        return None
    return (
        f"operator name {name!r} must be lower-case letters, digits, '.', '@', '-' or '_', "
        "starting with a letter or digit"
    )


def role_problem(role: str) -> str | None:
    return None if role in ROLES else f"role {role!r} must be one of {', '.join(ROLES)}"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class Console:
    """The console's store at ``path``; each call opens and closes its connection, so
    one ``Console`` serves any number of threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise ListferryError(f"{self.path}: the console's database: {exc}") from None
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
            yield conn
        except sqlite3.DatabaseError as exc:
            raise ListferryError(f"{self.path}: the console's database: {exc}") from None
        finally:
            conn.close()

    # -- operators -----------------------------------------------------------------------

    def add(self, name: str, role: str, password_hash: str) -> Operator:
        for problem in (name_problem(name), role_problem(role)):
            if problem:
                raise UsageError(problem)
        with self._db() as db:
            try:
                db.execute(
                    "INSERT INTO operators (name, role, password, generation, created_at) "
                    "VALUES (?,?,?,?,?)",
                    (name, role, password_hash, secrets.randbelow(2**62), utcnow()),
                )  # a random generation: a name removed and added again is a new account
            except sqlite3.IntegrityError:
                raise ListferryError(f"operator {name!r} exists already") from None
        found = self.operator(name)
        assert found is not None
        return found

    def operator(self, name: str) -> Operator | None:
        with self._db() as db:
            row = db.execute(
                "SELECT name, role, created_at, generation FROM operators WHERE name = ?",
                (name,),
            ).fetchone()
        return Operator(*row) if row else None

    def operators(self) -> list[Operator]:
        with self._db() as db:
            rows = db.execute(
                "SELECT name, role, created_at, generation FROM operators ORDER BY name"
            ).fetchall()
        return [Operator(*row) for row in rows]

    def password_of(self, name: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT password FROM operators WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_password(self, name: str, password_hash: str) -> None:
        """A new password: the operator's sessions end."""
        self._change(name, "password = ?, generation = generation + 1", (password_hash,))

    def keep_rehashed(self, name: str, old_hash: str, password_hash: str) -> None:
        """A stronger hash of the same password (sessions stay), unless it changed since."""
        with self._db() as db:
            db.execute(
                "UPDATE operators SET password = ? WHERE name = ? AND password = ?",
                (password_hash, name, old_hash),
            )

    def set_role(self, name: str, role: str) -> None:
        if problem := role_problem(role):
            raise UsageError(problem)
        self._change(name, "role = ?, generation = generation + 1", (role,))

    def remove(self, name: str) -> None:
        with self._db() as db:
            if not db.execute("DELETE FROM operators WHERE name = ?", (name,)).rowcount:
                raise ListferryError(f"no operator {name!r} (`listferry operator list`)")

    def _change(self, name: str, assignments: str, values: tuple[Any, ...]) -> None:
        with self._db() as db:
            done = db.execute(f"UPDATE operators SET {assignments} WHERE name = ?", (*values, name))
            if not done.rowcount:
                raise ListferryError(f"no operator {name!r} (`listferry operator list`)")

    # -- sessions ended by logging out ---------------------------------------------------

    def end_session(self, sid: str, until: float) -> None:
        """Session ``sid`` ends now, though its cookie would last until ``until``."""
        import time

        with self._db() as db:
            db.execute("DELETE FROM ended_sessions WHERE until < ?", (time.time(),))
            db.execute("INSERT OR REPLACE INTO ended_sessions VALUES (?, ?)", (sid, until))

    def session_ended(self, sid: str) -> bool:
        with self._db() as db:
            row = db.execute("SELECT 1 FROM ended_sessions WHERE sid = ?", (sid,)).fetchone()
        return row is not None

    # -- API tokens ----------------------------------------------------------------------

    def new_token(self, name: str, label: str = "") -> str:
        """A new API token for operator ``name``: returned once, kept as its digest."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._db() as db:
            try:
                db.execute(
                    "INSERT INTO tokens (operator, digest, label, created_at) VALUES (?,?,?,?)",
                    (name, token_digest(token), label, utcnow()),
                )
            except sqlite3.IntegrityError:
                raise ListferryError(f"no operator {name!r} (`listferry operator list`)") from None
        return token

    def token_operator(self, token: str) -> Operator | None:
        """The operator whose token ``token`` is, noting its use; ``None`` for any other."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = token_digest(token)
        with self._db() as db:
            row = db.execute(
                "SELECT o.name, o.role, o.created_at, o.generation FROM tokens t "
                "JOIN operators o ON o.name = t.operator WHERE t.digest = ?",
                (digest,),
            ).fetchone()
            if row:
                db.execute("UPDATE tokens SET used_at = ? WHERE digest = ?", (utcnow(), digest))
        return Operator(*row) if row else None

    def tokens(self, name: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, operator, label, created_at, used_at FROM tokens"
        params: tuple[Any, ...] = ()
        if name is not None:
            sql, params = sql + " WHERE operator = ?", (name,)
        with self._db() as db:
            rows = db.execute(sql + " ORDER BY id", params).fetchall()
        keys = ("id", "operator", "label", "created_at", "used_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def revoke_token(self, token_id: int) -> None:
        with self._db() as db:
            if not db.execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount:
                raise ListferryError(f"no API token {token_id} (`listferry operator tokens`)")

    # -- the audit log -------------------------------------------------------------------

    def audit(
        self,
        operator: str,
        address: str | None,
        action: str,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Write down an admin's action: who, when, from where, what, on what. The log
        keeps the newest :data:`AUDIT_KEEP` entries."""
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO audit (at, operator, address, action, target, detail) "
                "VALUES (?,?,?,?,?,?)",
                (
                    utcnow(),
                    operator,
                    address,
                    action,
                    target,
                    json.dumps(detail, sort_keys=True) if detail else None,
                ),
            )
            newest = cursor.lastrowid or 0
            if newest % 1000 == 0:
                db.execute("DELETE FROM audit WHERE id <= ?", (newest - AUDIT_KEEP,))

    def audit_log(self, limit: int = 100, offset: int = 0) -> list[schemas.AuditEntry]:
        with self._db() as db:
            rows = db.execute(
                "SELECT id, at, operator, address, action, target, detail FROM audit "
                "ORDER BY id DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [
            schemas.AuditEntry(
                id=row[0],
                at=row[1],
                operator=row[2],
                address=row[3],
                action=row[4],
                target=row[5],
                detail=json.loads(row[6]) if row[6] else None,
            )
            for row in rows
        ]


def console_of(state_dir: Path) -> Console:
    """The console's store of the site whose state folder is ``state_dir``."""
    return Console(state_dir / "web" / "console.db")
