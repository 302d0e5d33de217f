"""The select stage: which files at the top of a home are list files ready for a run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from fnmatch import fnmatchcase

from listferry.config import Tenant
from listferry.transport import RemoteFile

COUNT_SUFFIX = "_count.txt"
REPORT_SUFFIX = ".result.txt"


def count_name(list_name: str) -> str:
    """``subscriber_list.csv`` (or ``.csv.gz``, ``.csv.zip``) -> ``subscriber_list_count.txt``."""
    from listferry.reader import plain_name

    name = plain_name(list_name)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return stem + COUNT_SUFFIX


def matches(name: str, pattern: str) -> bool:
    """``name`` matches the tenant's ``pattern`` (case-insensitively), as it is or, for a
    compressed list (``.gz``, ``.zip``), without that ending: ``*.csv`` takes
    ``list.csv.gz`` and ``list.csv.zip``."""
    from listferry.reader import plain_name

    folded = pattern.casefold()
    return fnmatchcase(name.casefold(), folded) or fnmatchcase(plain_name(name).casefold(), folded)


@dataclass(frozen=True)
class Pending:
    """A list file ready for a run, and its count file when one is beside it."""

    list_file: RemoteFile
    count_file: RemoteFile | None


@dataclass(frozen=True)
class Selection:
    """The files to run, oldest first, and the older full lists a newer one supersedes."""

    runs: list[Pending]
    superseded: list[Pending]


def select(
    files: list[RemoteFile],
    tenant: Tenant,
    now: float | None = None,
    earlier: list[RemoteFile] | None = None,
) -> Selection:
    """Pick the tenant's pending list files.

    Files that match the tenant's pattern (ignoring case) and are not count files or
    reports, older
    than ``settle_seconds`` (when it is set: an upload may keep a client's future
    mtime), oldest first. For ``full`` only the newest is run.

    ``earlier`` is a listing of the same home taken a while before ``files`` (a home on
    another server, whose uploads may not be atomic): a list file is then taken only
    when it is stable, that is unchanged in size and time since ``earlier``, or when its
    count file is beside it (the count file is uploaded after the list is complete).
    """
    now = time.time() if now is None else now
    settle = tenant.settle_seconds
    by_name = {f.name: f for f in files}
    before = None if earlier is None else {f.name: f for f in earlier}
    lists = sorted(
        (
            f
            for f in files
            if matches(f.name, tenant.pattern)
            and not f.name.endswith((COUNT_SUFFIX, REPORT_SUFFIX))
            and (not settle or now - f.mtime >= settle)
            and (before is None or before.get(f.name) == f or count_name(f.name) in by_name)
        ),
        key=lambda f: (f.mtime, f.name),
    )
    pending = [Pending(f, by_name.get(count_name(f.name))) for f in lists]
    if tenant.strategy == "full" and len(pending) > 1:
        return Selection(runs=pending[-1:], superseded=pending[:-1])
    return Selection(runs=pending, superseded=[])


def complete(selection: Selection) -> bool:
    """Whether every file of a selection has its count file: no need to wait and look again."""
    return all(p.count_file for p in selection.runs + selection.superseded)
