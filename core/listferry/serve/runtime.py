"""What every built-in server shares, whatever its protocol: one :class:`ServerRuntime`.

It holds the settings, the login :mod:`~listferry.serve.logins` (gatekeeper and guard),
where completed uploads go (:mod:`~listferry.serve.spool`: the local homes, or storage
in cluster mode) and the upload dispatcher (:mod:`~listferry.serve.uploads`), shared by
every protocol in the process. :func:`serve` runs the servers until SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import resource
import threading
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from listferry.app import App
from listferry.config import ServerSettings, Tenant
from listferry.config.edit import TenantTables, config_locked, write_atomically
from listferry.serve.blocks import BlockBook, blocks_path, source_of
from listferry.serve.limits import Limits
from listferry.serve.live import LiveConfig
from listferry.serve.log import Budget, event
from listferry.serve.logins import Gatekeeper, LoginGuard
from listferry.serve.spool import LocalHomes, SpooledHomes
from listferry.serve.uploads import UploadDispatcher

Homes = LocalHomes | SpooledHomes


@dataclass
class ServerRuntime:
    """What the servers of one ``listferry serve`` process share."""

    app: App
    settings: ServerSettings
    guard: LoginGuard
    gatekeeper: Gatekeeper
    uploads: UploadDispatcher
    live: LiveConfig
    homes: Homes = field(default_factory=LocalHomes)
    limits: Limits = field(default_factory=Limits)
    #: How many ``refused`` lines connections turned away before login may write.
    refusals: Budget = field(default_factory=Budget)
    #: ... and from every source together, for one reason.
    all_refusals: Budget = field(default_factory=lambda: Budget(lines=200))
    #: How many ``refused`` lines one tenant's sessions from one address may write.
    session_refusals: Budget = field(default_factory=lambda: Budget(lines=200))
    #: How many ``storage`` lines (storage did not answer) they may write.
    storage_faults: Budget = field(default_factory=lambda: Budget(lines=20))

    @classmethod
    def create(
        cls,
        app: App,
        settings: ServerSettings,
        homes: Homes | None = None,
        queue: Callable[[str], str] | None = None,
        blocks: BlockBook | None = None,
    ) -> ServerRuntime:
        """The runtime; ``homes`` says where completed uploads go (default: the local
        homes), ``queue(tenant)`` queues an on-upload tenant's sync elsewhere instead of
        running it here, ``blocks`` where the login defence is kept and shared (cluster
        mode; default: ``state/server/blocked.db``)."""
        homes = homes or LocalHomes()
        guard = LoginGuard(settings, blocks=blocks or blocks_path(app.config.state_dir))
        live = LiveConfig(app)
        rehashed = partial(keep_rehashed, app.config.path)
        return cls(
            app=app,
            settings=settings,
            guard=guard,
            gatekeeper=Gatekeeper(live.tenants, guard, rehashed, serves=homes.serves),
            uploads=UploadDispatcher(
                app, settings.upload_grace, live.tenants, workers=settings.sync_workers, queue=queue
            ),
            live=live,
            homes=homes,
            limits=Limits(folder=homes.folder, stored=homes.stored),
        )

    def refused(self, protocol: str, ip: str, reason: str) -> None:
        """Log a connection refused before login, within :attr:`refusals`: the first 20 a
        minute for one source (an address, an IPv6 /64) and reason, and 200 a minute for
        one reason from every source together; the next line logged for them, in a later
        minute, says how many were not (``suppressed=N``)."""
        suppressed = self.refusals.allow((source_of(ip), reason))
        if suppressed is None or self.all_refusals.allow((reason,)) is None:
            return  # many sources at once: the lines logged already tell it
        event("refused", protocol=protocol, ip=ip, reason=reason, suppressed=suppressed or None)

    def refused_in_session(
        self, protocol: str, tenant: str | None, ip: str, **fields: object
    ) -> None:
        """Log an operation refused in a session (a path outside the home, a limit), within
        :attr:`session_refusals`: 200 a minute for one tenant from one address, so a
        tenant sending refused requests as fast as it can does not fill the disk."""
        suppressed = self.session_refusals.allow((tenant or "", ip))
        if suppressed is not None:
            fields["suppressed"] = suppressed or None
            event("refused", protocol=protocol, tenant=tenant, ip=ip, **fields)

    def storage_failed(
        self, protocol: str, tenant: str | None, ip: str, reason: str, **fields: object
    ) -> None:
        """Log an operation on a home in storage that storage did not answer (cluster
        mode), one ``event=storage ... result=failed reason=...`` line each, within
        :attr:`storage_faults`: 20 a minute for one tenant from one address, so a client
        that retries as fast as it can while storage is away does not fill the disk."""
        suppressed = self.storage_faults.allow((tenant or "", ip))
        if suppressed is not None:
            event(
                "storage",
                level=logging.WARNING,
                protocol=protocol,
                tenant=tenant,
                ip=ip,
                **fields,
                result="failed",
                reason=reason,
                suppressed=suppressed or None,
            )

    def home(self, tenant: Tenant) -> Path:
        """The tenant's folder here: its home, or in cluster mode its spool."""
        return self.homes.folder(tenant)


def keep_rehashed(config: Path, tenant: str, old: str, new: str) -> None:
    """Put ``new`` in place of ``tenant``'s ``password_hash = old`` in the config file, the
    way ``listferry tenant password`` changes it (comments and layout kept); nothing when
    the file no longer holds ``old`` there (changed meanwhile)."""
    with config_locked(config):
        text = config.read_text(encoding="utf-8")
        table = tomllib.loads(text).get("tenants", {}).get(tenant, {})
        if table.get("password_hash") != old:
            return
        tables = TenantTables(text, config)
        tables.set(tenant, {"password_hash": new})
        write_atomically(config, tables.render())
    event("rehash", tenant=tenant, result="ok")


def raise_file_limit() -> None:
    """Let this process open as many files as the system allows it (the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        event("open_files", limit=soft, result="kept", reason=str(exc))
        return
    event("open_files", limit=hard, was=soft)


class Server(Protocol):
    """A running protocol server, made by the factory a ``register_servers`` plugin gives.

    ``factory(runtime)`` builds it; ``start()`` binds its sockets and returns the
    ``(protocol, host, port)`` it listens on; ``stop(timeout)`` stops accepting, lets
    open transfers finish for up to ``timeout`` seconds, then closes everything.
    """

    def start(self) -> list[tuple[str, str, int]]: ...

    def stop(self, timeout: float) -> None: ...


@contextmanager
def stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """While in the block, SIGTERM and SIGINT set ``stop``, from a thread of their own.

    A Python signal handler runs in the main thread between two of its bytecodes; one
    that set ``stop`` itself could wait for the lock the main thread holds at that moment
    inside ``stop.wait()``, and the process would never stop. So the handler does nothing
    and the signal's number, written by the interpreter to a socket (its wakeup fd), wakes
    a thread that sets ``stop``. Call it in the main thread.
    """
    import signal
    import socket

    wanted = {signal.SIGTERM, signal.SIGINT}
    reader, writer = socket.socketpair()
    writer.setblocking(False)

    def watch() -> None:
        with suppress(OSError):
            while data := reader.recv(64):
                if wanted & set(data):
                    stop.set()

    watcher = threading.Thread(target=watch, name="signals", daemon=True)
    watcher.start()
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        writer.close()
        watcher.join(5)
        reader.close()


def serve(
    app: App,
    settings: ServerSettings,
    protocols: list[str],
    say,
    beside: Callable[[threading.Event], None] | None = None,
    homes: Homes | None = None,
    queue: Callable[[str], str] | None = None,
    blocks: BlockBook | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run the servers for ``protocols`` until SIGTERM or SIGINT, then stop them cleanly.

    ``beside(stop)`` (the schedule) runs in a thread of its own meanwhile and is waited
    for when the servers have stopped. ``homes`` and ``queue``: as for
    :meth:`ServerRuntime.create`; so is ``blocks``. ``stop``: an event the caller sets
    (in :func:`stopped_by_signals` already) instead of the signals.
    """
    from listferry.errors import ListferryError

    for path in (settings.tls_cert, settings.tls_key, settings.ssh_host_key):
        if not path.exists():
            raise ListferryError(f"{path} is missing: run 'listferry init' to make the server keys")
    if stop is not None:
        _serve(app, settings, protocols, say, stop, beside, homes, queue, blocks)
        return
    stop = threading.Event()
    with stopped_by_signals(stop):
        _serve(app, settings, protocols, say, stop, beside, homes, queue, blocks)


def _serve(
    app: App,
    settings: ServerSettings,
    protocols: list[str],
    say: Callable[[str], object],
    stop: threading.Event,
    beside: Callable[[threading.Event], None] | None,
    homes: Homes | None,
    queue: Callable[[str], str] | None,
    blocks: BlockBook | None,
) -> None:
    companion: threading.Thread | None = None
    raise_file_limit()
    runtime = ServerRuntime.create(app, settings, homes, queue, blocks)
    runtime.homes.remove_stale_uploads(app.config.tenants)
    watcher = threading.Thread(target=runtime.live.watch, args=(stop,), name="config-watch")
    watcher.start()
    from listferry.serve.pulse import keep_beating

    pulse = threading.Thread(
        target=keep_beating,
        args=(runtime.limits, app.config.state_dir, protocols, stop),
        name="pulse",
    )
    pulse.start()
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
        pulse.join()
        runtime.live.clear()
        runtime.guard.close()
        event("stopped")
    say("stopped")
