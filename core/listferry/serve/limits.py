"""What one tenant may hold and hold open, whatever the protocol.

A tenant's home has limits (``quota``, ``max_file_size``, ``max_files``, ``max_depth``)
and a tenant a number of sessions (``max_sessions``). :class:`Limits` is shared by every
server of a ``serve`` process: the servers ask it before they make a file or folder,
grow a file, or let a login in, and tell it when a session ends.

A home's usage is measured by a walk that never recurses and stops early, files counted
at their apparent size (``st_size``: a sparse 1 GiB file counts 1 GiB). It is measured
again before each new file or folder, and kept up to date as uploads grow in between.
In cluster mode the local folder is a spool, and what the home holds in storage is
added to it (``stored``, counted at most every few seconds).
"""

from __future__ import annotations

import os
import stat
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from listferry.config import Tenant
from listferry.text import size_text


class LimitReached(OSError):
    """A write, file, folder or session a limit refuses; the message says which limit."""


@dataclass
class Usage:
    """What a home holds: its files and folders, and their bytes at apparent size."""

    entries: int = 0
    bytes: int = 0


def measure(home: Path, stop_after: int) -> Usage:
    """The usage of ``home``, walked without recursion; stops after ``stop_after``
    entries (the bytes are then those of the entries seen). Symlinks are not followed."""
    usage = Usage()
    folders = [home]
    while folders and usage.entries < stop_after:
        try:
            entries = os.scandir(folders.pop())
        except OSError:  # removed meanwhile, or not a folder
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                usage.entries += 1
                if stat.S_ISDIR(info.st_mode):
                    folders.append(Path(entry.path))
                elif stat.S_ISREG(info.st_mode):
                    usage.bytes += info.st_size
                if usage.entries >= stop_after:
                    break
    return usage


def depth(home: Path, path: Path) -> int:
    """How many folders deep ``path`` is in ``home`` (a name in the home itself: 1)."""
    return len(path.relative_to(home).parts)


def height(folder: Path, stop_after: int) -> int:
    """How many levels the folder ``folder`` and what it holds take (an empty one: 1),
    counted without recursion, up to ``stop_after``."""
    tallest = 0
    folders = [(folder, 1)]
    while folders:
        current, level = folders.pop()
        tallest = max(tallest, level)
        if tallest >= stop_after:
            return tallest
        try:
            with os.scandir(current) as entries:
                folders += [
                    (Path(e.path), level + 1) for e in entries if e.is_dir(follow_symlinks=False)
                ]
        except OSError:
            continue
    return tallest


class Home:
    """One tenant's home: its usage, measured and then kept up to date."""

    def __init__(
        self, path: Path, stored: Callable[[Tenant], tuple[int, int] | None] | None = None
    ) -> None:
        self.path = path
        self.stored = stored
        self.usage = Usage()
        self._lock = threading.Lock()
        #: Held from the check of a new file or folder until it is made (its temp file,
        #: for an upload), so that uploads starting at once cannot all pass ``max_files``
        #: on the same count.
        self.adding = threading.RLock()

    def measure(self, tenant: Tenant) -> Usage:
        found = measure(self.path, tenant.max_files + 1)
        elsewhere = self.stored(tenant) if self.stored is not None else None
        if elsewhere is not None:
            found.entries += elsewhere[0]
            found.bytes += elsewhere[1]
        with self._lock:
            self.usage = found
        return found

    def may_add(self, tenant: Tenant, path: Path, folder: bool) -> None:
        """Raise :class:`LimitReached` unless a new file (or folder) may be made at ``path``."""
        if folder and depth(self.path, path) > tenant.max_depth:
            raise LimitReached(f"folders may nest at most {tenant.max_depth} deep")
        if self.measure(tenant).entries >= tenant.max_files:
            raise LimitReached(f"the home holds its limit of {tenant.max_files} files and folders")

    def may_upload(self, tenant: Tenant, path: Path) -> None:
        """Measure the home for an upload to ``path``; raise :class:`LimitReached` when it
        would be a new file past ``max_files``."""
        if os.path.lexists(path):
            self.measure(tenant)
        else:
            self.may_add(tenant, path, folder=False)

    def may_move(self, tenant: Tenant, folder: Path, to: Path) -> None:
        """Raise :class:`LimitReached` unless the folder ``folder`` may move to ``to``."""
        levels = height(folder, tenant.max_depth + 1)
        if depth(self.path, to) - 1 + levels > tenant.max_depth:
            raise LimitReached(f"folders may nest at most {tenant.max_depth} deep")

    def grow(self, tenant: Tenant, by: int, size: int) -> None:
        """Count a file growing ``by`` bytes to ``size``; raise :class:`LimitReached` (and
        count nothing) when that passes ``max_file_size`` or the quota."""
        if size > tenant.max_file_size:
            raise LimitReached(f"a file may hold at most {size_text(tenant.max_file_size)}")
        with self._lock:
            if by > 0 and self.usage.bytes + by > tenant.quota:
                raise LimitReached(f"the home's quota of {size_text(tenant.quota)} is used up")
            self.usage.bytes += by

    def shrink(self, by: int) -> None:
        """Count ``by`` bytes fewer (a file cut short or removed)."""
        with self._lock:
            self.usage.bytes = max(0, self.usage.bytes - by)


class Limits:
    """Every tenant's home and open sessions, for all the servers of one process.

    ``folder(tenant)`` is the local folder the servers write in (default: its ``home``),
    ``stored(tenant)`` what the home holds elsewhere (objects, bytes), or None.
    """

    def __init__(
        self,
        folder: Callable[[Tenant], Path] | None = None,
        stored: Callable[[Tenant], tuple[int, int] | None] | None = None,
    ) -> None:
        self._folder = folder or (lambda tenant: Path(tenant.home))
        self._stored = stored
        self._lock = threading.Lock()
        self._homes: dict[str, Home] = {}
        self._sessions: Counter[str] = Counter()
        self._by_protocol: Counter[tuple[str, str]] = Counter()

    def home(self, tenant: Tenant) -> Home:
        path = Path(os.path.realpath(self._folder(tenant)))
        with self._lock:
            home = self._homes.get(tenant.name)
            if home is None or home.path != path:
                home = self._homes[tenant.name] = Home(path, self._stored)
            return home

    def log_in(self, tenant: Tenant, protocol: str = "") -> str | None:
        """Count a new session of ``tenant`` (over ``protocol``); return why it is
        refused, or None."""
        with self._lock:
            if self._sessions[tenant.name] >= tenant.max_sessions:
                return f"the tenant has its limit of {tenant.max_sessions} sessions open"
            self._sessions[tenant.name] += 1
            self._by_protocol[protocol, tenant.name] += 1
            return None

    def full(self, name: str, tenants: dict[str, Tenant]) -> str | None:
        """Why a login to ``name`` would be refused for its sessions, or None; counts nothing.

        Asked before the password is checked: a tenant at ``max_sessions`` that logs in
        again and again with its right password would otherwise keep the few
        password-check threads (scrypt, a CPU each) busy, and every other tenant's
        login would wait behind it.
        """
        tenant = tenants.get(name)
        with self._lock:
            if tenant is not None and self._sessions[tenant.name] >= tenant.max_sessions:
                return f"the tenant has its limit of {tenant.max_sessions} sessions open"
            return None

    def sessions(self, tenant: Tenant) -> int:
        """The sessions ``tenant`` has open now."""
        with self._lock:
            return self._sessions[tenant.name]

    def log_out(self, tenant: Tenant, protocol: str = "") -> None:
        with self._lock:
            self._sessions[tenant.name] -= 1
            if self._sessions[tenant.name] <= 0:
                del self._sessions[tenant.name]
            self._by_protocol[protocol, tenant.name] -= 1
            if self._by_protocol[protocol, tenant.name] <= 0:
                del self._by_protocol[protocol, tenant.name]

    def open_sessions(self) -> dict[str, dict[str, int]]:
        """The sessions open now: by protocol, then by tenant."""
        found: dict[str, dict[str, int]] = {}
        with self._lock:
            for (protocol, tenant), count in sorted(self._by_protocol.items()):
                found.setdefault(protocol or "-", {})[tenant] = count
        return found


def file_mode(umask: int) -> int:
    """The mode of an uploaded file under ``[server] umask`` (``0o027``: ``0o640``)."""
    return 0o666 & ~umask


def folder_mode(umask: int) -> int:
    """The mode of a folder a client makes under ``[server] umask`` (``0o027``: ``0o750``)."""
    return 0o777 & ~umask
