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

from listferry.config import ServerSettings, Tenant
from listferry.config.passwords import hash_password, verify_password
from listferry.serve.log import event


class LoginGuard:
    """Failed logins per address are delayed, then blocked; connections are limited.

    Thread-safe: every protocol of the process shares one guard.
    """

    def __init__(
        self, settings: ServerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: Counter[str] = Counter()
        self._blocked_until: dict[str, float] = {}
        self._open: Counter[str] = Counter()

    def blocked(self, ip: str) -> bool:
        with self._lock:
            return self._is_blocked(ip)

    def _is_blocked(self, ip: str) -> bool:
        until = self._blocked_until.get(ip)
        if until is None:
            return False
        if self.clock() >= until:
            del self._blocked_until[ip]
            self._failures.pop(ip, None)
            return False
        return True

    def failures(self, ip: str) -> int:
        """Failed logins from ``ip`` counted now (0 once a block has lifted)."""
        with self._lock:
            self._is_blocked(ip)
            return self._failures.get(ip, 0)

    def admit(self, ip: str) -> str | None:
        """Count a new connection from ``ip``; return why it is refused, or None."""
        with self._lock:
            if self._is_blocked(ip):
                return "address blocked after repeated failed logins"
            if sum(self._open.values()) >= self.settings.max_connections:
                return "too many connections"
            if self._open[ip] >= self.settings.max_connections_per_ip:
                return "too many connections from this address"
            self._open[ip] += 1
            return None

    def release(self, ip: str) -> None:
        with self._lock:
            self._open[ip] -= 1
            if self._open[ip] <= 0:
                del self._open[ip]

    def failed(self, ip: str) -> float:
        """Record a failed login; return how long to wait before answering it."""
        with self._lock:
            self._failures[ip] += 1
            count = self._failures[ip]
            if count >= self.settings.block_after_failures:
                self._blocked_until[ip] = self.clock() + self.settings.block_seconds
                event("blocked", ip=ip, failures=count, seconds=self.settings.block_seconds)
            over = count - self.settings.delay_after_failures
            return 0.0 if over < 0 else min(0.5 * 2**over, 5.0)

    def succeeded(self, ip: str) -> None:
        with self._lock:
            self._failures.pop(ip, None)


# -- who may log in ------------------------------------------------------------------------


def ip_in(ip: str, networks: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
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

    #: A password check (scrypt) takes 16 MB and a CPU. Made on these few threads only, a
    #: burst of logins takes turns, and malloc keeps those 16 MB for reuse on them alone,
    #: not on each connection's thread (which made 100 logins cost 1 GB).
    _checker = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="password-check")

    def __init__(
        self, tenants: dict[str, Tenant] | Callable[[], dict[str, Tenant]], guard: LoginGuard
    ) -> None:
        self._tenants = tenants if callable(tenants) else (lambda: tenants)
        self.guard = guard
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
        if tenant is not None and not tenant.is_local:
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
        return self._outcome(tenant if good else None, username, ip, protocol, "password", refusal)

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
            self.guard.succeeded(ip)
            event("login", protocol=protocol, tenant=tenant.name, ip=ip, method=method, result="ok")
            return tenant
        delay = self.guard.failed(ip)
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
