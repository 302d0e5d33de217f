"""The export query: every field of every exported subscriber, in one SQL statement.

Rows stream from one cursor. Each row's SQL values get a digest; a row whose digest
differs from the one recorded for the last return file (or that has none) has
*changed*, and its new digest waits in ``temp.export_digests`` until the file is
delivered. With ``changed_only`` the rows that did not change are left out.

Removed subscribers (no longer on the CRM's list) are not exported; everyone else is,
active or opted out.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from listferry.errors import ListferryError
from listferry.export_fields import Field

DIGESTS = "temp.export_digests"
BATCH = 2000


def export_sql(fields: Mapping[str, Field]) -> str:
    """``SELECT email, last digest, field values... FROM subscribers ...`` for ``fields``."""
    joins = list(dict.fromkeys(join for field in fields.values() for join in field.joins))
    values = "".join(f", {field.sql}" for field in fields.values())
    return (
        f"SELECT s.email, exported.digest{values} FROM subscribers AS s "
        "LEFT JOIN exported ON exported.email = s.email "
        + "".join(f"{join} " for join in joins)
        + "WHERE s.status != 'removed' ORDER BY s.email"
    )


def digest(names: str, values: Sequence[Any]) -> bytes:
    """What a row's SQL values say under these field names, in 16 bytes."""
    return hashlib.blake2b(f"{names}{values!r}".encode(), digest_size=16).digest()


class Rows:
    """The export's rows as dicts in field order, read once; ``count`` says how many."""

    def __init__(
        self, conn: sqlite3.Connection, fields: Mapping[str, Field], changed_only: bool
    ) -> None:
        self.conn = conn
        self.fields = fields
        self.changed_only = changed_only
        self.count = 0
        conn.execute(f"DROP TABLE IF EXISTS {DIGESTS}")
        conn.execute(f"CREATE TABLE {DIGESTS} (email TEXT PRIMARY KEY, digest BLOB)")
        try:
            self.cursor = conn.execute(export_sql(fields))
        except sqlite3.Error as exc:
            raise ListferryError(
                f"the export query failed: {exc} (fields: {', '.join(fields)})"
            ) from None
        self._stream = self._rows()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._stream

    def close(self) -> None:
        """Stop reading (the rows not read yet are not in the file): call before closing."""
        self._stream.close()
        self.cursor.close()

    def _rows(self) -> Iterator[dict[str, Any]]:
        names = list(self.fields)
        signature = repr(names)
        converters = [field.converter() for field in self.fields.values()]
        changed: list[tuple[str, bytes]] = []
        try:
            for email, last, *values in self.cursor:
                new = digest(signature, values)
                if new != last:
                    changed.append((email, new))
                    if len(changed) >= BATCH:
                        self._remember(changed)
                elif self.changed_only:
                    continue
                self.count += 1
                yield {n: c(v) for n, c, v in zip(names, converters, values, strict=True)}
        finally:
            self.cursor.close()
            self._remember(changed)

    def _remember(self, changed: list[tuple[str, bytes]]) -> None:
        self.conn.executemany(f"INSERT INTO {DIGESTS} (email, digest) VALUES (?, ?)", changed)
        changed.clear()


def drop_digests(conn: sqlite3.Connection) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {DIGESTS}")
