"""Retention: the archive of a tenant's list files is trimmed after each sync and replay.

Each run that archived a file has one or two files in ``state/NAME/archive`` (the list
and its count file), named ``<run id, 6 digits>-<sha256, 12>-<name>``. A run's files
stay while both limits keep them: the run is among the newest ``archive_keep_runs`` runs
that archived a file, and it ended no more than ``archive_keep_days`` days ago (by the
store's clock: a file's own time may be the customer's). When either says no, they are
trimmed; 0 turns a limit off. The last applied run's files always stay (the list the
tenant's subscribers come from). The store's run records stay whole, reports included:
``runs`` lists every run, and ``replay`` of a trimmed run says its file was trimmed.
The result reports in the home are kept to ``keep_reports`` as each is written.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from pathlib import Path

from listferry.config import Tenant
from listferry.store.database import Store
from listferry.times import parse_iso

log = logging.getLogger("listferry")

_ARCHIVED = re.compile(r"(\d{6,})-(?:[0-9a-f]{12}|unread)-")
DAY = 86400.0


def archived_runs(archive: Path) -> dict[int, list[Path]]:
    """The archive's files by the run that archived them."""
    runs: dict[int, list[Path]] = {}
    try:
        entries = list(os.scandir(archive))
    except FileNotFoundError:
        return runs
    except OSError as exc:
        log.warning("%s: the archive was not trimmed: %s", archive, exc.strerror or exc)
        return runs
    for entry in entries:
        found = _ARCHIVED.match(entry.name)
        if found and entry.is_file(follow_symlinks=False):
            run_id = int(found.group(1))
            runs.setdefault(run_id, []).append(Path(entry.path))
    return runs


def trim_archive(tenant: Tenant, store: Store) -> tuple[int, list[int]]:
    """Remove the archived files past the tenant's limits; (files removed, their runs).
    One log line says what was trimmed."""
    runs = archived_runs(tenant.state_dir / "archive")
    trimmed = runs_to_trim(tenant, store, {run: _mtime(files) for run, files in runs.items()})
    removed = 0
    for run_id in trimmed:
        for path in runs[run_id]:
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("%s: could not trim %s: %s", tenant.name, path.name, exc.strerror)
    said_trimmed(tenant, removed, trimmed)
    return removed, trimmed


def runs_to_trim(tenant: Tenant, store: Store, archived: dict[int, float]) -> list[int]:
    """Which of the runs in ``archived`` (run id: when its files were written, for a run
    the store does not know) are past the tenant's limits, in order."""
    keep_runs, keep_days = tenant.archive_keep_runs, tenant.archive_keep_days
    if not archived or (not keep_runs and not keep_days):
        return []
    try:  # housekeeping: a store that cannot say leaves the archive as it is
        last = store.last_applied()
        last_applied = last.run_id if last else None
        ended = dict(
            store.conn.execute(
                "SELECT id, COALESCE(finished_at, started_at) FROM runs WHERE id >= ?",
                (min(archived),),
            ).fetchall()
        )
    except sqlite3.Error as exc:
        log.warning("%s: the archive was not trimmed: %s", tenant.name, exc)
        return []
    cutoff = time.time() - keep_days * DAY
    trimmed: list[int] = []
    for place, run_id in enumerate(sorted(archived, reverse=True)):
        if run_id == last_applied:
            continue
        too_many = bool(keep_runs) and place >= keep_runs
        too_old = bool(keep_days) and _ended(ended.get(run_id), archived[run_id]) < cutoff
        if too_many or too_old:
            trimmed.append(run_id)
    return sorted(trimmed)


def said_trimmed(tenant: Tenant, removed: int, trimmed: list[int]) -> None:
    """The one log line of a trim."""
    if trimmed:
        log.info(
            "%s: archive trimmed: %d file(s) of %d run(s) (runs %s), keeping %s",
            tenant.name,
            removed,
            len(trimmed),
            _ranges(trimmed),
            _limits(tenant.archive_keep_runs, tenant.archive_keep_days),
        )


def run_of(name: str) -> int | None:
    """The run that archived a file, by its archived name; ``None`` for another file."""
    found = _ARCHIVED.match(name)
    return int(found.group(1)) if found else None


def _mtime(files: list[Path]) -> float:
    try:
        return max(path.stat().st_mtime for path in files)
    except OSError:
        return 0.0


def _ended(when: str | None, written: float) -> float:
    """When a run ended, by the store; by when its files were written for a run it does
    not know."""
    try:
        moment = parse_iso(when)
    except ValueError:
        moment = None
    return moment.timestamp() if moment is not None else written


def _limits(keep_runs: int, keep_days: int) -> str:
    said = [f"the newest {keep_runs} runs"] if keep_runs else []
    said += [f"{keep_days} days"] if keep_days else []
    return " within ".join(said)


def _ranges(ids: list[int]) -> str:
    """``1-25, 27``: run ids as ranges."""
    spans: list[list[int]] = []
    for run_id in ids:
        if spans and run_id == spans[-1][1] + 1:
            spans[-1][1] = run_id
        else:
            spans.append([run_id, run_id])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
