"""What every built-in server shares, whatever its protocol.

Who may log in (:class:`Gatekeeper`: salted password hashes, public keys, IP allow
lists), who is turned away (:class:`LoginGuard`: failed logins are delayed, then the
address is blocked; connection limits), where a tenant may go (:func:`jail`: its home
is ``/`` and nothing reaches outside it), how an upload lands (:func:`upload_temp_name`:
a hidden name, renamed when complete), what is logged (:func:`event`: one structured
line), and what happens when a file arrives (:class:`UploadDispatcher`).

A server plugin gets one :class:`ServerRuntime` holding all of these, shared by every
protocol in the process, so an address blocked over FTP is blocked over SFTP too.
"""

from __future__ import annotations

import base64
import functools
import hmac
import ipaddress
import logging
import os
import posixpath
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from listferry.app import App
from listferry.config import ServerSettings, Tenant
from listferry.config.passwords import hash_password, verify_password
from listferry.serve.live import LiveConfig
from listferry.sync.select import select

log = logging.getLogger("listferry.server")


def event(kind: str, *, level: int = logging.INFO, **fields: object) -> None:
    """One structured log line: ``event=login protocol=sftp tenant=acme ip=… result=ok``."""

    def show(value: object) -> str:
        text = str(value)
        return repr(text) if not text or any(c in text for c in ' ="\n') else text

    parts = [f"event={kind}"] + [f"{k}={show(v)}" for k, v in fields.items() if v is not None]
    log.log(level, " ".join(parts))


# -- who is turned away ------------------------------------------------------------------


class LoginGuard:
    """Failed logins per address are delayed, then blocked; connections are limited.

    Thread-safe: every protocol of the process shares one guard.
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
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
        if time.monotonic() >= until:
            del self._blocked_until[ip]
            self._failures.pop(ip, None)
            return False
        return True

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
                self._blocked_until[ip] = time.monotonic() + self.settings.block_seconds
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
        self, username: str, key_type: str, key_blob: bytes, ip: str, protocol: str,
        proven: bool = True,
    ) -> Tenant | None:  # fmt: skip
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
        self, tenant: Tenant | None, username: str, ip: str, protocol: str, method: str,
        refusal: str | None,
    ) -> Tenant | None:  # fmt: skip
        if tenant is not None:
            self.guard.succeeded(ip)
            event("login", protocol=protocol, tenant=tenant.name, ip=ip, method=method, result="ok")
            return tenant
        delay = self.guard.failed(ip)
        event(
            "login", protocol=protocol, user=username[:64], ip=ip, method=method,
            result="refused", reason=refusal or "wrong credentials",
        )  # fmt: skip
        if delay:
            time.sleep(delay)
        return None


# -- where a tenant may go -----------------------------------------------------------------


class OutsideHome(PermissionError):
    """A path that would leave the tenant's home, or is not a plain path at all."""


def jail(home: Path, path: str, cwd: str = "/") -> Path:
    """The real path of the client's ``path`` (relative to ``cwd``) inside ``home``.

    The home is ``/``. ``..`` stops at the home, backslashes and NUL bytes are refused,
    and a symlink that leads outside the home is refused wherever it is in the path.
    """
    if "\0" in path or "\\" in path or "\0" in cwd or "\\" in cwd:
        raise OutsideHome(f"{path!r} is not a plain path")
    virtual = posixpath.normpath(posixpath.join("/", cwd, path))
    root = os.path.realpath(home)
    real = os.path.realpath(os.path.join(root, virtual.lstrip("/")))
    if real != root and not real.startswith(root + os.sep):
        raise OutsideHome(f"{path!r} is outside the home")
    return Path(real)


def virtual(home: Path, real: Path) -> str:
    """The client's view of ``real``: a path from ``/``, the tenant's home."""
    relative = os.path.relpath(real, os.path.realpath(home))
    return "/" if relative == "." else "/" + relative


def upload_temp_name(name: str) -> str:
    """A hidden name for an upload in progress; the sync never reads hidden files."""
    return f".{name}.{secrets.token_hex(6)}.part"


_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{12}\.part")


def is_upload_in_progress(name: str) -> bool:
    return name.startswith(".") and name.endswith(".part")


def remove_stale_uploads(tenants: dict[str, Tenant]) -> None:
    """Remove what uploads cut off by a killed server left under their temp names.

    Called before the servers start, when no upload of this process is under way: a
    temp name then holds only part of a file that no client saw completed.
    """
    for tenant in tenants.values():
        if not tenant.is_local:
            continue
        home = Path(tenant.home)
        for folder, _folders, names in os.walk(home):
            for path in (Path(folder, n) for n in names if _TEMP_NAME.fullmatch(n)):
                if path.is_file() and not path.is_symlink():
                    path.unlink(missing_ok=True)
                    event("upload", tenant=tenant.name, file=str(path.relative_to(home)),
                          result="removed", reason="cut off when the server stopped")  # fmt: skip


# -- what happens when a file arrives -----------------------------------------------------


class UploadDispatcher:
    """Tells plugins that a file arrived, and runs ``on-upload`` syncs.

    A tenant with ``process = "on-upload"`` is synced once its files are in: the list
    file and, when the tenant requires one, its count file. Uploads that follow each
    other within ``upload_grace`` seconds are taken together (a list, then its count
    file). One worker thread runs the syncs, one tenant at a time, each as its own
    ``listferry sync`` process.
    """

    def __init__(
        self, app: App, grace: float, tenants: Callable[[], dict[str, Tenant]] | None = None
    ) -> None:
        self.app = app
        self.grace = grace
        self.tenants = tenants or (lambda: app.config.tenants)
        self._due: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="on-upload", daemon=True)
        self._worker.start()

    def received(self, tenant: Tenant, name: str) -> None:
        """A completed upload of ``name`` (relative to the home) for ``tenant``."""
        event("received", tenant=tenant.name, file=name)
        try:
            self.app.host.hook.file_received(tenant=tenant, path=name)
        except Exception as exc:
            log.error("a file_received plugin failed for %s: %s: %s",
                      tenant.name, type(exc).__name__, exc)  # fmt: skip
        if tenant.process == "on-upload":
            with self._cond:
                self._due[tenant.name] = time.monotonic() + self.grace
                self._cond.notify()

    def _ready(self, tenant: Tenant) -> bool:
        transport = self.app.transport(tenant)
        try:
            selection = select(transport.list(), tenant)
        finally:
            transport.close()
        if not selection.runs:
            return False
        return tenant.count_file != "required" or all(p.count_file for p in selection.runs)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._next_due():
                    timeout = min(self._due.values(), default=time.monotonic() + 60)
                    self._cond.wait(max(0.0, timeout - time.monotonic()))
                if self._stopping:
                    return
                name = self._next_due()
                del self._due[name]
            tenant = self.tenants().get(name)
            if tenant is None or not self._ready(tenant):
                continue
            for run in self._sync(tenant):
                event("run", tenant=run["tenant"], file=run.get("file"), status=run["status"],
                      reason=run.get("reason"))  # fmt: skip

    def _sync(self, tenant: Tenant) -> list[dict]:
        """``listferry sync NAME`` in a process of its own: a crash or a memory blow-up in
        one tenant's run never reaches the servers, and the run reads the config as it is
        now."""
        import json
        import subprocess
        import sys

        from listferry.runs import utcnow

        argv = [sys.executable, "-m", "listferry", "--config", str(self.app.config.path),
                "sync", tenant.name, "--json"]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        try:
            runs = json.loads(done.stdout)
        except ValueError:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            reason = f"the on-upload sync exited with code {done.returncode}: {last}"
            log.error("%s: %s", tenant.name, reason)
            return [{"tenant": tenant.name, "status": "failed", "reason": reason,
                     "finished_at": utcnow()}]  # fmt: skip
        return runs

    def _next_due(self) -> str | None:
        now = time.monotonic()
        return next((name for name, at in self._due.items() if at <= now), None)

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._worker.join(timeout)


# -- the runtime a server plugin gets -----------------------------------------------------


@dataclass
class ServerRuntime:
    """What the servers of one ``listferry serve`` process share."""

    app: App
    settings: ServerSettings
    guard: LoginGuard
    gatekeeper: Gatekeeper
    uploads: UploadDispatcher
    live: LiveConfig

    @classmethod
    def create(cls, app: App, settings: ServerSettings) -> ServerRuntime:
        guard = LoginGuard(settings)
        live = LiveConfig(app.config)
        return cls(
            app=app,
            settings=settings,
            guard=guard,
            gatekeeper=Gatekeeper(live.tenants, guard),
            uploads=UploadDispatcher(app, settings.upload_grace, live.tenants),
            live=live,
        )

    def home(self, tenant: Tenant) -> Path:
        """The tenant's home folder; built-in servers serve local homes only."""
        return Path(tenant.home)


class Server(Protocol):
    """A running protocol server, made by the factory a ``register_servers`` plugin gives.

    ``factory(runtime)`` builds it; ``start()`` binds its sockets and returns the
    ``(protocol, host, port)`` it listens on; ``stop(timeout)`` stops accepting, lets
    open transfers finish for up to ``timeout`` seconds, then closes everything.
    """

    def start(self) -> list[tuple[str, str, int]]: ...

    def stop(self, timeout: float) -> None: ...


def serve(
    app: App, settings: ServerSettings, protocols: list[str], say,
    beside: Callable[[threading.Event], None] | None = None,
) -> None:  # fmt: skip
    """Run the servers for ``protocols`` until SIGTERM or SIGINT, then stop them cleanly.

    ``beside(stop)`` (the schedule) runs in a thread of its own meanwhile and is waited
    for when the servers have stopped.
    """
    import signal

    from listferry.errors import ListferryError

    for path in (settings.tls_cert, settings.tls_key, settings.ssh_host_key):
        if not path.exists():
            raise ListferryError(f"{path} is missing: run 'listferry init' to make the server keys")
    stop = threading.Event()
    companion: threading.Thread | None = None
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    remove_stale_uploads(app.config.tenants)
    runtime = ServerRuntime.create(app, settings)
    watcher = threading.Thread(target=runtime.live.watch, args=(stop,), name="config-watch")
    watcher.start()
    servers: list[Server] = []
    try:
        for protocol in protocols:
            server = app.host.servers.get(protocol)(runtime)
            servers.append(server)
            for name, host, port in server.start():
                say(f"listening {name} {host}:{port}")
        event("started", protocols=",".join(protocols))
        if beside is not None:
            companion = threading.Thread(target=beside, args=(stop,), name="schedule")
            companion.start()
        stop.wait()
        say("stopping: waiting for open transfers")
    finally:
        stoppers = [
            threading.Thread(target=server.stop, args=(settings.stop_timeout,))
            for server in servers
        ]  # every protocol stops accepting at once, then waits for its own transfers
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        runtime.uploads.stop(settings.stop_timeout)
        stop.set()
        if companion is not None:
            companion.join()
        watcher.join()
        runtime.live.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        event("stopped")
    say("stopped")
