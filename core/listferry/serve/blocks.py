"""Blocked login sources, kept in ``state/server/blocked.db`` (SQLite).

A running ``serve`` writes a row when it blocks a source (an IPv4 address, or an IPv6
address's /64); ``listferry server blocked`` reads them and ``listferry server unblock``
deletes one, which the running ``serve`` notices at the next connection from that source.
A ``serve`` that starts again takes up the blocks that have not expired.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from listferry.times import iso

FILE = "blocked.db"


def blocks_path(state_dir: Path) -> Path:
    return state_dir / "server" / FILE


def address_of(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a peer's ``ip`` names (an IPv4 address mapped into IPv6 as IPv4, a
    zone dropped), or None when it names none."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def source_of(ip: str) -> str:
    """What failures count against: an IPv4 address (also when mapped into IPv6), or an
    IPv6 address's /64 (``2001:db8:1:2::/64``); anything else as it is."""
    address = address_of(ip)
    if address is None:
        return ip
    if address.version == 4:
        return str(address)
    return str(ipaddress.ip_network(f"{address}/64", strict=False))


def block_source(address: str) -> str:
    """The source whose block ``address`` (one address, or an IPv6 /64) names; a
    :class:`UsageError` for anything else."""
    from listferry.errors import UsageError

    try:
        given = ipaddress.ip_network(address.strip(), strict=False)
    except ValueError:
        raise UsageError(f"{address!r} is not an IP address") from None
    single = given.num_addresses == 1 or (given.version == 6 and given.prefixlen == 64)
    if not single:
        raise UsageError(f"{address}: give one address, or an IPv6 /64")
    return source_of(str(given.network_address))


@dataclass(frozen=True)
class Block:
    source: str
    until: float  # seconds since the epoch
    failures: int
    accounts: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "until": iso(self.until),
            "failures": self.failures,
            "accounts": list(self.accounts),
        }

    def line(self) -> str:
        tried = ", ".join(self.accounts) or "-"
        return f"{self.source}  until {iso(self.until)}  {self.failures} failures  tried: {tried}"


class BlockBook(Protocol):
    """Where a guard keeps its blocks, and shares its failed logins: :class:`BlockFile` on
    one machine; in cluster mode the database every serve node shares
    (:class:`listferry.cluster.logins.SharedLogins`). Every method but :meth:`changed`
    may wait on a disk or a network, so the guard calls them outside its lock."""

    def changed(self) -> bool:
        """Whether the blocks changed elsewhere since the last look (answered at once)."""
        ...

    def active(self, now: float) -> list[Block]: ...

    def put(self, block: Block) -> None: ...

    def remove(self, source: str, now: float) -> bool:
        """Lift the block of ``source``; False when it is not blocked."""
        ...

    def failed(self, source: str, account: str, now: float, since: float) -> tuple[int, int]:
        """Record a failed login; the failures since ``since`` from ``source`` (to any
        account) and to ``account`` (from any source) wherever they were counted."""
        ...

    def succeeded(self, source: str, account: str) -> None: ...

    def close(self) -> None: ...


class BlockFile:
    """The blocks on disk, for the processes of one machine. Failed logins are counted
    by each process's guard alone (:meth:`failed` counts none)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(path, timeout=5, check_same_thread=False, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS blocks (source TEXT PRIMARY KEY, until REAL NOT NULL, "
            "failures INTEGER NOT NULL, accounts TEXT NOT NULL)"
        )
        self._seen = self.version()

    def version(self) -> int:
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    def changed(self) -> bool:
        """Whether another process changed the file since this one last looked."""
        now = self.version()
        changed, self._seen = now != self._seen, now
        return changed

    def active(self, now: float) -> list[Block]:
        with self._lock:
            rows = self._db.execute(
                "SELECT source, until, failures, accounts FROM blocks WHERE until > ? "
                "ORDER BY until",
                (now,),
            ).fetchall()
        return [Block(s, u, f, tuple(json.loads(a))) for s, u, f, a in rows]

    def put(self, block: Block) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?)",
                (block.source, block.until, block.failures, json.dumps(list(block.accounts))),
            )
        self._seen = self.version()

    def remove(self, source: str, now: float) -> bool:
        """Lift the block of ``source``; False when it is not blocked."""
        with self._lock:
            gone = self._db.execute(
                "DELETE FROM blocks WHERE source = ? AND until > ?", (source, now)
            )
            self._db.execute("DELETE FROM blocks WHERE until <= ?", (now,))
        return gone.rowcount > 0

    def failed(self, source: str, account: str, now: float, since: float) -> tuple[int, int]:
        return 0, 0

    def succeeded(self, source: str, account: str) -> None:
        pass

    def close(self) -> None:
        self._db.close()
