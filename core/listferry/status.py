"""What an operator asks each morning: each tenant's last run, list, files and next run.

``listferry status`` and the daily digest read the same facts, from each tenant's
store (read-only: a tenant that never ran has no store yet) and its home.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from listferry.config import Config, Tenant, duration_seconds
from listferry.pending import matches
from listferry.schedule import Schedule, ScheduleError

ISO = "%Y-%m-%dT%H:%M:%SZ"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass
class TenantStatus:
    """One line of ``status``; its fields are the ``status --json`` keys."""

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
    last_applied_at: str | None = None
    days_since_applied: float | None = None
    last_file_at: str | None = None
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


def pending_files(tenant: Tenant) -> int | None:
    """List files waiting at the top of a local home (``None`` for a remote home)."""
    if not tenant.is_local:
        return None
    home = Path(tenant.home)
    try:
        names = [entry.name for entry in home.iterdir() if entry.is_file()]
    except OSError:
        return None
    return sum(
        1
        for name in names
        if not name.startswith(".")
        and matches(name, tenant.pattern)
        and not name.lower().endswith("_count.txt")
    )


def tenant_status(tenant: Tenant, now: datetime) -> TenantStatus:
    """The facts of one tenant at ``now``; a store that cannot be read is in ``error``."""
    status = TenantStatus(tenant.name, pending=pending_files(tenant))
    for kind, text in (("next_sync", tenant.schedule), ("next_export", tenant.export_schedule)):
        if text:
            try:
                due = Schedule.parse(text, tenant.timezone).next_after(now)
                setattr(status, kind, due.strftime(ISO))
            except ScheduleError:
                pass
    try:
        conn = open_read_only(tenant.database)
    except sqlite3.Error as exc:
        status.error = f"{tenant.database}: {exc}"
        return status
    if conn is None:
        status.silent = _silent(tenant, None, now)
        return status
    try:
        with conn:
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
                "SELECT max(started_at) FROM runs WHERE status = 'applied'"
            ).fetchone()[0]
            status.last_applied_at = applied
            if applied:
                age = now - parse_time(applied)  # type: ignore[operator]
                status.days_since_applied = round(age.total_seconds() / 86400, 1)
            status.last_file_at = conn.execute(
                "SELECT max(started_at) FROM runs WHERE file IS NOT NULL"
            ).fetchone()[0]
            export = conn.execute(
                "SELECT file, finished_at FROM exports ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if export:
                status.last_export, status.last_export_at = export
    except sqlite3.Error as exc:
        status.error = f"{tenant.database}: {exc}"
    finally:
        conn.close()
    status.silent = _silent(tenant, parse_time(status.last_file_at), now)
    return status


def _silent(tenant: Tenant, last_file: datetime | None, now: datetime) -> bool:
    """No file for longer than ``expect_file_within`` (a tenant never heard from counts
    from the day its home was made)."""
    if not tenant.expect_file_within:
        return False
    limit = timedelta(seconds=duration_seconds(tenant.expect_file_within))
    if last_file is None:
        try:
            since = datetime.fromtimestamp(Path(tenant.home).stat().st_mtime, UTC)
        except (OSError, ValueError):
            return False
        return tenant.is_local and now - since > limit
    return now - last_file > limit


def statuses(config: Config, now: datetime | None = None) -> list[TenantStatus]:
    moment = now or datetime.now(UTC)
    return [tenant_status(tenant, moment) for tenant in config.tenants.values()]
