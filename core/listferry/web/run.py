"""Running the console: alone (``listferry web``) or beside the servers (``serve`` with
``[web] enabled = true``), on uvicorn."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from listferry.config import Config
from listferry.errors import ListferryError
from listferry.web.app import create_app

log = logging.getLogger("listferry")


#: Seconds a connection has to send a whole request's head, at its start and after each
#: answer: idle or slow connections go, instead of holding one of the console's places.
HEAD_SECONDS = 10.0
#: Connections the console takes at once; past that new requests get 503.
MOST_CONNECTIONS = 200


class HeadDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection that does not send a request's
    head within :data:`HEAD_SECONDS` (uvicorn times out only connections idle after an
    answer, so 200 silent connections would otherwise lock everyone out)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_request()

    def _expect_request(self) -> None:
        self._waited_after = self.cycle
        self._deadline = self.loop.call_later(HEAD_SECONDS, self._too_slow)

    def _too_slow(self) -> None:
        if self.cycle is self._waited_after and not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self._deadline is not None and self.cycle is not self._waited_after:
            self._deadline.cancel()  # a new request came in time
            self._deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._deadline is not None:
            self._deadline.cancel()
        self._expect_request()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)


def console_server(config_path: Path, config: Config, host: str | None, port: int | None):  # type: ignore[no-untyped-def]
    """A uvicorn server of the console for the config at ``config_path``: ``[web]``'s
    host and port unless given. Each connection must send a request's head within
    :data:`HEAD_SECONDS`; past :data:`MOST_CONNECTIONS` new requests get 503. Forwarded
    headers (X-Forwarded-For) are never believed: the address is the peer's."""
    application = create_app(config_path)
    if not application.state.site.console.operators():
        log.warning("no operator can log in yet: add one with 'listferry operator add NAME'")
    return uvicorn.Server(
        uvicorn.Config(
            application,
            host=host or config.web.host,
            port=config.web.port if port is None else port,
            http=HeadDeadline,
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=5,
            limit_concurrency=MOST_CONNECTIONS,
        )
    )


def listening(server) -> str:  # type: ignore[no-untyped-def]
    return f"console listening on http://{server.config.host}:{server.config.port}/"


def run_alone(server) -> None:  # type: ignore[no-untyped-def]
    """``listferry web``: say where it listens, serve until SIGINT/SIGTERM; a port in
    use is one line that says what to do."""
    import socket

    try:
        probe = socket.create_server((server.config.host, server.config.port))
    except OSError as exc:
        raise ListferryError(
            f"{server.config.host}:{server.config.port}: cannot listen ({exc.strerror}); "
            "another console may run there: choose another with --port or [web] port"
        ) from None
    probe.close()
    print(listening(server), flush=True)
    server.run()


def beside(
    config_path: Path, config: Config, other: Callable[[threading.Event], None] | None
) -> Callable[[threading.Event], None]:
    """What ``serve`` runs beside its servers: the console, and ``other`` (the schedule)
    if given, each until ``stop`` is set."""
    server = console_server(config_path, config, None, None)

    def run(stop: threading.Event) -> None:
        thread = threading.Thread(target=server.run, name="console")
        thread.start()
        log.warning("%s", listening(server))
        try:
            if other is not None:
                other(stop)
            else:
                stop.wait()
        finally:
            server.should_exit = True
            thread.join()

    return run
