"""``listferry check``: read and validate one file with no tenant, as a dry run."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path

from listferry.errors import Void
from listferry.pending import count_name
from listferry.plugins import Host
from listferry.records import FileInfo, Invalid
from listferry.staging import stage


@dataclass
class CheckResult:
    """The outcome of a dry run, in the shape of ``check --json``."""

    file: str
    status: str = "ok"
    reason: str | None = None
    records: int = 0
    invalid: int = 0
    duplicates: int = 0
    columns: dict[str, str | None] = field(default_factory=dict)
    encoding: str | None = None
    delimiter: str | None = None
    invalid_sample: list[Invalid] = field(default_factory=list)
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {
            "file": self.file,
            "status": self.status,
            "reason": self.reason,
            "records": self.records,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "columns": self.columns,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "invalid_lines": [{"line": i.line, "reason": i.reason} for i in self.invalid_sample],
            "notes": list(self.notes),
        }


def check_file(host: Host, path: Path, dialect_name: str, count_file: Path | None) -> CheckResult:
    """Read ``path`` with the dialect and run the header, record and file checks."""
    dialect = host.dialects.get(dialect_name)
    reader = host.readers.get(dialect.reader)
    if count_file is None and (path.parent / count_name(path.name)).exists():
        count_file = path.parent / count_name(path.name)
    result = CheckResult(file=str(path))
    conn = sqlite3.connect("", isolation_level=None)
    info: FileInfo | None = None
    try:
        with reader.open(path, path.name, dialect) as source:
            info = replace(
                source.info,
                count_file=count_file,
                count_policy="required" if count_file else "optional",
            )
            result.columns, result.notes = info.columns, info.notes
            result.encoding, result.delimiter = info.encoding, info.delimiter
            reasons = [r for r in host.hook.validate_header(file=info) if r]
            if reasons:
                raise Void("; ".join(reasons))
            staged = stage(conn, source, info, host.hook.validate_records)
        result.records, result.invalid = staged.received, staged.invalid
        result.duplicates, result.invalid_sample = staged.duplicates, staged.invalid_sample
        info = replace(info, records=staged.received, invalid=staged.invalid)
        reasons = [r for r in host.hook.validate_file(file=info) if r]
        if reasons:
            raise Void("; ".join(reasons))
    except Void as exc:
        result.status, result.reason = "void", str(exc)
    finally:
        conn.close()
    return result
