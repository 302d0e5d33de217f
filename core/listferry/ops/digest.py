"""The daily digest: what every tenant's runs did in the last day, and who went silent.

"No file for 3 nights" is the failure nobody notices: no run fails, nothing is voided,
the list just grows old. The digest names each tenant whose last file is older than
its ``expect_file_within``, beside those that applied, were voided or failed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from listferry.config import Config
from listferry.ops.status import TenantStatus, open_read_only, tenant_status
from listferry.runs import PROBLEMS
from listferry.text import visible
from listferry.times import iso


@dataclass
class TenantDay:
    """One tenant's runs in the digest's window, and its status now."""

    status: TenantStatus
    runs: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.status.tenant,
            "runs": self.runs,
            "problems": self.problems,
            "silent": self.status.silent,
            "last_file_at": self.status.last_file_at,
            "subscribers": self.status.subscribers,
        }


@dataclass
class Digest:
    since: datetime
    until: datetime
    tenants: list[TenantDay]

    def group(self, outcome: str) -> list[TenantDay]:
        return [day for day in self.tenants if day.runs.get(outcome)]

    @property
    def silent(self) -> list[TenantDay]:
        return [day for day in self.tenants if day.status.silent]

    def to_json(self) -> dict[str, Any]:
        return {
            "since": iso(self.since),
            "until": iso(self.until),
            "applied": [d.status.tenant for d in self.group("applied")],
            "voided": [d.status.tenant for d in self.group("voided")],
            "failed": [d.status.tenant for d in self.group("failed")],
            "silent": [d.status.tenant for d in self.silent],
            "tenants": [d.to_json() for d in self.tenants],
        }

    def subject(self) -> str:
        bad = len(self.group("voided")) + len(self.group("failed")) + len(self.silent)
        head = f"{bad} need(s) a look" if bad else "all well"
        return f"listferry digest {self.until:%Y-%m-%d}: {head}"

    def text(self) -> str:
        lines = [f"listferry, {iso(self.since)} to {iso(self.until)}", ""]
        sections = (
            ("Failed", self.group("failed")),
            ("Voided", self.group("voided")),
            ("No file for longer than expected", self.silent),
            ("Applied", self.group("applied")),
        )
        for title, days in sections:
            lines.append(f"{title} ({len(days)}):")
            for day in days:
                lines.append(f"  {day.status.tenant}: {_detail(title, day)}")
            if not days:
                lines.append("  none")
            lines.append("")
        quiet = [d for d in self.tenants if not d.runs and not d.status.silent and not d.problems]
        if quiet:
            lines.append(
                f"No file in this window, within their interval: "
                f"{', '.join(d.status.tenant for d in quiet)}"
            )
        return "\n".join(map(visible, lines)).rstrip() + "\n"


def _detail(title: str, day: TenantDay) -> str:
    status = day.status
    if title.startswith("No file"):
        if status.last_file_at is None:
            return "no file ever received"
        return f"last file {status.last_file_at}"
    if title == "Applied":
        return f"{status.subscribers} subscribers"
    return "; ".join(day.problems) or (status.last_reason or "")


def _count(day: TenantDay, rows: list[tuple[str, str | None, str | None]]) -> None:
    """Count the runs ``rows`` (status, file, reason) into ``day``, problems once each."""
    seen: dict[str, int] = {}
    for outcome, file, reason in rows:
        day.runs[outcome] = day.runs.get(outcome, 0) + 1
        if outcome in PROBLEMS:
            problem = f"{outcome} {file or ''}: {reason}".replace(" :", ":")
            seen[problem] = seen.get(problem, 0) + 1
    day.problems += [p if n == 1 else f"{p} ({n} runs)" for p, n in seen.items()]


def _cluster_digest(config: Config, since: datetime, until: datetime) -> Digest:
    """The digest in cluster mode: the tenants' status and runs from the cluster's
    database, the same on every node."""
    from listferry.cluster.database import connect
    from listferry.ops.status import cluster_statuses

    assert config.cluster is not None
    days = [TenantDay(status) for status in cluster_statuses(config, until)]
    with connect(config.cluster.database) as conn:
        rows = conn.execute(
            "SELECT tenant, status, file, reason FROM listferry_runs "
            "WHERE started_at >= %s AND status <> 'idle' ORDER BY id",
            (iso(since),),
        ).fetchall()
    for day in days:
        _count(day, [(s, f, r) for t, s, f, r in rows if t == day.status.tenant])
    return Digest(since, until, days)


def make_digest(config: Config, hours: float = 24, now: datetime | None = None) -> Digest:
    until = now or datetime.now(UTC)
    since = until - timedelta(hours=hours)
    if config.cluster is not None:
        return _cluster_digest(config, since, until)
    days = []
    for tenant in config.tenants.values():
        day = TenantDay(tenant_status(tenant, until))
        days.append(day)
        if day.status.error:  # the store cannot be read: said once
            day.problems.append(day.status.error)
            day.runs["failed"] = day.runs.get("failed", 0) + 1
            continue
        try:
            conn = open_read_only(tenant.database)
        except sqlite3.Error:
            conn = None
        if conn is not None:
            try:
                rows = conn.execute(
                    "SELECT status, file, reason FROM runs WHERE started_at >= ? ORDER BY id",
                    (iso(since),),
                ).fetchall()
            except sqlite3.Error as exc:
                rows = []
                day.problems.append(str(exc))
            finally:
                conn.close()
            _count(day, rows)
    return Digest(since, until, days)
