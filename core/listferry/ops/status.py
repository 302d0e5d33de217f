"""What an operator asks each morning: each tenant's last run, list, files and next run.

``listferry status`` and the daily digest read the same facts, from each tenant's
store (read-only: a tenant that never ran has no store yet) and its home.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from listferry.config import Config, Tenant, duration_seconds
from listferry.config.schedule import Schedule, ScheduleError
from listferry.errors import ListferryError
from listferry.names import COUNT, LIST, OTHER, count_name, kind_of
from listferry.runs import PROBLEMS
from listferry.store.database import (
    StoreError,
    checked_since_change,
    quick_check,
    sightings,
    store_error,
)
from listferry.times import iso

ISO = "%Y-%m-%dT%H:%M:%SZ"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass
class TenantStatus:
    """One line of ``status``; its fields are the ``status --json`` keys.

    ``last_*`` describe the last attempt, whatever it ended as (a home that could not be
    reached is a ``failed`` run too); ``last_applied_*`` the list in use, and
    ``failing_since`` when the attempts after it began to fail. ``looked_at`` is when a
    sync last listed the home, even if it found nothing; ``added_at`` when listferry
    first kept the tenant. ``waiting`` are list files waiting for their count file
    (:func:`waiting_for_count_files`), ``ignored`` files in the home that no list pattern
    takes (a misnamed upload).
    """

    tenant: str
    last_run: int | None = None
    last_status: str | None = None
    last_file: str | None = None
    last_run_at: str | None = None
    last_reason: str | None = None
    subscribers: int | None = None
    unsubscribed: int | None = None
    pending: int | None = None
    last_export: str | None = None
    last_export_at: str | None = None
    next_sync: str | None = None
    next_export: str | None = None
    last_applied_run: int | None = None
    last_applied_file: str | None = None
    last_applied_at: str | None = None
    days_since_applied: float | None = None
    failing_since: str | None = None
    last_file_at: str | None = None
    looked_at: str | None = None
    added_at: str | None = None
    waiting: list[dict[str, str | None]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    silent: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def open_read_only(database: Path) -> sqlite3.Connection | None:
    if not database.exists():
        return None
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    conn.execute("PRAGMA query_only = 1")
    return conn


@dataclass(frozen=True)
class HomeFiles:
    """The files at the top of a local home: list files (name, mtime, size) oldest first,
    count files (their names case-folded), and the files no list pattern takes."""

    lists: list[tuple[str, float, int]]
    counts: frozenset[str]
    ignored: list[str]


def home_files(tenant: Tenant) -> HomeFiles | None:
    """What lies at the top of a local home (``None`` for a remote or missing home)."""
    if not tenant.is_local:
        return None
    try:
        entries = [e for e in os.scandir(tenant.home) if e.is_file(follow_symlinks=False)]
    except OSError:
        return None
    lists: list[tuple[str, float, int]] = []
    counts: set[str] = set()
    ignored: list[str] = []
    for entry in entries:
        name = entry.name
        kind = kind_of(name, tenant.pattern)
        if kind == COUNT:
            counts.add(name.casefold())
        elif kind == LIST:
            stat = entry.stat(follow_symlinks=False)
            lists.append((name, stat.st_mtime, stat.st_size))
        elif kind == OTHER:
            ignored.append(name)
    lists.sort(key=lambda item: (item[1], item[0]))
    return HomeFiles(lists, frozenset(counts), sorted(ignored))


def pending_files(tenant: Tenant) -> int | None:
    """List files waiting at the top of a local home (``None`` for a remote home)."""
    found = home_files(tenant)
    return None if found is None else len(found.lists)


def waiting_for_count_files(
    tenant: Tenant,
    found: HomeFiles | None,
    seen: dict[str, tuple[int, float, float]],
    looked_at: str | None,
) -> list[dict[str, str | None]]:
    """The lists that wait for their required count file: ``file``, ``since`` and ``until``.

    A local home is listed now: a list no sync has seen as it is now (``seen``, from the
    store) waits too, "not yet looked at" (``since`` and ``until`` null): its wait starts
    when a sync sees it. A home on a customer's server cannot be listed here: these are
    the lists the last sync saw waiting, ``as_of`` when it looked.
    """
    if tenant.count_file != "required":
        return []
    wait = duration_seconds(tenant.count_file_wait) if tenant.count_file_wait else 0

    def entry(name: str, first: float | None, as_of: str | None = None) -> dict[str, str | None]:
        since = None if first is None else iso(first)
        until = None if first is None else iso(first + wait)
        return {"file": name, "since": since, "until": until, "as_of": as_of}

    if found is not None:
        out = []
        for name, mtime, size in found.lists:
            if count_name(name).casefold() in found.counts:
                continue
            size_then, mtime_then, first = seen.get(name, (None, None, None))
            out.append(entry(name, first if (size_then, mtime_then) == (size, mtime) else None))
        return out
    looked = parse_time(looked_at)
    if tenant.is_local or looked is None:
        return []
    return [  # a list voided by that sync (its wait was over) is no longer there
        entry(name, first, looked_at)
        for name, (_size, _mtime, first) in sorted(seen.items(), key=lambda item: item[1][2])
        if first + wait > looked.timestamp()
    ]


def _read_store(status: TenantStatus, conn: sqlite3.Connection, now: datetime) -> dict:
    """Fill ``status`` from the tenant's store; return its :func:`sightings`."""
    row = conn.execute(
        "SELECT id, status, file, started_at, reason FROM runs ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row:
        status.last_run, status.last_status, status.last_file = row[0], row[1], row[2]
        status.last_run_at, status.last_reason = row[3], row[4]
    counts = dict(conn.execute("SELECT status, count(*) FROM subscribers GROUP BY status"))
    status.subscribers = counts.get("active", 0)
    status.unsubscribed = counts.get("unsubscribed", 0)
    applied = conn.execute(
        "SELECT id, file, started_at FROM runs WHERE status = 'applied' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if applied:
        status.last_applied_run, status.last_applied_file, status.last_applied_at = applied
        age = now - parse_time(applied[2])  # type: ignore[operator]
        status.days_since_applied = round(age.total_seconds() / 86400, 1)
    if status.last_status in PROBLEMS:
        status.failing_since = conn.execute(
            "SELECT min(started_at) FROM runs WHERE id > ? AND status IN ('voided', 'failed')",
            (status.last_applied_run or 0,),
        ).fetchone()[0]
    status.last_file_at = conn.execute(
        "SELECT max(started_at) FROM runs WHERE file IS NOT NULL"
    ).fetchone()[0]
    export = conn.execute(
        "SELECT file, finished_at FROM exports ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if export:
        status.last_export, status.last_export_at = export
    if conn.execute("PRAGMA user_version").fetchone()[0] < 3:
        return {}  # a store from before listferry kept these: the next run adds them
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    status.looked_at, status.added_at = meta.get("looked_at"), meta.get("created_at")
    return sightings(conn)


def added_at(tenant: Tenant) -> str | None:
    """When a tenant without a store yet was added: the time of its state folder (made by
    ``tenant add``), else of its home."""
    for folder in (tenant.state_dir, Path(tenant.home) if tenant.is_local else None):
        try:
            if folder is not None:
                return datetime.fromtimestamp(folder.stat().st_mtime, UTC).strftime(ISO)
        except (OSError, ValueError):
            continue
    return None


def tenant_status(tenant: Tenant, now: datetime) -> TenantStatus:
    """The facts of one tenant at ``now``; a store that cannot be read is in ``error``."""
    found = home_files(tenant)
    status = TenantStatus(tenant.name, pending=None if found is None else len(found.lists))
    status.ignored = found.ignored if found else []
    _next_times(status, tenant, now)
    seen: dict[str, tuple[int, float, float]] = {}
    try:
        conn = open_read_only(tenant.database)
    except sqlite3.Error as exc:
        status.error = str(store_error(tenant.database, exc, "cannot be read"))
        conn = None
    if conn is not None:
        try:
            with conn:
                if not checked_since_change(tenant.database):  # changed by no run of ours
                    quick_check(conn, tenant.database)
                seen = _read_store(status, conn, now)
        except StoreError as exc:
            status.error = str(exc)
        except sqlite3.Error as exc:
            status.error = str(store_error(tenant.database, exc, "cannot be read"))
        finally:
            conn.close()
    elif status.error is None:
        status.added_at = added_at(tenant)
    status.waiting = waiting_for_count_files(tenant, found, seen, status.looked_at)
    since = parse_time(status.last_file_at) or parse_time(status.added_at)
    status.silent = _silent(tenant, since, now)
    return status


def _silent(tenant: Tenant, since: datetime | None, now: datetime) -> bool:
    """No file for longer than ``expect_file_within``, counted from the last file or, for
    a tenant that never sent one, from when it was added."""
    if not tenant.expect_file_within or since is None:
        return False
    return now - since > timedelta(seconds=duration_seconds(tenant.expect_file_within))


def statuses(config: Config, now: datetime | None = None) -> list[TenantStatus]:
    moment = now or datetime.now(UTC)
    if config.cluster is not None:
        return cluster_statuses(config, moment)
    return [tenant_status(tenant, moment) for tenant in config.tenants.values()]


def _next_times(status: TenantStatus, tenant: Tenant, now: datetime) -> None:
    for kind, text in (("next_sync", tenant.schedule), ("next_export", tenant.export_schedule)):
        if text:
            try:
                due = Schedule.parse(text, tenant.timezone).next_after(now)
                setattr(status, kind, due.strftime(ISO))
            except ScheduleError:
                pass


def _from_index(status: TenantStatus, runs: list[Any], now: datetime) -> None:
    """Fill ``status``'s run facts from the tenant's indexed runs, newest first."""
    if not runs:
        return
    last = runs[0]
    status.last_run, status.last_status, status.last_file = last.run_id, last.status, last.file
    status.last_run_at, status.last_reason = last.started_at, last.reason
    applied = next((run for run in runs if run.status == "applied"), None)
    if applied is not None:
        status.last_applied_run, status.last_applied_file = applied.run_id, applied.file
        status.last_applied_at = applied.started_at
        age = now - parse_time(applied.started_at)  # type: ignore[operator]
        status.days_since_applied = round(age.total_seconds() / 86400, 1)
    if status.last_status in PROBLEMS:
        after = runs[: runs.index(applied)] if applied is not None else runs
        status.failing_since = min(
            (run.started_at for run in after if run.status in PROBLEMS), default=None
        )
    status.last_file_at = max((run.started_at for run in runs if run.file), default=None)


def cluster_statuses(config: Config, now: datetime) -> list[TenantStatus]:
    """The facts of every tenant in cluster mode, from the cluster's database (the runs
    index, the store pointers' counts) and one listing of the homes in storage: no store
    is downloaded. Count-file waits and ``looked_at`` are not kept there yet
    (docs/cluster.md)."""
    from listferry.cluster.database import connect
    from listferry.cluster.runs import tenant_runs
    from listferry.cluster.storage import Storage

    assert config.cluster is not None and config.storage is not None
    out = [TenantStatus(name) for name in config.tenants]
    homes: dict[str, list[str]] | None = None
    storage = Storage(config.storage.url, config.storage.endpoint_url, config.storage.region)
    try:
        homes = {}
        for item in storage.list("homes"):
            name, _, rest = item.key.removeprefix("homes/").partition("/")
            if rest and "/" not in rest:
                homes.setdefault(name, []).append(rest)
    except ListferryError as exc:
        for status in out:
            status.error = str(exc)
    with connect(config.cluster.database) as conn:
        counts = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT tenant, subscribers, unsubscribed, last_export->>'file', "
                "last_export->>'finished_at' FROM listferry_stores"
            ).fetchall()
        }
        for status in out:
            tenant = config.tenants[status.tenant]
            _next_times(status, tenant, now)
            _from_index(status, tenant_runs(conn, tenant.name, 500, undone=False), now)
            (
                status.subscribers,
                status.unsubscribed,
                status.last_export,
                status.last_export_at,
            ) = counts.get(tenant.name, (None, None, None, None))
            if homes is not None:
                files = homes.get(tenant.name, [])
                kinds = [(name, kind_of(name, tenant.pattern)) for name in files]
                status.pending = sum(1 for _, kind in kinds if kind == LIST)
                status.ignored = sorted(name for name, kind in kinds if kind == OTHER)
            since = parse_time(status.last_file_at)
            status.silent = _silent(tenant, since, now)
    return out
