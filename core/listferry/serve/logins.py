"""Who may log in, and who is turned away.

:class:`Gatekeeper` checks logins against the config (salted password hashes, public
keys, IP allow lists); :class:`LoginGuard` delays failed logins, then blocks the
address, and limits connections. Every protocol of a ``serve`` process shares one of
each, so an address blocked over FTP is blocked over SFTP too.
"""

from __future__ import annotations

import base64
import functools
import hmac
import ipaddress
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from listferry.config import ServerSettings, Tenant
from listferry.config.passwords import hash_password, needs_rehash, verify_password
from listferry.serve.blocks import Block, BlockBook, BlockFile, address_of, source_of
from listferry.serve.log import event

#: The least time a failed login is remembered (``block_seconds`` when that is longer).
REMEMBER_SECONDS = 600.0


class LoginGuard:
    """Failed logins are delayed, then their source blocked; connections are limited.

    Failures count per source (an IPv4 address, an IPv6 address's /64: :func:`source_of`)
    and account, and are remembered for ``block_seconds`` (at least
    :data:`REMEMBER_SECONDS`). A source's failures, to every account, delay its answers
    and then block it, on every protocol. An account's failures, from every source, delay
    each further failed answer on it but never block it. A good
    login forgets only that account's failures from that source. Blocks are kept in
    ``blocks`` (a file, see :mod:`~listferry.serve.blocks`, or a
    :class:`~listferry.serve.blocks.BlockBook`) when given, so they outlast a restart and
    ``listferry server unblock`` can lift one. A book shared by several serve nodes (the
    cluster's database) also counts each failure on every node: a source's failures
    anywhere block it everywhere.

    Connections are limited in all and per address; those not yet logged in also per
    protocol and per source (the pre-login pools), so floods of bare connections to one
    protocol leave the others, and logged-in customers, alone.

    Thread-safe: every protocol of the process shares one guard.
    """

    def __init__(
        self,
        settings: ServerSettings,
        clock: Callable[[], float] = time.time,
        blocks: Path | BlockBook | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        # source -> account -> times of failures; the same lists under account -> source
        self._failures: dict[str, dict[str, list[float]]] = {}
        self._accounts: dict[str, dict[str, list[float]]] = {}
        self._counted = 0
        self._book = BlockFile(blocks) if isinstance(blocks, Path) else blocks
        self._blocked: dict[str, Block] = {}
        if self._book is not None:
            self._blocked = {b.source: b for b in self._book.active(clock())}
        self._open: Counter[str] = Counter()
        self._waiting: Counter[str] = Counter()  # not logged in yet, per protocol
        self._waiting_from: Counter[str] = Counter()  # not logged in yet, per source

    def blocked(self, ip: str) -> bool:
        with self._lock:
            return self._is_blocked(source_of(ip))

    def _is_blocked(self, source: str) -> bool:
        if self._book is not None and self._book.changed():  # blocked elsewhere, or lifted
            still = {b.source: b for b in self._book.active(self.clock())}
            for lifted in set(self._blocked) - set(still):
                self._forget(lifted)
                if self._blocked[lifted].until > self.clock():
                    event("unblocked", source=lifted)
            self._blocked = still
        block = self._blocked.get(source)
        if block is None:
            return False
        if self.clock() >= block.until:
            del self._blocked[source]
            self._forget(source)
            return False
        return True

    def _forget(self, source: str) -> None:
        for account in self._failures.pop(source, {}):
            self._accounts.get(account, {}).pop(source, None)
            if not self._accounts.get(account, True):
                del self._accounts[account]

    def failures(self, ip: str) -> int:
        """Failed logins from ``ip``'s source counted now (0 once a block has lifted)."""
        with self._lock:
            source = source_of(ip)
            self._is_blocked(source)
            return self._count(self._failures.get(source, {}), self.clock())

    def account_failures(self, account: str) -> int:
        """Failed logins to ``account``, from every source, counted now."""
        with self._lock:
            return self._count(self._accounts.get(account, {}), self.clock())

    def _count(self, lists: dict[str, list[float]], now: float) -> int:
        """The failures in ``lists`` still remembered at ``now``; older ones dropped."""
        since = now - max(self.settings.block_seconds, REMEMBER_SECONDS)
        for times in lists.values():
            while times and times[0] <= since:
                del times[0]
        return sum(len(times) for times in lists.values())

    def admit(self, ip: str, protocol: str = "") -> str | None:
        """Count a new connection from ``ip`` to ``protocol``; return why it is refused,
        or None. It waits in ``protocol``'s pre-login pool until :meth:`logged_in`."""
        settings = self.settings
        with self._lock:
            source = source_of(ip)
            if self._is_blocked(source):
                return "address blocked after repeated failed logins"
            if sum(self._open.values()) >= settings.max_connections:
                return "too many connections"
            if self._open[ip] >= settings.max_connections_per_ip:
                return "too many connections from this address"
            if self._waiting[protocol] >= settings.max_prelogin_connections:
                return "too many connections waiting to log in"
            if self._waiting_from[source] >= settings.max_prelogin_per_ip:
                return "too many connections waiting to log in from this address"
            self._open[ip] += 1
            self._waiting[protocol] += 1
            self._waiting_from[source] += 1
            return None

    def logged_in(self, ip: str, protocol: str = "") -> None:
        """The connection from ``ip`` to ``protocol`` logged in: it leaves the pre-login pool."""
        with self._lock:
            self._leave_pool(ip, protocol)

    def _leave_pool(self, ip: str, protocol: str) -> None:
        for counter, key in ((self._waiting, protocol), (self._waiting_from, source_of(ip))):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    def release(self, ip: str, protocol: str = "", logged_in: bool = False) -> None:
        """The connection :meth:`admit` counted closed (``logged_in``: after its login)."""
        with self._lock:
            self._open[ip] -= 1
            if self._open[ip] <= 0:
                del self._open[ip]
            if not logged_in:
                self._leave_pool(ip, protocol)

    def failed(self, ip: str, account: str = "") -> float:
        """Record a failed login to ``account``; return how long to wait before answering it."""
        settings = self.settings
        with self._lock:
            now, source = self.clock(), source_of(ip)
            self._counted += 1
            if self._counted % 256 == 0:  # forget what was not seen again
                for other in [s for s in self._failures if s not in self._blocked]:
                    if not self._count(self._failures[other], now):
                        self._forget(other)
            times = self._failures.setdefault(source, {}).setdefault(account, [])
            self._accounts.setdefault(account, {})[source] = times
            times.append(now)
            count = self._count(self._failures[source], now)
            on_account = self._count(self._accounts[account], now)
        if self._book is not None:  # the failures other nodes counted too
            since = now - max(settings.block_seconds, REMEMBER_SECONDS)
            shared, on_shared = self._book.failed(source, account, now, since)
            count, on_account = max(count, shared), max(on_account, on_shared)
        block = None
        with self._lock:
            if count >= settings.block_after_failures and source not in self._blocked:
                tried = tuple(sorted(self._failures.get(source, {}) or {account: []}))[:20]
                block = Block(source, now + settings.block_seconds, count, tried)
                self._blocked[source] = block
        if block is not None:
            if self._book is not None:
                self._book.put(block)
            event("blocked", ip=source, failures=count, seconds=settings.block_seconds)
        return max(
            _delay(count - settings.delay_after_failures),
            _delay(on_account - settings.account_delay_after_failures),
        )

    def succeeded(self, ip: str, account: str = "") -> None:
        """A good login to ``account``: forget its failures from ``ip``'s source, no others."""
        source = source_of(ip)
        with self._lock:
            self._failures.get(source, {}).pop(account, None)
            self._accounts.get(account, {}).pop(source, None)
        if self._book is not None:
            self._book.succeeded(source, account)

    def close(self) -> None:
        """Let go of the blocks' book (a file, or the cluster's database)."""
        if self._book is not None:
            self._book.close()

    def blocks(self) -> list[Block]:
        """The sources blocked now."""
        with self._lock:
            for source in list(self._blocked):
                self._is_blocked(source)
            return sorted(self._blocked.values(), key=lambda b: b.until)


def _delay(over: int) -> float:
    """0.5 s at the first failure over a limit, doubling, at most 5 s."""
    return 0.0 if over < 0 else min(0.5 * 2**over, 5.0)


# -- who may log in ------------------------------------------------------------------------


def ip_in(ip: str, networks: tuple[str, ...]) -> bool:
    address = address_of(ip)
    if address is None:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


@functools.cache
def dummy_hash() -> str:
    """A hash no password matches: an unknown name costs a login as long as a known one.

    Made once per process, when the first server starts (not at import: every command
    imports this module, and scrypt takes a quarter of a second).
    """
    return hash_password(secrets.token_hex(16))


class Gatekeeper:
    """Checks logins against the config: tenant name, password hash or key, address."""

    #: A password check (scrypt, N=2^17) takes 128 MiB and a CPU. Made on these few threads
    #: only (at most 4: 512 MiB), a burst of logins takes turns, and malloc keeps that
    #: memory for reuse on them alone, not on each connection's thread.
    _checker = ThreadPoolExecutor(min(os.cpu_count() or 1, 4), thread_name_prefix="password-check")

    def __init__(
        self,
        tenants: dict[str, Tenant] | Callable[[], dict[str, Tenant]],
        guard: LoginGuard,
        rehashed: Callable[[str, str, str], None] | None = None,
        serves: Callable[[Tenant], bool] | None = None,
    ) -> None:
        """``rehashed(tenant, old_hash, new_hash)`` keeps the new hash made for a tenant
        whose hash was made with less than today's scrypt cost, at its good login;
        ``serves(tenant)`` says whether these servers hold its home (default: a local one)."""
        self._tenants = tenants if callable(tenants) else (lambda: tenants)
        self._serves = serves or (lambda tenant: tenant.is_local)
        self.guard = guard
        self._rehashed = rehashed
        self._upgraded: set[str] = set()
        self._upgrade_lock = threading.Lock()
        self._dummy_hash = dummy_hash()  # made now, so no login waits for it

    @property
    def tenants(self) -> dict[str, Tenant]:
        """The tenants as the config says now (a changed config file is read again)."""
        return self._tenants()

    def address_allowed(self, tenant: Tenant, ip: str, protocol: str) -> bool:
        """SFTP needs the tenant's allow list and an address in it; FTP only when set."""
        if not tenant.allow_ips:
            return protocol != "sftp"
        return ip_in(ip, tenant.allow_ips)

    def precheck(self, username: str, ip: str, protocol: str) -> str | None:
        """Why ``username`` from ``ip`` may not even try to log in, or None."""
        tenant = self.tenants.get(username)
        if self.guard.blocked(ip):
            return "address blocked after repeated failed logins"
        if tenant is not None and not self._serves(tenant):
            return "the tenant's home is not on this server"
        if tenant is not None and not self.address_allowed(tenant, ip, protocol):
            return "address not in the tenant's allow list"
        return None

    def password(self, username: str, password: str, ip: str, protocol: str) -> Tenant | None:
        """The tenant when the login is good; None (logged, counted) when it is not."""
        tenant = self.tenants.get(username)
        refusal = self.precheck(username, ip, protocol)
        stored = tenant.password_hash if tenant and not refusal else None
        check = self._checker.submit(verify_password, password, stored or self._dummy_hash)
        good = check.result() and stored is not None
        if good and stored and self._rehashed is not None and needs_rehash(stored):
            self._upgrade(username, password, stored)
        return self._outcome(tenant if good else None, username, ip, protocol, "password", refusal)

    def _upgrade(self, name: str, password: str, old: str) -> None:
        """Hash ``password`` again at today's cost, once, in the background."""
        with self._upgrade_lock:
            if old in self._upgraded:
                return
            self._upgraded.add(old)
        rehashed = self._rehashed
        assert rehashed is not None

        def upgrade() -> None:
            try:
                rehashed(name, old, hash_password(password))
            except Exception as exc:  # the config file may not be this process's to write
                event("rehash", tenant=name, result="failed", reason=str(exc))

        self._checker.submit(upgrade)

    def accepts_key(
        self, username: str, key_type: str, key_blob: bytes, ip: str, protocol: str
    ) -> bool:
        """Whether :meth:`public_key` would let this key in; logs and counts nothing.

        SSH asks about a key before the client proves it holds the private half: answer
        with this, and call :meth:`public_key` once the signature has been checked.
        """
        tenant = self.tenants.get(username)
        if tenant is None or self.precheck(username, ip, protocol):
            return False
        wanted = base64.b64encode(key_blob).decode("ascii")
        return any(
            hmac.compare_digest(parts[1], wanted)
            for parts in (line.split() for line in tenant.ssh_keys)
            if len(parts) >= 2 and parts[0] == key_type
        )

    def public_key(
        self,
        username: str,
        key_type: str,
        key_blob: bytes,
        ip: str,
        protocol: str,
        proven: bool = True,
    ) -> Tenant | None:
        """The tenant when ``key_blob`` is one of its authorized keys and the address is allowed.

        ``proven=False``: the client's signature made with the key did not verify; refused.
        """
        refusal = self.precheck(username, ip, protocol)
        if not refusal and not proven:
            refusal = "the key's signature does not verify"
        good = not refusal and self.accepts_key(username, key_type, key_blob, ip, protocol)
        tenant = self.tenants.get(username) if good else None
        return self._outcome(tenant, username, ip, protocol, "publickey", refusal)

    def _outcome(
        self,
        tenant: Tenant | None,
        username: str,
        ip: str,
        protocol: str,
        method: str,
        refusal: str | None,
    ) -> Tenant | None:
        if tenant is not None:
            self.guard.succeeded(ip, tenant.name)
            event("login", protocol=protocol, tenant=tenant.name, ip=ip, method=method, result="ok")
            return tenant
        delay = self.guard.failed(ip, username[:64])
        event(
            "login",
            protocol=protocol,
            user=username[:64],
            ip=ip,
            method=method,
            result="refused",
            reason=refusal or "wrong credentials",
        )
        if delay:
            time.sleep(delay)
        return None
