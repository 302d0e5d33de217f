"""The config a running ``listferry serve`` uses, and what ``status`` learns of it.

The servers read the config file again when it changes (another file put in its place,
or its time or size), and check it whole against the plugins this process loaded when it
started: keys and values, dialects, strategies, homes. Plugins are never loaded again
(a pack installed since cannot be imported by a running process anyway): a change of the
config's ``plugins`` or ``disable`` is logged as needing a restart, and tenant changes
still take effect. A change that cannot be used is logged (at each change of the file),
the last good config stays, and the problem is written to
``state/server/config-problem.json`` for ``listferry status``; the next good config, or
the end of ``serve``, clears it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from listferry.app import App, ConfigReload
from listferry.config import Config, Tenant
from listferry.config.edit import write_atomically
from listferry.errors import ListferryError
from listferry.times import iso, utcnow

log = logging.getLogger("listferry.server")

PROBLEM_FILE = "config-problem.json"
#: How often a running serve looks at the config file between logins.
WATCH_SECONDS = 2.0


def problem_path(state_dir: Path) -> Path:
    return state_dir / "server" / PROBLEM_FILE


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as no later process with its number did: the boot and
    the start time (Linux's ``/proc``). None if it is not running: gone, or killed and
    not yet reaped (a zombie), or where there is no ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command's name, which may hold anything
    return None if fields[0] in ("Z", "X") else f"{boot}:{fields[19]}"


def is_running(pid: int, started: str | None) -> bool:
    """Whether process ``pid`` runs, and is the one that started at ``started`` (if known)."""
    if Path("/proc/self/stat").exists():
        now = process_start(pid)
        return now is not None and started in (None, now)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # running, as another user
    return True


@dataclass(frozen=True)
class ServeProblem:
    """A running serve could not use the config file as it is now."""

    config_of: str  # the time of the config file serve runs (UTC)
    reason: str
    failed_at: str
    pid: int
    started: str | None = None  # the process_start of that serve

    def to_json(self) -> dict[str, Any]:
        return {"config_of": self.config_of, "reason": self.reason, "failed_at": self.failed_at}

    def line(self) -> str:
        return f"serve runs the config of {self.config_of}: {self.reason}"


def serve_problem(config: Config) -> ServeProblem | None:
    """What a running serve of this config recorded it could not use, or None.

    A record left by a serve that is no longer running (killed) does not count, nor one
    whose process number a later process has.
    """
    try:
        data = json.loads(problem_path(config.state_dir).read_text(encoding="utf-8"))
        problem = ServeProblem(
            str(data["config_of"]),
            str(data["reason"]),
            str(data["failed_at"]),
            int(data["pid"]),
            None if data.get("started") is None else str(data["started"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return problem if is_running(problem.pid, problem.started) else None


#: The settings a running serve takes only when it starts again, as the config names them.
RESTART_SETTINGS = {
    "[server]": "server",
    "[listferry] plugins": "plugins",
    "[listferry] disable": "disable",
    "[listferry] state": "state_dir",
    "[listferry] executor": "executor",
    "[listferry] workers": "workers",
}


def restart_needed(started: Config, config: Config) -> list[str]:
    """The settings of ``config`` that differ from those serve ``started`` with."""
    return [
        name
        for name, attr in RESTART_SETTINGS.items()
        if getattr(config, attr) != getattr(started, attr)
    ]


class LiveConfig:
    """The config file as it is now: read again when it changes, for a long-running serve.

    A new tenant can log in, a new password or key holds from the next login, an allow
    list takes effect and a removed tenant is refused, without a restart. The file is
    checked against ``app``'s plugins, those this process runs with.
    """

    def __init__(self, app: App) -> None:
        self.config = self.started = app.config
        self.reload = ConfigReload(app)
        self.problem_file = problem_path(app.config.state_dir)
        self._good_at = iso((self.reload.stamp or (0, 0, 0, 0))[2] / 1e9)
        self._lock = threading.Lock()
        self.clear()  # a record an earlier serve left behind no longer holds

    def current(self) -> Config:
        """The config to use now: the file read again first if it changed."""
        with self._lock:
            try:
                app = self.reload.changed(self._warn_of_restart)
            except Exception as exc:  # a plugin's registration can raise anything
                reason = (
                    str(exc) if isinstance(exc, ListferryError) else f"{type(exc).__name__}: {exc}"
                )
                log.error(
                    "the config changed but cannot be used; serve keeps the config of %s: %s",
                    self._good_at,
                    reason,
                )
                self._record(reason)
                return self.config
            if app is not None:
                self.config = app.config
                self._good_at = iso((self.reload.stamp or (0, 0, 0, 0))[2] / 1e9)
                log.info("the config changed: read again (%d tenants)", len(app.config.tenants))
                self.clear()
        return self.config

    def _warn_of_restart(self, config: Config) -> None:
        later = restart_needed(self.started, config)
        if later:
            log.warning(
                "the config's %s changed since serve started: serve uses the "
                "new value(s) only when it starts again",
                ", ".join(later),
            )

    def _record(self, reason: str) -> None:
        data = {
            "config": str(self.config.path),
            "config_of": self._good_at,
            "reason": reason,
            "failed_at": utcnow(),
            "pid": os.getpid(),
            "started": process_start(os.getpid()),
        }
        try:
            self.problem_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomically(self.problem_file, json.dumps(data, ensure_ascii=False) + "\n")
        except OSError as exc:
            log.error("cannot write %s: %s", self.problem_file, exc)

    def clear(self) -> None:
        """Forget a recorded problem: the config in use is the file as it is."""
        try:
            self.problem_file.unlink(missing_ok=True)
        except OSError as exc:
            log.error("cannot remove %s: %s", self.problem_file, exc)

    def tenants(self) -> dict[str, Tenant]:
        return self.current().tenants

    def watch(self, stop: threading.Event, every: float = WATCH_SECONDS) -> None:
        """Look at the file every ``every`` seconds until ``stop``, so that a change that
        cannot be used shows in ``status`` without waiting for a login."""
        while not stop.wait(every):
            self.current()
