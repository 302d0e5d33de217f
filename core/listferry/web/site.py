"""What the console's requests share: the config (read again when it changes), the
console's store, sessions, the login throttle and the page templates; and who is asking."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2

from listferry.app import App, open_app
from listferry.config import Config, load_config
from listferry.web import views
from listferry.web.accounts import Console, Operator, console_of
from listferry.web.security import Session, Sessions, Throttle, site_secret

HERE = Path(__file__).resolve().parent
#: In cluster mode the tenants live in the database: read them again this often.
CLUSTER_RELOAD = 5.0


@dataclass(frozen=True)
class Caller:
    """Who made a request: an operator, through a session cookie or an API token."""

    operator: Operator
    session: Session | None = None

    @property
    def admin(self) -> bool:
        return self.operator.admin


class Site:
    """One console over the config at ``config_path``."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self._lock = threading.Lock()
        self._app: App | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._read_at = 0.0
        config = self.app().config
        self.console: Console = console_of(config.state_dir)
        self.sessions = Sessions(site_secret(config.state_dir), config.web.session_hours)
        self.secure_cookies = config.web.secure_cookies
        self.page_size = config.web.page_size
        self.throttle = Throttle()
        self.overview = views.Overview()
        self.stopping = threading.Event()
        threading.Thread(
            target=self.overview.keep_fresh,
            args=(self.refresh, self.stopping),
            name="console-overview",
            daemon=True,
        ).start()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def app(self) -> App:
        """The config and plugins, opened again when the config file changed (and, in
        cluster mode, every :data:`CLUSTER_RELOAD` seconds: the tenants may have)."""
        with self._lock:
            try:
                info = os.stat(self.config_path)
                stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            except OSError:
                stamp = None
            stale = self._app is None or stamp != self._stamp
            if self._app is not None and self._app.config.cluster is not None:
                stale = stale or time.monotonic() - self._read_at > CLUSTER_RELOAD
            if stale:
                if self._app is not None and stamp == self._stamp:
                    self._app.config = load_config(self.config_path)  # the tenants only
                else:
                    self._app = open_app(self.config_path)
                self._stamp, self._read_at = stamp, time.monotonic()
            assert self._app is not None
            return self._app

    @property
    def config(self) -> Config:
        return self.app().config

    def rows(self) -> list[views.Row]:
        """Every tenant's overview row (kept between requests: :class:`views.Overview`)."""
        config = self.config
        return self.overview.rows(config, self._stamp)

    def refresh(self) -> None:
        config = self.config
        self.overview.refresh(config, self._stamp)

    def row(self, name: str) -> views.Row | None:
        config = self.config
        return self.overview.row(config, config.tenant(name), self._stamp)
