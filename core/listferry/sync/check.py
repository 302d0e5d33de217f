"""``listferry check``: the verdict a tenant's sync would give one file, with nothing written.

The file goes through the sync's own stages (:mod:`listferry.sync.run`): unpacking, the
reader with the tenant's dialect, the header, record and file checks, the strategy's
plan against the tenant's current list (read-only) and every ``check_plan`` guard. Without
a tenant, the ``[defaults]`` settings stand in for one and the plan is made against an
empty list, so guards that compare with a tenant's list have nothing to compare with.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from listferry.app import settings_digest, tenant_dialect
from listferry.config import Tenant
from listferry.dialect import Dialect
from listferry.errors import Void
from listferry.names import COUNT, LIST, OTHER, REPORT, UNDER_WAY, find_count, kind_of
from listferry.plugins import Host
from listferry.reader import open_list
from listferry.records import FileInfo, Invalid
from listferry.store.database import Store, last_applied, read_only
from listferry.strategy import Plan
from listferry.sync.plan import Overrulable, checked_plan, overrule_hint
from listferry.sync.select import repeat_reason, sha256_of
from listferry.sync.stage import check_file_whole, read_list, unpacked

#: What ``check`` says when it had no tenant's list to plan against.
WITHOUT_TENANT = (
    "checked with the [defaults] settings against an empty list: guards that compare with "
    "a tenant's list (the shrink guard) were left out; give --tenant NAME for its verdict"
)


@dataclass
class CheckResult:
    """The outcome of a dry run, in the shape of ``check --json``."""

    file: str
    tenant: str | None = None
    dialect: str | None = None
    status: str = "ok"
    reason: str | None = None
    hint: str | None = None
    records: int = 0
    invalid: int = 0
    duplicates: int = 0
    columns: dict[str, str | None] = field(default_factory=dict)
    encoding: str | None = None
    delimiter: str | None = None
    invalid_sample: list[Invalid] = field(default_factory=list)
    notes: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    plan: dict[str, int] | None = None
    read_as: Dialect | None = field(default=None, repr=False)
    #: Whether the records were read (not when the file is void at its header).
    read: bool = field(default=False, repr=False)

    def mapping(self) -> list[tuple[str, str | None, str | None]]:
        """``(header, canonical field or None, the dialect's spelling it matched)``, for
        each column the file's records were read by (a second e-mail column refused
        stays out)."""
        if self.read_as is None:
            return []
        return [
            (header, canonical, spelling)
            for header, canonical, spelling in self.read_as.explain_header(list(self.columns))
            if self.columns.get(header) == canonical
        ]

    def opt_out_words(self) -> dict[str, frozenset[str]]:
        """The dialect's ``also_opt_out`` columns the file has, with their words."""
        if self.read_as is None:
            return {}
        header = list(self.columns)
        return {header[i]: words for i, words in self.read_as.also_opt_out_columns(header)}

    def lines(self) -> list[str]:
        """The verdict as ``check`` prints it: counts, the plan, how each header is read,
        the invalid lines, notes and warnings."""
        verdict = "ok" if self.status == "ok" else f"{self.status}: {self.reason}"
        whose = f" (as tenant {self.tenant}'s sync)" if self.tenant else ""
        out = [f"{self.file}: {verdict}{whose}"]
        if self.hint:
            out.append(f"  ({self.hint})")
        if self.status == "skip":
            out.append("  not read: the sync skips a repeat without reading it")
            return out + [f"  warning: {warning}" for warning in self.warnings]
        counts = f"  {self.records} records, {self.invalid} invalid, {self.duplicates} duplicates"
        if not self.read:
            counts = "  records not read: the file is void before them"
        if self.encoding:
            counts += f"; {self.encoding}, delimiter {self.delimiter!r}"
        out.append(counts)
        if self.plan is not None:
            planned = ", ".join(
                f"{n} {what}" for what, n in self.plan.items() if what != "active_before"
            )
            out.append(f"  plan against {self.plan['active_before']} active: {planned}")
        mapping, also = self.mapping(), self.opt_out_words()
        if mapping:
            out.append(f"  columns, as dialect {self.dialect!r} reads them:")
        for header, canonical, spelling in mapping:
            if canonical is None and header in also:
                how = f"kept as fields.{header}, and opts out on {_words(also[header])}"
            elif canonical is None:
                how = f"kept as fields.{header} (the dialect maps no field to this header)"
            elif spelling == header:
                how = f"{canonical} (the dialect's header {spelling!r})"
            else:
                how = f"{canonical} (matches the dialect's {spelling!r})"
            out.append(f"    {header!r} -> {how}")
        if self.read_as is not None:
            missing = [f for f in self.read_as.aliases if f not in self.columns.values()]
            if self.columns and missing:
                out.append(f"  not in the file: {', '.join(missing)}")
            if "opt_out" in self.columns.values():
                out.append(
                    f"  opt-out words: {_words(self.read_as.opt_out_true)} opt out; "
                    f"{_words(self.read_as.opt_out_false)} stay subscribed; any other word "
                    "is invalid"
                )
        out += [f"  line {item.line}: {item.reason}" for item in self.invalid_sample[:20]]
        out += [f"  note: {note}" for note in self.notes]
        out += [f"  warning: {warning}" for warning in self.warnings]
        return out

    def to_json(self) -> dict:
        """The verdict as ``check --json`` prints it."""
        also = self.opt_out_words()
        return {
            "file": self.file,
            "tenant": self.tenant,
            "dialect": self.dialect,
            "status": self.status,
            "reason": self.reason,
            "hint": self.hint,
            "records": self.records,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "columns": self.columns,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "invalid_lines": [{"line": i.line, "reason": i.reason} for i in self.invalid_sample],
            "notes": list(self.notes),
            "warnings": self.warnings,
            "plan": self.plan,
            "mapping": [
                {"header": header, "field": canonical or f"fields.{header}", "matched": spelling}
                | ({"opts_out_on": sorted(also[header])} if header in also else {})
                for header, canonical, spelling in self.mapping()
            ],
        }


def _words(words: frozenset[str]) -> str:
    return ", ".join(repr(w) for w in sorted(words)) or "none"


def check_file(
    host: Host,
    path: Path,
    tenant: Tenant,
    count_file: Path | None = None,
    with_store: bool = True,
) -> CheckResult:
    """The verdict ``tenant``'s sync would give ``path``; nothing is written anywhere.

    ``count_file`` defaults to ``<stem>_count.txt`` beside the file. ``with_store``: plan
    against the tenant's current list (read-only), else against an empty one; and, as
    the sync does before it reads a file, skip a repeat of the last applied file
    (``status`` ``skip``, the file not read).
    """
    if count_file is None:
        count_file = _count_file_beside(path)
    result = CheckResult(
        file=str(path), dialect=tenant.dialect, read_as=tenant_dialect(host, tenant)
    )
    if with_store:
        result.tenant = tenant.name
    else:
        result.warnings.append(WITHOUT_TENANT)
    not_taken = _not_taken(path.name, tenant, with_store)
    if not_taken:
        result.warnings.append(not_taken)
    if tenant.count_file == "required" and count_file is None and tenant.count_file_wait:
        result.warnings.append(
            f"sync leaves the list waiting up to {tenant.count_file_wait} for its count file "
            "before it voids it"
        )
    with tempfile.TemporaryDirectory(prefix="listferry-check-") as folder:
        work = Path(folder)
        conn, store = _list_to_plan_against(tenant, work, with_store)
        try:
            repeat = _repeat(host, tenant, conn, path) if with_store else None
            if repeat:
                result.status, result.reason = "skip", repeat
            else:
                _examine(host, replace(tenant, state_dir=work), conn, path, count_file, result)
        finally:
            conn.close()
            if store is not None:
                store.close()
    return result


def _not_taken(name: str, tenant: Tenant, with_store: bool) -> str | None:
    """Why the sync would never take a file of this name from the home, or ``None``."""
    kind = kind_of(name, tenant.pattern)
    whose = f"tenant {tenant.name}'s" if with_store else "the [defaults]'"
    why = {
        LIST: None,
        COUNT: "it is the name of a count file",
        REPORT: "it is the name of a result report",
        UNDER_WAY: "a hidden name, or a client's temporary ending (.part, .tmp ...), is an "
        "upload still under way",
        OTHER: f"it does not match {whose} pattern {tenant.pattern!r}",
    }[kind]
    return f"sync would not take a file named {name!r} from the home: {why}" if why else None


def _count_file_beside(path: Path) -> Path | None:
    """``<stem>_count.txt`` beside ``path``, its name in any case, as the sync pairs them."""
    try:
        names = [entry.name for entry in os.scandir(path.parent) if entry.is_file()]
    except OSError:
        return None
    found = find_count(path.name, names)
    return path.parent / found if found else None


def _list_to_plan_against(
    tenant: Tenant, work: Path, with_store: bool
) -> tuple[sqlite3.Connection, Store | None]:
    """A read-only connection to the tenant's store, or an empty store in ``work``."""
    if with_store and tenant.database.exists():
        return read_only(tenant.database), None
    store = Store(work / "empty.db")
    return store.conn, store


def _repeat(host: Host, tenant: Tenant, conn: sqlite3.Connection, path: Path) -> str | None:
    """The sync's reason to skip ``path`` unread as a repeat of the last applied file."""
    try:
        last = last_applied(conn)
    except sqlite3.Error:  # an empty store: no run yet
        return None
    return repeat_reason(last, sha256_of(path), settings_digest(host, tenant))


def _examine(
    host: Host,
    tenant: Tenant,
    conn: sqlite3.Connection,
    path: Path,
    count_file: Path | None,
    result: CheckResult,
) -> None:
    """Run the sync's stages on ``path`` and fill ``result`` with what they found."""
    info: FileInfo | None = None
    try:
        local = tenant.state_dir / path.name
        local.symlink_to(path.resolve())
        source, name = unpacked(tenant, local, path.name)
        try:
            info, staged = read_list(host, tenant, conn, source, name, count_file)
        finally:
            if info is None:
                _describe_header(host, tenant, source, name, result)
        result.columns, result.notes = info.columns, info.notes
        result.warnings.extend(info.warnings)
        result.encoding, result.delimiter = info.encoding, info.delimiter
        result.read = True
        result.records, result.invalid = staged.received, staged.invalid
        result.duplicates, result.invalid_sample = staged.duplicates, staged.invalid_sample
        check_file_whole(host, info)
        active = conn.execute("SELECT count(*) FROM subscribers WHERE status = 'active'")
        plan: Plan = checked_plan(host, tenant, conn, staged, active.fetchone()[0])
        if result.tenant is not None:  # against an empty list, a plan says nothing
            result.plan = {k: v for k, v in plan.counts().items() if k not in _FILE_COUNTS}
    except Void as exc:
        result.status, result.reason = "void", str(exc)
        if isinstance(exc, Overrulable):
            result.hint = overrule_hint(tenant)
    finally:
        conn.execute("DROP TABLE IF EXISTS temp.incoming")
        conn.execute("DROP TABLE IF EXISTS temp.plan")


#: Counts of the file itself, which ``check`` shows on their own.
_FILE_COUNTS = frozenset({"received", "invalid", "duplicates"})


def _describe_header(
    host: Host, tenant: Tenant, source: Path, name: str, result: CheckResult
) -> None:
    """The columns of a file voided at its header, so ``check`` can still show them."""
    dialect = tenant_dialect(host, tenant)
    try:
        with open_list(host.readers, source, name, dialect) as opened:
            info = opened.info
    except (Void, OSError):
        return
    result.columns, result.notes = info.columns, info.notes
    result.warnings.extend(info.warnings)
    result.encoding, result.delimiter = info.encoding, info.delimiter
