"""Running the console: alone (``listferry web``) or beside the servers (``serve`` with
``[web] enabled = true``), on uvicorn."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import uvicorn

from listferry.config import Config
from listferry.web.app import create_app

log = logging.getLogger("listferry")


def console_server(config_path: Path, config: Config, host: str | None, port: int | None):  # type: ignore[no-untyped-def]
    """A uvicorn server of the console for the config at ``config_path``: ``[web]``'s
    host and port unless given. Keep-alive connections close after 5 idle seconds, and
    past 200 open connections new requests get 503."""
    application = create_app(config_path)
    if not application.state.site.console.operators():
        log.warning("no operator can log in yet: add one with 'listferry operator add NAME'")
    return uvicorn.Server(
        uvicorn.Config(
            application,
            host=host or config.web.host,
            port=config.web.port if port is None else port,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=5,
            limit_concurrency=200,
        )
    )


def beside(
    config_path: Path, config: Config, other: Callable[[threading.Event], None] | None
) -> Callable[[threading.Event], None]:
    """What ``serve`` runs beside its servers: the console, and ``other`` (the schedule)
    if given, each until ``stop`` is set."""
    server = console_server(config_path, config, None, None)

    def run(stop: threading.Event) -> None:
        thread = threading.Thread(target=server.run, name="console")
        thread.start()
        log.info("console listening on http://%s:%d/", config.web.host, config.web.port)
        try:
            if other is not None:
                other(stop)
            else:
                stop.wait()
        finally:
            server.should_exit = True
            thread.join()

    return run
