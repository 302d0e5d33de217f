"""The select stage: which files at the top of a home are list files ready for a run."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from listferry.config import Tenant
from listferry.names import COUNT, LIST, count_name, kind_of
from listferry.store.database import LastApplied
from listferry.transport import RemoteFile


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
    reports, older than ``settle_seconds`` (when it is set: an upload may keep a client's
    future mtime), oldest first, each with its count file (its name in any case). For
    ``full`` only the newest is run.

    ``earlier`` is a listing of the same home taken a while before ``files`` (a home on
    another server, whose uploads may not be atomic): a list file is then taken only
    when it is stable, that is unchanged in size and time since ``earlier``, or when its
    count file is beside it (the count file is uploaded after the list is complete).
    """
    now = time.time() if now is None else now
    settle = tenant.settle_seconds
    counts = {f.name: f for f in files if kind_of(f.name, tenant.pattern) == COUNT}
    by_case = {name.casefold(): f for name, f in sorted(counts.items(), reverse=True)}

    def count_of(name: str) -> RemoteFile | None:  # ``X.CSV``'s is ``X_COUNT.TXT`` too
        wanted = count_name(name)
        return counts.get(wanted) or by_case.get(wanted.casefold())

    before = None if earlier is None else {f.name: f for f in earlier}
    lists = sorted(
        (
            f
            for f in files
            if kind_of(f.name, tenant.pattern) == LIST
            and (not settle or now - f.mtime >= settle)
            and (before is None or before.get(f.name) == f or count_of(f.name) is not None)
        ),
        key=lambda f: (f.mtime, f.name),
    )
    pending = [Pending(f, count_of(f.name)) for f in lists]
    if tenant.strategy == "full" and len(pending) > 1:
        return Selection(runs=pending[-1:], superseded=pending[:-1])
    return Selection(runs=pending, superseded=[])


def complete(selection: Selection) -> bool:
    """Whether every file of a selection has its count file: no need to wait and look again."""
    return all(p.count_file for p in selection.runs + selection.superseded)


def sha256_of(path: Path, check: Callable[[], None] | None = None) -> str:
    """The file's SHA-256, read 1 MiB at a time; ``check`` (a deadline) is called before
    each read and may raise to stop."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while True:
            if check is not None:
                check()
            chunk = f.read(1 << 20)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)


def repeat_reason(last: LastApplied | None, sha256: str, digest: str) -> str | None:
    """Why a file is skipped as a repeat, or ``None``: the same content as the tenant's
    last applied file, read the same way (a run from before settings digests were kept
    counts as read the same way)."""
    if last is None or last.sha256 != sha256 or last.settings_digest not in (None, digest):
        return None
    return f"the same content as the last applied file (run {last.run_id})"
