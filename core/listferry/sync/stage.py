"""The read stage: a list file's records into a temporary table, checked a batch at a time.

The staged rows live in ``temp.incoming`` on the tenant's connection: SQLite keeps
them in a temporary file, not in the store and not in Python memory, so a file of
millions of rows costs one batch of Python objects at a time.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from listferry.app import tenant_dialect
from listferry.config import DEFAULTS_NAME, Tenant
from listferry.errors import Void
from listferry.fields import sql_text
from listferry.names import decrypted_name, is_encrypted
from listferry.pgp import decrypt
from listferry.plugins import Host
from listferry.reader import RecordSource, open_list
from listferry.records import FileInfo, Invalid

#: How many invalid rows and duplicate addresses the report lists by line.
SAMPLE = 1000

TEXT_COLUMNS = ("first_name", "last_name", "segment_code")

#: SQLite takes at most 127 arguments to a function: a file with more extra columns than
#: one ``json_object`` call holds has its ``fields`` made in Python.
JSON_OBJECT_PAIRS = 63


@dataclass
class Staged:
    """What the read stage leaves for planning: counts, samples, and the staged table."""

    columns: frozenset[str]
    has_fields: bool
    received: int = 0
    invalid: int = 0
    duplicates: int = 0
    invalid_sample: list[Invalid] = field(default_factory=list)
    duplicate_sample: list[tuple[str, str]] = field(default_factory=list)

    @property
    def present(self) -> tuple[str, ...]:
        """The subscriber columns this file sets (``fields`` when it has extra columns)."""
        cols = tuple(c for c in TEXT_COLUMNS if c in self.columns)
        return (*cols, "fields") if self.has_fields else cols


def _insert_sql(extra_columns: tuple[str, ...]) -> str:
    if len(extra_columns) > JSON_OBJECT_PAIRS:
        fields_sql = "json(?7)"
    elif extra_columns:
        order = sorted(range(len(extra_columns)), key=lambda i: extra_columns[i])
        pairs = ", ".join(f"{sql_text(extra_columns[i])}, ?{7 + i}" for i in order)
        fields_sql = f"json_object({pairs})"
    else:
        fields_sql = "NULL"
    return f"INSERT INTO temp.incoming VALUES (?1, ?2, ?3, ?4, ?5, ?6, {fields_sql})"


def stage(
    conn: sqlite3.Connection,
    source: RecordSource,
    info: FileInfo,
    validate_records: Callable[..., list],
    progress: Callable[[int], None] | None = None,
) -> Staged:
    """Read every record of ``source`` into ``temp.incoming``; return the counts.

    ``validate_records`` is the hook caller; it sees each batch once. Rows it rejects
    are counted invalid and never staged. When an address appears more than once, its
    last row wins and the earlier ones are counted as duplicates.
    """
    conn.execute("DROP TABLE IF EXISTS temp.incoming")
    conn.execute(
        "CREATE TEMP TABLE incoming (line INTEGER, email TEXT, first_name TEXT, "
        "last_name TEXT, segment_code TEXT, opt_out INTEGER, fields TEXT)"
    )
    staged = Staged(columns=info.canonical, has_fields=bool(info.extra_columns))
    insert = _insert_sql(info.extra_columns)
    wide = len(info.extra_columns) > JSON_OBJECT_PAIRS
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode
    conn.execute("BEGIN")
    try:
        for records, rejected in source.batches():
            found = {}
            for reasons in validate_records(records=records, file=info):
                for invalid in reasons or ():
                    found.setdefault(invalid.line, invalid)  # one reason per record
            if found:
                records = [r for r in records if r.line not in found]
            bad = [*rejected, *found.values()]
            if wide:
                rows = [
                    (*r[:6], dumps(dict(zip(info.extra_columns, r.extra, strict=True))))
                    for r in records
                ]
            else:
                rows = [r[:6] + r.extra for r in records]
            conn.executemany(insert, rows)
            staged.invalid += len(bad)
            room = SAMPLE - len(staged.invalid_sample)
            if room > 0:
                staged.invalid_sample.extend(sorted(bad)[:room])
            if progress:
                progress(source.bytes_read)
        try:  # the common case, and the cheapest proof that no address repeats
            conn.execute("CREATE UNIQUE INDEX temp.incoming_email ON incoming (email)")
        except sqlite3.IntegrityError:
            conn.execute("CREATE INDEX temp.incoming_email ON incoming (email)")
            _drop_duplicates(conn, staged)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (a full disk)
            conn.execute("ROLLBACK")
        raise
    staged.received = source.records_read
    return staged


def _drop_duplicates(conn: sqlite3.Connection, staged: Staged) -> None:
    total, distinct = conn.execute(
        "SELECT count(*), count(DISTINCT email) FROM temp.incoming"
    ).fetchone()
    staged.duplicates = total - distinct
    staged.duplicate_sample = conn.execute(
        "SELECT email, group_concat(line, ', ') FROM temp.incoming GROUP BY email "
        "HAVING count(*) > 1 ORDER BY min(line) LIMIT ?",
        (SAMPLE,),
    ).fetchall()
    conn.execute(
        "DELETE FROM temp.incoming WHERE rowid NOT IN "
        "(SELECT max(rowid) FROM temp.incoming GROUP BY email)"
    )


def void_if(reasons: list[str | None], error: type[Void] = Void) -> None:
    found = [reason for reason in reasons if reason]
    if found:
        raise error("; ".join(found))


def unpacked(tenant: Tenant, local: Path, name: str) -> tuple[Path, str]:
    """The list to read and its name: ``local`` itself, or for an encrypted list its
    plaintext, decrypted into ``decrypted/`` beside it (removed with that folder)."""
    if not is_encrypted(name):
        return local, name
    plain = decrypted_name(name)
    source = local.parent / "decrypted" / plain
    decrypt(tenant, local, source, name)
    return source, plain


def read_list(
    host: Host,
    tenant: Tenant,
    conn: sqlite3.Connection,
    path: Path,
    name: str,
    count: Path | None,
    progress: Callable[[int], None] | None = None,
) -> tuple[FileInfo, Staged]:
    """Read ``path`` (received as ``name``) with the tenant's dialect into ``temp.incoming``.

    The header checks and the record checks run here; a header that fails voids. The
    count file is checked with the whole file (:func:`check_file_whole`), once the
    records are counted.
    """
    dialect = tenant_dialect(host, tenant)
    with open_list(host.readers, path, name, dialect) as source:
        by = "the [defaults]" if tenant.name == DEFAULTS_NAME else "this tenant"
        info = replace(
            source.info, count_file=count, count_policy=tenant.count_file, count_policy_by=by
        )
        void_if(host.hook.validate_header(file=info))
        staged = stage(conn, source, info, host.hook.validate_records, progress)
    return replace(info, records=staged.received, invalid=staged.invalid), staged


def check_file_whole(host: Host, info: FileInfo) -> None:
    """The checks of the whole file (count file, no records); one that fails voids."""
    void_if(host.hook.validate_file(file=info))
