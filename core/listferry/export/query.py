"""The export query: every field of every exported subscriber, in one SQL statement.

Rows stream from one cursor, a batch at a time. The query runs in a thread of its own,
on its own read-only connection, a few batches ahead of the template: SQLite works
while Python renders, so the two cores share the export. Each row's SQL values get a
digest; a row whose digest differs from the one recorded for the last return file (or
that has none) has *changed*, and its new digest waits in ``temp.export_digests`` until
the file is delivered. With ``changed_only`` the rows that did not change are left out.

Removed subscribers (no longer on the CRM's list) are not exported; everyone else is,
active or opted out.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload
from urllib.parse import quote

from listferry.errors import ListferryError
from listferry.fields import Field, same

DIGESTS = "temp.export_digests"
BATCH = 2000
AHEAD = 4
#: Digests stored by one ``INSERT`` (two parameters each, far below SQLite's limit).
DIGESTS_PER_INSERT = 500


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


def digester(names: str) -> Callable[[Sequence[Any]], bytes]:
    """What a row's SQL values say under these field names, in 16 bytes, as a function.

    The digest is BLAKE2b of ``f"{names}{values!r}"``, as stored in ``exported``. The
    names are hashed once and that hash copied for each row: the same bytes, without
    building and encoding the names again for every row.
    """
    names_hashed = hashlib.blake2b(names.encode(), digest_size=16)

    def digest_of(values: Sequence[Any]) -> bytes:
        row = names_hashed.copy()
        row.update(repr(values).encode())
        return row.digest()

    return digest_of


@functools.lru_cache(maxsize=4)
def _insert_digests(rows: int) -> str:
    """One ``INSERT`` of ``rows`` digests: SQLite steps once for them all."""
    return f"INSERT INTO {DIGESTS} (email, digest) VALUES " + ", ".join(["(?, ?)"] * rows)


class Batch(Sequence[dict[str, Any]]):
    """A run of rows, held as the SQL values; a row becomes a dict only when it is read.

    ``fields`` are the export's fields, ``values`` each row's SQL values in their order.
    Filters that write whole batches (``csv_rows``) read ``values`` directly.
    """

    def __init__(self, fields: Mapping[str, Field], values: list[list[Any]]) -> None:
        self.fields = fields
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return list(self._rows(self.values[index]))
        return next(self._rows([self.values[index]]))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._rows(self.values)

    def _rows(self, values: list[list[Any]]) -> Iterator[dict[str, Any]]:
        names = tuple(self.fields)
        converters = [
            (i, convert)
            for i, convert in enumerate(field.converter() for field in self.fields.values())
            if convert is not same
        ]
        for row in values:
            converted = list(row)
            for i, convert in converters:
                converted[i] = convert(converted[i])
            yield dict(zip(names, converted, strict=True))


class _Reader:
    """The query on its own connection in a thread, ``AHEAD`` batches ahead at most."""

    def __init__(self, path: str, sql: str) -> None:
        self.conn = sqlite3.connect(
            f"file:{quote(path)}?mode=ro", uri=True, check_same_thread=False, timeout=30
        )
        self.sql = sql
        self.queue: queue.Queue[list[tuple[Any, ...]] | BaseException | None] = queue.Queue(AHEAD)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read, name="export-query", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            cursor = self.conn.execute(self.sql)
            while not self.stopped.is_set():
                batch = cursor.fetchmany(BATCH)
                if not batch:
                    break
                self._put(batch)
            cursor.close()
            self._put(None)
        except BaseException as exc:
            self._put(exc)

    def _put(self, item: list[tuple[Any, ...]] | BaseException | None) -> None:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def batches(self) -> Iterator[list[tuple[Any, ...]]]:
        while (item := self.queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.stopped.set()
        self.conn.interrupt()
        self.thread.join()
        self.conn.close()


def _database_path(conn: sqlite3.Connection) -> str:
    return next(row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main")


class Rows:
    """The export's rows as dicts in field order, read once; ``count`` says how many.

    Iterate for one row at a time, or call :meth:`batches` for lists of rows.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        fields: Mapping[str, Field],
        changed_only: bool,
        match_on: tuple[str, ...] = (),
    ) -> None:
        self.conn = conn
        self.fields = fields
        self.changed_only = changed_only
        self.count = 0
        #: Rows left out because none of the ``match_on`` fields had a value.
        self.unmatched = 0
        names = list(fields)
        self._match = [names.index(name) for name in match_on]
        conn.execute(f"DROP TABLE IF EXISTS {DIGESTS}")
        conn.execute(f"CREATE TABLE {DIGESTS} (email TEXT PRIMARY KEY, digest BLOB) WITHOUT ROWID")
        sql = export_sql(fields)
        try:
            conn.execute(f"EXPLAIN {sql}").close()
        except sqlite3.Error as exc:
            raise ListferryError(
                f"the export query failed: {exc} (fields: {', '.join(fields)})"
            ) from None
        self._reader = _Reader(_database_path(conn), sql)
        self._stream = self._batches()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        batch: Batch
        for batch in self._stream:
            for row in batch:
                self.count += 1
                yield row

    def batches(self) -> Iterator[Batch]:
        """The rows, a :class:`Batch` at a time (each row in a batch counts as read)."""
        for batch in self._stream:
            self.count += len(batch)
            yield batch

    def close(self) -> None:
        """Stop reading (the rows not read yet are not in the file): call before closing."""
        self._stream.close()
        self._reader.close()

    def _batches(self) -> Iterator[Batch]:
        digest_of = digester(repr(list(self.fields)))
        changed: list[tuple[str, bytes]] = []
        try:
            match = self._match
            for raw in self._reader.batches():
                batch = []
                for email, last, *values in raw:
                    if match and not any(values[i] not in (None, "") for i in match):
                        self.unmatched += 1  # no id the CRM could match: not sent, not noted
                        continue
                    new = digest_of(values)
                    if new != last:
                        changed.append((email, new))
                    elif self.changed_only:
                        continue
                    batch.append(values)
                self._remember(changed)
                if batch:
                    yield Batch(self.fields, batch)
        except sqlite3.Error as exc:
            raise ListferryError(f"the export query failed: {exc}") from None
        finally:
            self._remember(changed)

    def _remember(self, changed: list[tuple[str, bytes]]) -> None:
        """Keep the batch's changed digests, a few hundred to an ``INSERT``.

        One statement per row stepped SQLite, and handed the GIL to the reader thread
        and back, once per row; with many rows a statement it does so once for them all.
        """
        if not changed:
            return
        self.conn.execute("BEGIN")
        try:
            for start in range(0, len(changed), DIGESTS_PER_INSERT):
                part = changed[start : start + DIGESTS_PER_INSERT]
                self.conn.execute(
                    _insert_digests(len(part)), list(itertools.chain.from_iterable(part))
                )
        finally:
            self.conn.execute("COMMIT")
        changed.clear()


def drop_digests(conn: sqlite3.Connection) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {DIGESTS}")
