"""What every built-in server shares, whatever its protocol: one :class:`ServerRuntime`.

It holds the settings, the login :mod:`~listferry.serve.logins` (gatekeeper and guard)
and the upload dispatcher (:mod:`~listferry.serve.uploads`), shared by every protocol
in the process. :func:`serve` runs the servers until SIGTERM or SIGINT.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from listferry.app import App
from listferry.config import ServerSettings, Tenant
from listferry.serve.jail import remove_stale_uploads
from listferry.serve.live import LiveConfig
from listferry.serve.log import event
from listferry.serve.logins import Gatekeeper, LoginGuard
from listferry.serve.uploads import UploadDispatcher


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
        live = LiveConfig(app)
        return cls(
            app=app,
            settings=settings,
            guard=guard,
            gatekeeper=Gatekeeper(live.tenants, guard),
            uploads=UploadDispatcher(
                app, settings.upload_grace, live.tenants, workers=settings.sync_workers
            ),
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
    app: App,
    settings: ServerSettings,
    protocols: list[str],
    say,
    beside: Callable[[threading.Event], None] | None = None,
) -> None:
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
