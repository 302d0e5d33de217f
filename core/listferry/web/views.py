"""What the console's pages show, worked out from the same facts as ``status`` and ``runs``.

Each tenant has one *state* on the overview, the first of these that holds:

- ``running``: a sync of it holds its lock now;
- ``error``: its store cannot be read;
- ``voided`` / ``failed``: its last attempt ended so;
- ``silent``: no file for longer than its ``expect_file_within``;
- ``waiting``: a list waits in its home for its count file;
- ``new``: it never ran;
- ``ok``: its last attempt applied a list, or found nothing new.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from listferry.config import Config, Tenant
from listferry.ops.status import TenantStatus, open_read_only, statuses
from listferry.runs import RunRecord
from listferry.times import iso

log = logging.getLogger("listferry")

STATES = ("running", "error", "voided", "failed", "silent", "waiting", "new", "ok")
#: Tenants per page of the overview.
OVERVIEW_PAGE = 100
#: The days the overview's sparkline covers.
SPARK_DAYS = 30


@dataclass
class Row:
    """One tenant on the overview."""

    status: TenantStatus
    state: str
    #: The list's size after each applied run of the last :data:`SPARK_DAYS` days.
    sizes: list[int]

    @property
    def name(self) -> str:
        return self.status.tenant

    def to_json(self) -> dict[str, Any]:
        return {**self.status.to_json(), "state": self.state, "sizes": self.sizes}


def state_of(status: TenantStatus, running: bool) -> str:
    if running:
        return "running"
    if status.error:
        return "error"
    if status.last_status in ("voided", "failed"):
        return str(status.last_status)
    if status.silent:
        return "silent"
    if status.waiting:
        return "waiting"
    if status.last_status is None:
        return "new"
    return "ok"


#: How long a tenant's facts are shown without being read again, when none of its files
#: changed (the time-bound ones: silent, next run, days since applied).
FRESH_SECONDS = 60.0


class Overview:
    """Every tenant's row, kept between requests: a tenant's facts are read again only
    when its store, its home or the config changed, or after :data:`FRESH_SECONDS`.
    With 2,000 tenants a page then looks at 2,000 files' times, not 2,000 stores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[tuple[Any, ...], float, Row]] = {}

    def row(self, config: Config, tenant: Tenant, stamp: Any = None) -> Row | None:
        """One tenant's row (as :meth:`rows` has it)."""
        if config.cluster is not None:
            return next((row for row in self.rows(config, stamp) if row.name == tenant.name), None)
        return self._rows_of(config, [tenant], stamp)[0]

    def rows(self, config: Config, stamp: Any = None) -> list[Row]:
        """Every tenant's row, in the config's order; ``stamp`` says which config it is."""
        now = datetime.now(UTC)
        held = _held_locks()
        if config.cluster is not None:  # one query answers for every tenant
            return [Row(item, state_of(item, False), []) for item in statuses(config, now)]
        rows = self._rows_of(config, list(config.tenants.values()), stamp, held)
        with self._lock:
            for gone in set(self._rows) - set(config.tenants):
                del self._rows[gone]
        return rows

    def _rows_of(
        self,
        config: Config,
        tenants: list[Tenant],
        stamp: Any,
        held: set[tuple[int, int]] | None = None,
        max_age: float = FRESH_SECONDS,
    ) -> list[Row]:
        """The rows of ``tenants``: kept ones younger than ``max_age`` whose files did not
        change, the others read again (outside the lock: a request never waits for
        another's reading)."""
        from listferry.ops.status import tenant_status

        now = datetime.now(UTC)
        held = _held_locks() if held is None else held
        since = iso(now - timedelta(days=SPARK_DAYS))
        clock = time.monotonic()
        with self._lock:
            kept = {tenant.name: self._rows.get(tenant.name) for tenant in tenants}
        rows = []
        for tenant in tenants:
            key = (stamp, *_file_stamps(tenant))
            cached = kept[tenant.name]
            if cached and cached[0] == key and clock - cached[1] < max_age:
                row = cached[2]
            else:
                row = Row(tenant_status(tenant, now), "", list_sizes(tenant, since))
                with self._lock:
                    self._rows[tenant.name] = (key, clock, row)
            row.state = state_of(row.status, _running(tenant, held))
            rows.append(row)
        return rows

    def refresh(self, config: Config, stamp: Any = None) -> None:
        """Read again every row older than half :data:`FRESH_SECONDS` (or changed)."""
        if config.cluster is None:
            tenants = list(config.tenants.values())
            self._rows_of(config, tenants, stamp, max_age=FRESH_SECONDS / 2)

    def keep_fresh(self, refresh: Callable[[], object], stop: threading.Event) -> None:
        """Call ``refresh`` every quarter of :data:`FRESH_SECONDS`, so that a request
        seldom finds a row to read again (2,000 tenants take seconds to read)."""
        while not stop.wait(FRESH_SECONDS / 4):
            try:
                refresh()
            except Exception as exc:  # a config being edited, a store being restored
                log.debug("console: the overview was not refreshed: %s", exc)


def chosen(rows: list[Row], state: str | None = None, query: str = "") -> list[Row]:
    """The rows in ``state`` (any: None) whose name holds ``query``, the troubled first
    (in the order of :data:`STATES`), then by name."""
    picked = [
        row for row in rows if (not state or row.state == state) and query.lower() in row.name
    ]
    return sorted(picked, key=lambda row: (STATES.index(row.state), row.name))


def _file_stamps(tenant: Tenant) -> tuple[Any, ...]:
    """What changes when a tenant's facts may have: its store and WAL, its home's list of
    files, its state folder (locks, sightings)."""
    found = []
    for path in (
        tenant.database,
        tenant.database.with_name(tenant.database.name + "-wal"),
        Path(tenant.home) if tenant.is_local else None,
    ):
        try:
            info = path.stat() if path is not None else None
        except OSError:
            info = None
        found.append((info.st_mtime_ns, info.st_size, info.st_ino) if info else None)
    return tuple(found)


def _read_only(tenant: Tenant) -> sqlite3.Connection | None:
    """The tenant's store, read-only; None when it has none or it cannot be opened (the
    overview says so from ``status``)."""
    try:
        return open_read_only(tenant.database)
    except sqlite3.Error:
        return None


def list_sizes(tenant: Tenant, since: str) -> list[int]:
    """The size of the list each applied run since ``since`` brought, oldest first."""
    conn = _read_only(tenant)
    if conn is None:
        return []
    try:
        rows = conn.execute(
            "SELECT received - invalid - duplicates FROM runs WHERE status = 'applied' "
            "AND started_at >= ? ORDER BY id",
            (since,),
        ).fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()
    return [max(0, size or 0) for (size,) in rows]


def changes(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """Added and removed per applied run, oldest first, for the tenant page's chart."""
    return [
        {
            "run": r.run_id,
            "at": r.started_at,
            "added": r.added,
            "removed": r.removed,
            "size": max(0, r.received - r.invalid - r.duplicates),
        }
        for r in reversed(runs)
        if r.status == "applied"
    ]


def spark_points(sizes: list[int], width: int = 100, height: int = 20) -> str:
    """The ``points`` of an SVG polyline drawing ``sizes``."""
    if len(sizes) < 2:
        return ""
    low, high = min(sizes), max(sizes)
    span = (high - low) or 1
    step = width / (len(sizes) - 1)
    return " ".join(
        f"{i * step:.1f},{height - 1 - (size - low) / span * (height - 2):.1f}"
        for i, size in enumerate(sizes)
    )


#: The weeks of engagement a tenant's page shows, and the time it may take to count them.
ENGAGEMENT_WEEKS = 12
ENGAGEMENT_SECONDS = 0.5


def engagement(tenant: Tenant) -> list[dict[str, Any]] | None:
    """Opens and clicks per week (ISO weeks, newest first) over the last
    :data:`ENGAGEMENT_WEEKS`; None when counting would take longer than
    :data:`ENGAGEMENT_SECONDS` (a page is no place to scan millions of events)."""
    import time

    conn = _read_only(tenant)
    if conn is None:
        return []
    deadline = time.monotonic() + ENGAGEMENT_SECONDS
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    since = iso(datetime.now(UTC) - timedelta(weeks=ENGAGEMENT_WEEKS))
    try:
        rows = conn.execute(
            "SELECT strftime('%Y-W%W', at) AS week, type, count(*) FROM events "
            "WHERE at >= ? AND type IN ('open', 'click') GROUP BY week, type "
            "ORDER BY week DESC",
            (since,),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            return None
        return []
    except sqlite3.Error:
        return []
    finally:
        conn.close()
    weeks: dict[str, dict[str, Any]] = {}
    for week, kind, count in rows:
        weeks.setdefault(week, {"week": week, "opens": 0, "clicks": 0})[f"{kind}s"] = count
    return list(weeks.values())


#: The tenant keys the settings form changes, besides the allow list and SSH keys.
EDITABLE = (
    "dialect",
    "strategy",
    "count_file",
    "pattern",
    "schedule",
    "timezone",
    "export_schedule",
    "expect_file_within",
    "max_shrink_share",
    "max_invalid_share",
    "require_tls",
)


def editable(tenant: Tenant) -> dict[str, str]:
    """The form's fields: each :data:`EDITABLE` key's value as text (a string as it is,
    anything else as TOML)."""
    from listferry.config.edit import toml_value
    from listferry.config.keys import keys_of

    keys = keys_of(Tenant)
    shown = {}
    for key in EDITABLE:
        value = getattr(tenant, keys[key].attribute)
        if value is None:
            shown[key] = ""
        elif isinstance(value, str):
            shown[key] = value
        else:
            shown[key] = toml_value(value)
    return shown


def settings_shown(tenant: Tenant) -> dict[str, str]:
    """A tenant's settings as its page shows them, in words: never a secret."""
    plain = tenant.to_json()
    shown = {
        "home": plain["home"],
        "password": "set" if plain["password"] else "not set",
        "ssh_keys": f"{plain['ssh_keys']} key(s)" if plain["ssh_keys"] else "none",
        "allow_ips": ", ".join(plain["allow_ips"]) or "any address",
        "process": plain["process"],
    }
    for key, value in editable(tenant).items():
        shown[key] = {"true": "yes", "false": "no"}.get(value, value) or "-"
    return shown


def lines(text: str) -> list[str]:
    """The lines of a form's text area that say something."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def networks(given: list[str]) -> list[str]:
    """An allow list from the form: each line an address or CIDR network."""
    import ipaddress

    from listferry.errors import ConfigError

    for number, text in enumerate(given, start=1):
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            problem = f"allow list line {number}: {text!r} is not an address or network"
            raise ConfigError(problem) from None
    return given


def public_keys(given: list[str]) -> list[str]:
    """SFTP keys from the form: each line a public key in authorized_keys form."""
    from listferry.config.public_keys import public_key_problem
    from listferry.errors import ConfigError

    for number, line in enumerate(given, start=1):
        if "PRIVATE KEY" in line:
            raise ConfigError("SSH keys: this is a private key; give the public key (.pub)")
        if problem := public_key_problem(line):
            raise ConfigError(f"SSH keys line {number}: {problem}")
    return given


def _held_locks() -> set[tuple[int, int]]:
    """The (device, inode) of every file some process holds a ``flock`` on (Linux)."""
    held: set[tuple[int, int]] = set()
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return held
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[1] == "FLOCK":
            try:
                major, minor, inode = parts[5].split(":")
                held.add((os.makedev(int(major, 16), int(minor, 16)), int(inode)))
            except ValueError:
                continue
    return held


def _running(tenant: Tenant, held: set[tuple[int, int]]) -> bool:
    """Whether a sync of ``tenant`` holds its lock: read from ``/proc/locks``, never by
    taking the lock (which would make a sync starting just then skip)."""
    try:
        info = (tenant.state_dir / "lock").stat()
    except OSError:
        return False
    return (info.st_dev, info.st_ino) in held
