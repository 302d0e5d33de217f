"""The ``listferry`` group and what every command shares: errors as one line and an
exit code, the config and plugins opened once, JSON output, progress bars."""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from listferry import __version__
from listferry.app import App, open_app
from listferry.config import find_config
from listferry.errors import ConfigError, ListferryError, UsageError
from listferry.logs import FORMATS, error_line, setup_logging
from listferry.plugins import Host, load_host
from listferry.text import json_text

log = logging.getLogger("listferry")


class Failed(click.ClickException):
    """A command's error: one line on stderr, in the chosen log format."""

    def __init__(self, message: str, exit_code: int = 1, log_format: str = "text") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.log_format = log_format

    def show(self, file: Any = None) -> None:
        click.echo(error_line(self.format_message(), self.log_format), file=file or sys.stderr)


class Group(click.Group):
    """Turns listferry's errors into one line and an exit code, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        log_format = ctx.params.get("log_format") or "text"
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except (ConfigError, UsageError) as exc:
            raise Failed(str(exc), 2, log_format) from None
        except ListferryError as exc:
            raise Failed(str(exc), 1, log_format) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise Failed(f"{where}{exc.strerror or exc}", 1, log_format) from None
        except Exception as exc:
            if os.environ.get("LISTFERRY_DEBUG"):
                raise
            cause = exc.__cause__ if type(exc).__module__.startswith("procrastinate") else exc
            if type(cause).__module__.startswith("psycopg"):  # the cluster's database
                raise Failed(_database_failed(cause), 1, log_format) from None
            message = (
                f"internal error: {type(exc).__name__}: {exc} (set LISTFERRY_DEBUG=1 to see where)"
            )
            raise Failed(message, 1, log_format) from None


def _database_failed(exc: Exception) -> str:
    """A database error no command caught, in one line: most often tables not made yet."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if type(exc).__name__ in ("UndefinedTable", "UndefinedObject", "UndefinedFunction"):
        return (
            "the cluster's database has no listferry tables yet: run 'listferry cluster "
            f"init' ({first})"
        )
    return f"the cluster's database failed: {first}"


@dataclass(frozen=True)
class Preloaded:
    """The plugins ``main`` loaded for the config at ``path`` before the command line was
    parsed (to let them add commands): the command uses them, not a second load."""

    path: Path
    host: Host


class State:
    """What the group passes to its commands: the config path, and the app once opened."""

    def __init__(self, config: str | None, preloaded: Preloaded | None = None) -> None:
        self.config_path = find_config(config)
        self.log_format = "text"
        self._preloaded = preloaded
        self._app: App | None = None
        self._host: Host | None = None

    def app(self, tenants: Collection[str] | None = None) -> App:
        """The config and its plugins, checked; opened once per command. In cluster mode
        with ``tenants``, only those of the database are read (a worker's job)."""
        if self._app is None:
            preloaded = self._preloaded
            same = preloaded is not None and preloaded.path == self.config_path.resolve()
            self._app = open_app(self.config_path, preloaded.host if same else None, tenants)
        return self._app

    def host(self) -> Host:
        """The plugins: the config's when there is a config file, else every installed one."""
        if self._host is None:
            self._host = self.app().host if self.config_path.exists() else load_host()
        return self._host


pass_state = click.make_pass_decorator(State)


def emit_json(data: Any) -> None:
    click.echo(json_text(data, indent=2))


def emit_json_list(items: Iterable[Any]) -> None:
    """A JSON array written one item at a time, so long lists stream."""
    first = True
    click.echo("[", nl=False)
    for item in items:
        click.echo(("\n  " if first else ",\n  ") + json_text(item), nl=False)
        first = False
    click.echo("\n]" if not first else "]")


def progress_bar(label: str) -> Callable[[int], Callable[[int], None]] | None:
    """A progress bar on stderr for big files, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None

    def start(total: int) -> Callable[[int], None]:
        if total < 256 * 1024:
            return lambda done: None
        bar = click.progressbar(length=total, label=label, file=sys.stderr)

        def update(done: int) -> None:
            bar.update(min(done, total) - bar.pos)
            if done >= total:
                bar.render_finish()

        return update

    return start


@click.group(cls=Group)
@click.version_option(__version__, prog_name="listferry")
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    help="The config file (default: $LISTFERRY_CONFIG, else ./listferry.toml).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what each run does on stderr.")
@click.option(
    "--log-format",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    envvar="LISTFERRY_LOG_FORMAT",
    help="Log lines (and the final error) as human text or as JSON objects, one per line.",
)
@click.pass_context
def cli(ctx: click.Context, config: str | None, verbose: bool, log_format: str) -> None:
    """listferry keeps subscriber lists in step with customers' CRM exports."""
    setup_logging(verbose, log_format)
    ctx.obj = State(config, ctx.obj if isinstance(ctx.obj, Preloaded) else None)
    ctx.obj.log_format = log_format


def readable_file(given: str, log_format: str = "text") -> Path:
    """The regular file ``given`` names, readable, or one line and exit 2 (a usage error):
    no name, no such file, a folder, or something that is not a file (a FIFO would hang
    the command, a device never end)."""
    if not given:
        raise Failed("no file named: the file name is empty", 2, log_format)
    path = Path(given)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise Failed(f"{given}: no such file", 2, log_format) from None
    except OSError as exc:
        raise Failed(f"{given}: cannot read it: {exc.strerror}", 2, log_format) from None
    if stat.S_ISDIR(mode):
        raise Failed(f"{given}: a folder, not a file", 2, log_format)
    if not stat.S_ISREG(mode):
        raise Failed(f"{given}: not a regular file (a pipe, socket or device)", 2, log_format)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise Failed(f"{given}: cannot read it: {exc.strerror}", 2, log_format) from None
    return path


def password_from_stdin() -> str:
    """The first line of stdin, as ``--password-stdin`` takes it; none is a usage error."""
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("no password on stdin")
    return password
