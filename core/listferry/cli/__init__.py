"""The ``listferry`` command line. Errors are one line on stderr, never a traceback.

Exit codes: 0 success; 2 a usage or config error, to be fixed in the command or the
config (a value an option or argument does not take, a tenant, dialect, strategy or
protocol that does not exist, input missing on stdin, a config that does not check);
1 a refused operation, a voided or failed run, or a command that could not do its job
(a tenant that exists already, a run the tenant does not have, a file that cannot be
read, loaded or sent). tests/test_exit_codes.py holds the table.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from listferry import __version__
from listferry.app import App, open_app, tenant_dialect
from listferry.config import COUNT_POLICIES, Tenant, find_config, load_config
from listferry.config.starter import STARTER_CONFIG
from listferry.errors import ConfigError, ListferryError, UsageError
from listferry.logs import FORMATS, error_line, setup_logging

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
            message = (
                f"internal error: {type(exc).__name__}: {exc} (set LISTFERRY_DEBUG=1 to see where)"
            )
            raise Failed(message, 1, log_format) from None


class State:
    """What the group passes to its commands: the config path, and the app once opened."""

    def __init__(self, config: str | None) -> None:
        self.config_path = find_config(config)
        self.log_format = "text"
        self._app: App | None = None

    def app(self) -> App:
        if self._app is None:
            self._app = open_app(self.config_path)
        return self._app


pass_state = click.make_pass_decorator(State)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def emit_json_list(items: Iterable[Any]) -> None:
    """A JSON array written one item at a time, so long lists stream."""
    first = True
    click.echo("[", nl=False)
    for item in items:
        click.echo(("\n  " if first else ",\n  ") + json.dumps(item, ensure_ascii=False), nl=False)
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
    "--log-format", type=click.Choice(FORMATS), default="text", show_default=True,
    envvar="LISTFERRY_LOG_FORMAT",
    help="Log lines (and the final error) as human text or as JSON objects, one per line.",
)  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, config: str | None, verbose: bool, log_format: str) -> None:
    """listferry keeps subscriber lists in step with customers' CRM exports."""
    setup_logging(verbose, log_format)
    ctx.obj = State(config)
    ctx.obj.log_format = log_format


@cli.command()
@pass_state
def init(state: State) -> None:
    """Write a starter config and create the folders it names. Safe to run twice."""
    path = state.config_path
    if path.exists():
        click.echo(f"{path} exists; left as it is")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        from listferry.ops.tenants import write_atomically

        write_atomically(path, STARTER_CONFIG)
        click.echo(f"wrote {path}")
    config = load_config(path)
    private = [config.state_dir, config.homes_dir]
    homes = [Path(t.home) for t in config.tenants.values() if t.is_local]
    for folder in [*private, *homes]:
        if folder.is_dir():
            click.echo(f"folder {folder} exists already")
            continue
        folder.mkdir(parents=True, exist_ok=True, mode=0o700 if folder in private else 0o777)
        click.echo(f"created folder {folder}")
    from listferry.serve.keys import ensure_server_keys

    for made in ensure_server_keys(config.server):
        click.echo(f"made {made}")


@cli.command()
@click.option("--protocols", help="Comma-separated, e.g. ftps,sftp (default: every installed one).")
@click.option("--host", help="The address to listen on (default: [server] host, 127.0.0.1).")
@click.option("--ftp-port", type=click.IntRange(0, 65535), help="0: any free port.")
@click.option("--ftps-port", type=click.IntRange(0, 65535), help="0: any free port.")
@click.option("--sftp-port", type=click.IntRange(0, 65535), help="0: any free port.")
@click.option(
    "--no-schedule", is_flag=True,
    help="Do not run the schedule (when `listferry schedule`, cron or a timer runs the syncs).",
)  # fmt: skip
@click.option(
    "--show-keys", is_flag=True,
    help="Print the servers' key fingerprints, as `listferry server keys` does, and exit.",
)  # fmt: skip
@pass_state
def serve(
    state: State, protocols: str | None, host: str | None, ftp_port: int | None,
    ftps_port: int | None, sftp_port: int | None, no_schedule: bool, show_keys: bool,
) -> None:  # fmt: skip
    """Run the FTP, FTPS and SFTP servers, and the schedule, until SIGINT or SIGTERM.

    Each tenant's sync runs at its `schedule` (in its `timezone`), its return file at
    its `export_schedule`, the digest at [notify] digest_at; --no-schedule leaves that
    to `listferry schedule` or cron.
    """
    from dataclasses import replace

    overrides = {"host": host, "ftp_port": ftp_port, "ftps_port": ftps_port,
                 "sftp_port": sftp_port}  # fmt: skip
    if show_keys:
        from listferry.serve.fingerprints import server_keys

        server = replace(load_config(state.config_path).server,
                         **{k: v for k, v in overrides.items() if v is not None})  # fmt: skip
        _show_keys(server_keys(server), known_hosts=False, json_=False)
        return

    from listferry.serve.runtime import serve as run_servers

    app = state.app()
    settings = replace(app.config.server, **{k: v for k, v in overrides.items() if v is not None})
    chosen = protocols.split(",") if protocols else app.host.servers.names()
    if not chosen:
        raise ListferryError("no server plugin is installed")
    for name in chosen:
        app.host.servers.get(name.strip())
    logging.getLogger("listferry.server").setLevel(logging.INFO)
    beside = None
    if not no_schedule:
        from listferry.ops.scheduler import Scheduler

        scheduler = Scheduler(state.config_path.resolve())
        scheduler.reload()
        _say_plan(scheduler)
        beside = scheduler.run
    run_servers(app, settings, [n.strip() for n in chosen], lambda text: click.echo(text), beside)


@cli.group()
def server() -> None:
    """The built-in servers: what customers need to trust them."""


@server.command("keys")
@click.option(
    "--host", metavar="NAME",
    help="The name customers connect to, for the known_hosts lines (default: [server] host).",
)  # fmt: skip
@click.option(
    "--known-hosts", "known_hosts", is_flag=True,
    help="Print only the known_hosts lines, for a file to hand a customer.",
)  # fmt: skip
@click.option("--json", "json_", is_flag=True, help="Print them as JSON.")
@pass_state
def server_keys(state: State, host: str | None, known_hosts: bool, json_: bool) -> None:
    """The TLS certificate and SSH host key fingerprints, as customers' clients show them.

    The certificate's SHA-256 fingerprint as `openssl x509 -fingerprint -sha256`, curl,
    lftp and FileZilla show it, its names and expiry; each SSH host key's fingerprint as
    `ssh-keygen -lf` shows it and its known_hosts line (`[host]:port type key`). Warnings
    (a certificate that does not name HOST, expires soon, or whose key does not match) go
    to stderr. Exit 2 when a key file is missing or unreadable.
    """
    from listferry.serve.fingerprints import server_keys

    if json_ and known_hosts:
        raise click.UsageError("--json and --known-hosts do not go together")
    keys = server_keys(load_config(state.config_path).server, host, require_host=known_hosts)
    _show_keys(keys, known_hosts, json_)


def _show_keys(keys: dict[str, Any], known_hosts: bool, json_: bool) -> None:
    from listferry.serve.fingerprints import describe

    if json_:
        emit_json(keys)
        return
    lines = [k["known_hosts"] for k in keys["ssh_host_keys"]] if known_hosts else describe(keys)
    for line in lines:
        click.echo(line)
    for warning in keys["warnings"]:
        click.echo(f"warning: {warning}", err=True)


@cli.command()
@pass_state
def schedule(state: State) -> None:
    """Run the schedule alone, in the foreground, until SIGINT or SIGTERM.

    For operators who run the servers elsewhere (or none): each tenant's sync at its
    `schedule`, its return file at its `export_schedule`, the digest at [notify]
    digest_at, each as its own process through the [listferry] executor.
    """
    import signal
    import threading

    from listferry.ops.scheduler import Scheduler

    state.app()  # a config that cannot be used stops here, with its line
    stop = threading.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    scheduler = Scheduler(state.config_path.resolve())
    try:
        scheduler.reload()
        _say_plan(scheduler)
        scheduler.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("stopped")


def _say_plan(scheduler: Any) -> None:
    """Each scheduled job's next time, one line each, as the schedule starts."""
    planned = sorted(scheduler.next_times().items())
    for tenant, times in planned:
        for kind, at in sorted(times.items()):
            click.echo(f"{tenant or '(all)'}: next {kind} {at}")
    if not planned:
        click.echo("schedule: nothing scheduled")


@cli.command()
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def status(state: State, json_: bool) -> None:
    """One line per tenant: last attempt, list size, pending files, return file, next run.

    The last attempt is every kind (a home that could not be reached is a failed run);
    beside it the last applied list and how old it is, since when the attempts fail,
    when the home was last looked at, lists waiting for their count file, and files no
    list pattern takes. `silent` marks a tenant whose last file (or, if it never sent
    one, its start) is older than its `expect_file_within`. When a running `serve` could
    not use the config file as it is now, a first line on stderr says so (`serve_config`
    in --json). Exit 1 when any tenant's last run was voided or failed, a tenant is
    silent, or serve runs an older config.
    """
    from listferry.ops.status import statuses
    from listferry.serve.live import serve_problem

    config = state.app().config
    found = statuses(config)
    problem = serve_problem(config)
    if json_:
        served = problem.to_json() if problem else None
        emit_json([item.to_json() | {"serve_config": served} for item in found])
    else:
        if problem:
            click.echo(problem.line(), err=True)
        colour = sys.stdout.isatty()
        for item in found:
            click.echo(_status_line(item, colour))
    if problem or any(i.last_status in ("voided", "failed") or i.silent or i.error for i in found):
        sys.exit(1)


_COLOURS = {"applied": "green", "voided": "yellow", "failed": "red", "skipped": "cyan"}


def _status_line(item: Any, colour: bool) -> str:
    outcome = item.last_status or ("no file yet" if item.looked_at else "never run")
    if colour:
        outcome = click.style(outcome, fg=_COLOURS.get(item.last_status or ""), bold=True)
    parts = [f"{item.tenant}: {outcome}"]
    if item.last_run is not None:
        parts.append(f"run {item.last_run} {item.last_run_at}")
    if item.subscribers is not None:
        parts.append(f"{item.subscribers} active")
    parts.append(f"{'-' if item.pending is None else item.pending} pending")
    if item.days_since_applied is not None:
        if item.last_status == "applied":
            parts.append(f"applied {item.days_since_applied} d ago")
        else:
            parts.append(
                f"last applied run {item.last_applied_run} {item.days_since_applied} d ago"
            )
    if item.failing_since:
        parts.append(f"failing since {item.failing_since}")
    if item.looked_at and item.looked_at > (item.last_run_at or ""):
        parts.append(f"home looked at {item.looked_at}")
    for waiting in item.waiting:
        parts.append(f"{waiting['file']} waiting for its count file until {waiting['until']}")
    if item.ignored:
        shown = ", ".join(item.ignored[:3])
        if len(item.ignored) > 3:
            shown += f" and {len(item.ignored) - 3} more"
        parts.append(f"{len(item.ignored)} file(s) ignored (no list pattern takes them): {shown}")
    if item.last_export:
        parts.append(f"return file {item.last_export_at}")
    if item.next_sync:
        parts.append(f"next {item.next_sync}")
    line = ", ".join(parts)
    if item.silent:
        warning = "no file for longer than expected"
        line += "; " + (click.style(warning, fg="red") if colour else warning)
    if item.error:
        line += f"; {item.error}"
    elif item.last_status in ("voided", "failed") and item.last_reason:
        line += f": {item.last_reason}"
    return line


@cli.command()
@click.option("--hours", type=click.FloatRange(min=1), default=24, show_default=True,
              help="The window the digest covers, ending now.")  # fmt: skip
@click.option("--send", is_flag=True, help="Mail it to [notify.email] to instead of printing.")
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def digest(state: State, hours: float, send: bool, json_: bool) -> None:
    """Which tenants applied, were voided, failed, or sent no file for too long.

    The schedule sends it daily at [notify] digest_at; run it by hand to see it now.
    """
    from listferry.ops.digest import make_digest
    from listferry.ops.notify import send_email

    config = state.app().config
    report = make_digest(config, hours)
    if send:
        if config.notify.email is None:
            raise ConfigError(f"{config.path}: --send needs a [notify.email] table")
        email = config.notify.email
        send_email(email, list(email.to), report.subject(), report.text())
        click.echo(f"sent the digest to {', '.join(email.to)}")
    elif json_:
        emit_json(report.to_json())
    else:
        click.echo(report.text(), nl=False)


@cli.group()
def tenant() -> None:
    """Add, change, show, list and remove tenants (customers).

    Each change is checked whole before the config file is replaced, keeping its
    comments and layout; a running `serve` takes it from the next login.
    """


def _password_from_stdin() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("no password on stdin")
    return password


@tenant.command("add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the tenant's password from stdin.")
@click.option("--ssh-key", type=click.Path(exists=True, dir_okay=False), help="Public key file.")
@click.option("--allow-ip", "allow_ips", multiple=True, help="Allowed IP or CIDR (repeatable).")
@click.option("--dialect", help="The tenant's CRM dialect (default: from [defaults]).")
@click.option("--strategy", help="full, incremental, add-only, update-only or opt-out.")
@click.option("--count-file", type=click.Choice(COUNT_POLICIES), help="Count file policy.")
@click.option("--home", help="A folder, or a URL for a customer-hosted server.")
@pass_state
def tenant_add(
    state: State, name: str, password_stdin: bool, ssh_key: str | None,
    allow_ips: tuple[str, ...], dialect: str | None, strategy: str | None,
    count_file: str | None, home: str | None,
) -> None:  # fmt: skip
    """Add a tenant to the config and create its home."""
    from listferry.config.passwords import hash_password
    from listferry.ops.tenants import add_tenant, check_name, read_ssh_keys

    check_name(name)
    app = state.app()
    settings: dict[str, Any] = {
        "home": home,
        "dialect": dialect,
        "strategy": strategy,
        "count_file": count_file,
        "allow_ips": list(allow_ips) or None,
    }
    if password_stdin:
        settings["password_hash"] = hash_password(_password_from_stdin())
    if ssh_key:
        settings["ssh_keys"] = read_ssh_keys(Path(ssh_key))
    config = add_tenant(app, name, settings)
    added = config.tenant(name)
    if added.is_local:
        Path(added.home).mkdir(parents=True, exist_ok=True)
    added.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    click.echo(f"added tenant {name}: home {added.home}")


@tenant.command("set")
@click.argument("name")
@click.argument("settings", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--allow-ip", "allow_ips", multiple=True,
              help="Allowed IP or CIDR (repeatable): the new allow list.")  # fmt: skip
@click.option("--add-allow-ip", "add_ips", multiple=True,
              help="Add an IP or CIDR to the allow list (repeatable).")  # fmt: skip
@click.option("--remove-allow-ip", "remove_ips", multiple=True,
              help="Take an IP or CIDR out of the allow list (repeatable).")  # fmt: skip
@click.option("--dialect", help="The tenant's CRM dialect.")
@click.option("--strategy", help="full, incremental, add-only, update-only or opt-out.")
@click.option("--count-file", type=click.Choice(COUNT_POLICIES), help="Count file policy.")
@click.option("--home", help="A folder, or a URL for a customer-hosted server.")
@click.option("--password-stdin", is_flag=True, help="Read a new password from stdin.")
@click.option("--ssh-key", type=click.Path(exists=True, dir_okay=False),
              help="Replace its SFTP keys with those in this public key file.")  # fmt: skip
@click.option("--unset", "unset", multiple=True, metavar="KEY",
              help="Take KEY out of the tenant's table, so [defaults] or the default "
              "applies (repeatable).")  # fmt: skip
@pass_state
def tenant_set(
    state: State, name: str, settings: tuple[str, ...], allow_ips: tuple[str, ...],
    add_ips: tuple[str, ...], remove_ips: tuple[str, ...], dialect: str | None,
    strategy: str | None, count_file: str | None, home: str | None, password_stdin: bool,
    ssh_key: str | None, unset: tuple[str, ...],
) -> None:  # fmt: skip
    """Change a tenant, keeping the config's comments and layout.

    KEY=VALUE sets any tenant key (see docs/operator.md); VALUE is read as TOML when
    the key takes it so (max_invalid_share=0.1, require_tls=true, allow_ips=[]), else
    as text (schedule=02:30). The new config is checked whole before the file is
    replaced: a refused change leaves it as it was. A running `serve` takes the change
    from the next login; secrets are never printed.
    """
    from listferry.config.edit import UNSET
    from listferry.config.passwords import hash_password
    from listferry.ops.tenants import (
        SECRET_KEYS,
        parse_setting,
        read_ssh_keys,
        set_tenant,
        tenant_key,
    )

    values: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if key in values:
            raise click.UsageError(f"{key} is given twice")
        values[key] = value

    for key, value in (("dialect", dialect), ("strategy", strategy), ("count_file", count_file)):
        if value is not None:
            put(key, value)
    if home is not None:
        put(*parse_setting(f"home={home}"))
    if allow_ips:
        put("allow_ips", list(allow_ips))
    if ssh_key:
        put("ssh_keys", read_ssh_keys(Path(ssh_key)))
    for text in settings:
        put(*parse_setting(text))
    for key in unset:
        put(tenant_key(key), UNSET)
    if (add_ips or remove_ips) and "allow_ips" in values:
        raise click.UsageError("give the allow list whole, or what to add and remove; not both")
    if not values and not add_ips and not remove_ips and not password_stdin:
        raise click.UsageError("nothing to change: give an option or KEY=VALUE")
    if password_stdin:
        put("password_hash", hash_password(_password_from_stdin()))
    app = state.app()
    before = app.config.tenant(name)
    config, changed = set_tenant(app, name, values, add_ips, remove_ips)
    after = config.tenant(name)
    if not changed:
        click.echo(f"{name}: nothing changed (the config says so already)")
        return
    for key in dict.fromkeys([*values, *(["allow_ips"] if add_ips or remove_ips else [])]):
        now = getattr(after, key)
        if key in SECRET_KEYS:
            shown = "set (not shown)" if now is not None else "not set"
        elif key == "ssh_keys":
            shown = f"{len(now)} key(s)"
        else:
            shown = json.dumps(list(now) if isinstance(now, tuple) else now, ensure_ascii=False)
        how = "unset, now" if values.get(key) is UNSET else "="
        click.echo(f"{name}: {key} {how} {shown}")
    if "remote_password" in values and values["remote_password"] is not UNSET:
        click.echo(
            f"{name}: a password on the command line shows in the process list and shell "
            "history; remote_password_env keeps it out of both",
            err=True,
        )
    if after.home != before.home and after.is_local:
        Path(after.home).mkdir(parents=True, exist_ok=True)
        if before.is_local and Path(before.home).exists():
            click.echo(f"{name}: the files in the old home {before.home} stay there")


@tenant.command("show")
@click.argument("name")
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def tenant_show(state: State, name: str, json_: bool) -> None:
    """One tenant's settings as they apply, and where each comes from; never a secret.

    A setting not in the tenant's own table comes from [defaults], else is the default.
    Passwords show only as set or not, SSH keys as a count.
    """
    from listferry.ops.tenants import describe, describe_lines

    shown = describe(state.app().config, name)
    if json_:
        emit_json(shown)
        return
    for line in describe_lines(shown):
        click.echo(line)


@tenant.command("remove")
@click.argument("name")
@click.option("--purge", is_flag=True, help="Delete its store, archive and home.")
@pass_state
def tenant_remove(state: State, name: str, purge: bool) -> None:
    """Take a tenant out of the config; keep its folders aside, or delete them.

    Refused while a run or an export of the tenant is under way, and none can start
    while it is removed. Its state folder (store, archive) and a local home go to
    state/_removed/NAME-<UTC time>/, or are deleted with --purge. A home on the
    customer's server is not touched. A running `serve` refuses the tenant's logins
    from the next one; sessions already open run on until they end.
    """
    from listferry.ops.tenants import remove_tenant

    for line in remove_tenant(state.app(), name, purge):
        click.echo(line)


@tenant.command("password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, required=True, help="Read it from stdin.")
@pass_state
def tenant_password(state: State, name: str, password_stdin: bool) -> None:
    """Give a tenant a new upload password (stored as a salted hash).

    The config file is changed in place: only the tenant's password_hash line. A running
    `serve` takes the new password for the next login.
    """
    from listferry.config.passwords import hash_password
    from listferry.ops.tenants import set_tenant

    password = _password_from_stdin()
    set_tenant(state.app(), name, {"password_hash": hash_password(password)})
    click.echo(f"{name}: new password set")


@tenant.command("ssh-keys")
@click.argument("name")
@click.argument("key_file", type=click.Path(exists=True, dir_okay=False))
@pass_state
def tenant_ssh_keys(state: State, name: str, key_file: str) -> None:
    """Replace a tenant's SFTP public keys with those in KEY_FILE (authorized_keys form).

    To rotate a key without a gap, put the old and the new key in the file; once the
    customer uses the new one, run it again with the new key alone.
    """
    from listferry.ops.tenants import read_ssh_keys, set_tenant

    keys = read_ssh_keys(Path(key_file))
    set_tenant(state.app(), name, {"ssh_keys": keys})
    click.echo(f"{name}: {len(keys)} SSH key(s) set")


@tenant.command("list")
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def tenant_list(state: State, json_: bool) -> None:
    """List tenants and their settings (never a secret)."""
    tenants = [t.to_json() for t in state.app().config.tenants.values()]
    if json_:
        emit_json(tenants)
        return
    for t in tenants:
        ips = ", ".join(t["allow_ips"]) or "-"
        click.echo(
            f"{t['name']}  dialect={t['dialect']} strategy={t['strategy']} "
            f"count_file={t['count_file']} allow_ips={ips}  {t['home']}"
        )


@cli.command()
@click.argument("tenants", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every tenant in the config.")
@click.option("--force", is_flag=True, help="Apply even past the shrink guard (this run only).")
@click.option("--json", "json_", is_flag=True, help="Print the runs as JSON.")
@pass_state
def sync(state: State, tenants: tuple[str, ...], all_: bool, force: bool, json_: bool) -> None:
    """Run each tenant's pending list files now. Exit 1 if any run is voided or failed.

    Tenants run in parallel, up to [listferry] workers at a time; their runs are printed
    in the order the tenants were named (or appear in the config, with --all).
    """
    from listferry.ops.night import sync_and_export
    from listferry.ops.parallel import run_tenants
    from listferry.sync.run import tell_finished

    app = state.app()
    if not tenants and not all_:
        raise click.UsageError("name one or more tenants, or give --all")
    names = list(app.config.tenants) if all_ else list(tenants)
    chosen = [app.config.tenant(name) for name in names]
    workers = min(app.config.workers, len(chosen))

    def run_one(tenant: Tenant) -> list[Any]:
        progress = progress_bar(f"{tenant.name}: reading") if workers == 1 else None
        return sync_and_export(app, tenant, force, progress)

    def crashed(runs: list[Any]) -> None:
        for run in runs:
            tell_finished(app, app.config.tenant(run.tenant), [run])

    runs = []
    for tenant_runs in run_tenants(run_one, chosen, workers, crashed):
        runs.extend(tenant_runs)
        for run in tenant_runs:
            if not json_:
                click.echo(run.describe())
            if state.log_format == "json":
                log_run(run)
    if json_:
        emit_json([run.to_json() for run in runs])
    if any(run.status in ("voided", "failed") for run in runs):
        sys.exit(1)


@cli.command()
@click.argument("tenant")
@click.argument("run_id", type=click.IntRange(min=1))
@click.option("--force", is_flag=True, help="Apply even what the shrink guard would stop.")
@click.option("--json", "json_", is_flag=True, help="Print the new run as JSON.")
@pass_state
def replay(state: State, tenant: str, run_id: int, force: bool, json_: bool) -> None:
    """Apply the file that run RUN_ID archived once more, recorded as a new run.

    For after a fix: a dialect corrected, a check relaxed, or a list to restore. Every
    check runs again; only the repeat rule does not hold it back. Its file becomes the
    last applied one, and its report goes to the customer's home. Exit 1 when the new
    run is voided or failed.
    """
    from listferry.sync.run import replay_run

    app = state.app()
    run = replay_run(app, app.config.tenant(tenant), run_id, force)
    if json_:
        emit_json(run.to_json())
    else:
        click.echo(f"{run.describe()} (replay of run {run_id})")
    if run.status in ("voided", "failed"):
        sys.exit(1)


def log_run(run: Any) -> None:
    """A JSON log line for each run (seen with -v), its record in the ``run`` field."""
    log.info("%s", run.describe(), extra={"tenant": run.tenant, "run": run.to_json()})


@cli.command()
@click.argument("tenant")
@click.argument("run_id", required=False, type=click.IntRange(min=1))
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="At most N runs."
)
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def runs(state: State, tenant: str, run_id: int | None, limit: int, json_: bool) -> None:
    """A tenant's run history, newest first; with RUN_ID, that run's full report."""
    from listferry.store.database import Store

    chosen = state.app().config.tenant(tenant)
    with Store(chosen.database) as store:
        history = store.runs(chosen.name, None if run_id else limit)
    if run_id is not None:
        found = [run for run in history if run.run_id == run_id]
        if not found:
            raise ListferryError(f"{chosen.name} has no run {run_id} (`listferry runs {tenant}`)")
        (run,) = found
        if json_:
            emit_json({**run.to_json(), "report": run.report})
        else:
            click.echo(run.report or run.describe(), nl=not (run.report or "").endswith("\n"))
        return
    if json_:
        emit_json([run.to_json() for run in history])
        return
    for run in history:
        click.echo(f"{run.finished_at or run.started_at}  {run.describe()}")


@cli.command()
@click.argument("tenant")
@click.option(
    "--status",
    type=click.Choice(["active", "unsubscribed", "removed", "all"]),
    default="active",
    show_default=True,
    help="Which subscribers to list.",
)
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def subscribers(state: State, tenant: str, status: str, json_: bool) -> None:
    """A tenant's subscribers."""
    from listferry.store.database import Store

    chosen = state.app().config.tenant(tenant)
    with Store(chosen.database) as store:
        rows = store.subscribers(status)
        if json_:
            emit_json_list(rows)
            return
        for row in rows:
            name = " ".join(filter(None, (row["first_name"], row["last_name"])))
            click.echo(f"{row['email']}\t{name}\t{row['segment_code'] or ''}\t{row['status']}")


@cli.group()
def events() -> None:
    """Engagement events: opens, clicks, unsubscribes."""


@events.command("load")
@click.argument("tenant")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@pass_state
def events_load(state: State, tenant: str, file: str) -> None:
    """Load events from a CSV or JSON-lines file (email, type, at, topic).

    Says how many were stored, how many were known already, and how many name an address
    that is not on the tenant's list (a typo, or the file of another tenant?).
    """
    from listferry.store.database import Store
    from listferry.store.events import load_events

    chosen = state.app().config.tenant(tenant)
    with Store(chosen.database) as store:
        loaded = load_events(store, Path(file))
    click.echo(
        f"{tenant}: {loaded.stored} events stored, {loaded.duplicates} already known; "
        f"events for addresses not on the list: {loaded.not_on_list}"
    )


@cli.command()
@click.argument("tenant")
@click.option(
    "--to", "to", metavar="PATH_OR_URL",
    help="A folder or URL (default: the tenant's export_to, else its home's outbox/).",
)  # fmt: skip
@click.option("--json", "json_", is_flag=True, help="Print what was delivered as JSON.")
@pass_state
def export(state: State, tenant: str, to: str | None, json_: bool) -> None:
    """Render the tenant's return file and deliver it with its count file.

    Exit 1 when it could not be made or delivered; then nothing was recorded.
    """
    from urllib.parse import urlsplit

    from listferry.export.run import export_tenant

    app = state.app()
    chosen = app.config.tenant(tenant)
    scheme = urlsplit(to).scheme.lower() if to and "://" in to else "file"
    if scheme not in app.host.transports:
        known = ", ".join(app.host.transports.names())
        raise UsageError(f"--to: no transport for {scheme}:// (known: {known})")
    result = export_tenant(app, chosen, to)
    if json_:
        emit_json(result.to_json())
        return
    click.echo(
        f"{result.tenant}: {result.file} ({result.records} records, {result.subscribers}) "
        f"and {result.count_file} delivered to {result.target}"
    )
    if result.unmatched:
        click.echo(
            f"{result.tenant}: {result.unmatched} subscriber(s) left out: no id the CRM's "
            "import matches on yet (they go in a later file once a list brings it)"
        )


@cli.command()
@click.argument("file")
@click.option("--tenant", "tenant_name", metavar="NAME", help="The verdict of this tenant's sync.")
@click.option("--dialect", metavar="D", help="Read as dialect D (default: the tenant's).")
@click.option("--count-file", metavar="F", help="The count file (default: <stem>_count.txt).")
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def check(
    state: State, file: str, tenant_name: str | None, dialect: str | None,
    count_file: str | None, json_: bool,
) -> None:  # fmt: skip
    """Dry run: the verdict a sync would give FILE, with nothing written. Exit 1 if void.

    With --tenant, that tenant's sync exactly: its dialect, count-file policy, limits,
    the plan against its current list and every plan guard (the shrink guard too).
    Without, the [defaults] settings and limits, planned against an empty list (guards
    that compare with a tenant's list are left out, and the output says so).

    Warns about what the file says that the dialect does not read, such as a column that
    looks like an opt-out flag (`Do Not Email`, `Unsubscribed`) that it keeps as a plain
    field; naming it in the tenant's `opt_out_columns` makes it opt people out.
    """
    from dataclasses import replace

    from listferry.config import defaults_tenant
    from listferry.plugins import load_host
    from listferry.sync.check import check_file

    for given in (file, count_file):
        if given is not None:
            _readable(Path(given), state.log_format)
    if state.config_path.exists() or tenant_name:
        config, host = state.app().config, state.app().host
        chosen = config.tenant(tenant_name) if tenant_name else config.defaults_tenant()
    else:
        host = load_host()
        chosen = defaults_tenant({}, Path.cwd(), Path.cwd() / "state")
    if dialect is not None:
        if dialect not in host.dialects:
            known = ", ".join(host.dialects.names())
            raise Failed(f"unknown dialect {dialect!r} (known: {known})", 2, state.log_format)
        chosen = replace(chosen, dialect=dialect)
    dialect = chosen.dialect
    count = Path(count_file) if count_file else None
    result = check_file(host, Path(file), chosen, count, with_store=tenant_name is not None)
    read_as = tenant_dialect(host, chosen)
    mapping = [
        (header, canonical, spelling)
        for header, canonical, spelling in read_as.explain_header(list(result.columns))
        if result.columns.get(header) == canonical  # a column refused as a second email stays
    ]
    also = {
        list(result.columns)[index]: words
        for index, words in read_as.also_opt_out_columns(list(result.columns))
    }
    if json_:
        data = result.to_json()
        data["mapping"] = [
            {"header": header, "field": canonical or f"fields.{header}", "matched": spelling}
            | ({"opts_out_on": sorted(also[header])} if header in also else {})
            for header, canonical, spelling in mapping
        ]
        emit_json(data)
    else:
        verdict = "ok" if result.status == "ok" else f"void: {result.reason}"
        whose = f" (as tenant {result.tenant}'s sync)" if result.tenant else ""
        click.echo(f"{file}: {verdict}{whose}")
        if result.hint:
            click.echo(f"  ({result.hint})")
        line = (
            f"  {result.records} records, {result.invalid} invalid, {result.duplicates} duplicates"
        )
        if result.encoding:
            line += f"; {result.encoding}, delimiter {result.delimiter!r}"
        click.echo(line)
        if result.plan is not None:
            planned = ", ".join(f"{n} {what}" for what, n in result.plan.items()
                                if what != "active_before")  # fmt: skip
            click.echo(f"  plan against {result.plan['active_before']} active: {planned}")
        if mapping:
            click.echo(f"  columns, as dialect {dialect!r} reads them:")
        for header, canonical, spelling in mapping:
            if canonical is None and header in also:
                how = f"kept as fields.{header}, and opts out on {_words(also[header])}"
            elif canonical is None:
                how = f"kept as fields.{header} (the dialect maps no field to this header)"
            elif spelling == header:
                how = f"{canonical} (the dialect's header {spelling!r})"
            else:
                how = f"{canonical} (matches the dialect's {spelling!r})"
            click.echo(f"    {header!r} -> {how}")
        missing = [f for f in read_as.aliases if f not in result.columns.values()]
        if result.columns and missing:
            click.echo(f"  not in the file: {', '.join(missing)}")
        if "opt_out" in result.columns.values():
            words = (
                f"  opt-out words: {_words(read_as.opt_out_true)} opt out; "
                f"{_words(read_as.opt_out_false)} stay subscribed; any other word is invalid"
            )
            click.echo(words)
        for item in result.invalid_sample[:20]:
            click.echo(f"  line {item.line}: {item.reason}")
        for note in result.notes:
            click.echo(f"  note: {note}")
        for warning in result.warnings:
            click.echo(f"  warning: {warning}")
    if result.status != "ok":
        sys.exit(1)


def _readable(path: Path, log_format: str) -> None:
    """A file the command can read, or one line and exit 2 (a usage error)."""
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise Failed(f"{path}: no such file", 2, log_format) from None
    except IsADirectoryError:
        raise Failed(f"{path}: a folder, not a file", 2, log_format) from None
    except OSError as exc:
        raise Failed(f"{path}: cannot read it: {exc.strerror}", 2, log_format) from None


def _words(words: frozenset[str]) -> str:
    return ", ".join(repr(w) for w in sorted(words)) or "none"


def _dialect_option(host: Any, name: str) -> Any:
    """The dialect ``--dialect`` names; an unknown one is a usage error."""
    if name not in host.dialects:
        known = ", ".join(host.dialects.names())
        raise UsageError(f"--dialect: unknown dialect {name!r} (known: {known})")
    return host.dialects.get(name)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.argument("url")
@click.option("--no-count-file", is_flag=True, help="Upload the list only, no count file.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="sftp: private key file.")
@click.option(
    "--known-hosts",
    type=click.Path(dir_okay=False),
    help="sftp: the known-hosts file (default: ~/.ssh/known_hosts).",
)
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), help="ftps: CA bundle.")
@click.option("--insecure", is_flag=True, help="ftps: do not verify the server's certificate.")
@click.option(
    "--dialect", default="default", show_default=True, metavar="D",
    help="Count the records as dialect D reads them.",
)  # fmt: skip
@pass_state
def push(
    state: State, file: str, url: str, no_count_file: bool, password_stdin: bool,
    key: str | None, known_hosts: str | None, ca_file: str | None, insecure: bool,
    dialect: str,
) -> None:  # fmt: skip
    """Upload a list file, then its count file, into the folder at URL.

    For the customer's side: URL is sftp://user@host:port/folder, ftp://... or ftps://...
    (FTP with explicit TLS). The list goes up under a hidden name and is renamed when
    complete; then its count file (<stem>_count.txt, the number of records), so a
    half-done upload is never taken for a list. The password comes from
    $LISTFERRY_PASSWORD or --password-stdin; --key logs in to sftp with a key instead
    (the password, if given, unlocks it).
    """
    from listferry.plugins import load_host
    from listferry.tools.push import push as push_list
    from listferry.tools.push import server

    password = os.environ.get("LISTFERRY_PASSWORD") or None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("no password on stdin")
    host = state.app().host if state.config_path.exists() else load_host()
    _dialect_option(host, dialect)
    target = server(url, password, key, known_hosts, ca_file, tls_verify=not insecure)
    push_list(host, Path(file), target, dialect, not no_count_file, click.echo,
              progress_bar(f"uploading {Path(file).name}"))  # fmt: skip


@cli.command()
@click.option("--all", "all_", is_flag=True, help="List the built-in plugins too.")
@click.option("--hook", help="Only plugins that implement this hook.")
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def plugins(state: State, all_: bool, hook: str | None, json_: bool) -> None:
    """Installed plugins, enabled or not, and the hooks each implements.

    Packs installed with pip and modules the config's `plugins` names; `--all` adds the
    built-in ones (the names `disable` takes).
    """
    from listferry.plugins import load_host

    host = state.app().host if state.config_path.exists() else load_host()
    infos = [i for i in host.infos if (all_ or not i.builtin) and (hook is None or hook in i.hooks)]
    if json_:
        emit_json([info.to_json() for info in infos])
        return
    if not infos:
        click.echo("no plugins besides the built-in ones (--all lists those)", err=True)
    for info in infos:
        where = "built-in" if info.builtin else (info.distribution or "config")
        state_word = "enabled" if info.enabled else "disabled"
        click.echo(f"{info.name} ({where}, {state_word}): {', '.join(info.hooks) or '-'}")


@cli.command("new-plugin")
@click.argument("name")
@click.option(
    "--dir", "folder", type=click.Path(file_okay=False),
    help="Where to write the pack (default: ./listferry-NAME).",
)  # fmt: skip
def new_plugin(name: str, folder: str | None) -> None:
    """Write a working CRM pack skeleton: dialect, template, sample and a passing test.

    Install it with `python3 -m pip install -e listferry-NAME`, run its test with
    `python3 -m pytest listferry-NAME`, then change the headers, words and columns to
    those of your CRM. docs/writing-a-plugin.md walks through it.
    """
    from listferry.tools.newplugin import write_skeleton

    target = Path(folder) if folder else Path(f"listferry-{name}")
    for path in write_skeleton(name, target):
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False))
@pass_state
def datasette(state: State, folder: str) -> None:
    """Make FOLDER ready for datasette: a link per tenant store and metadata.json.

    Then `datasette FOLDER/*.db --metadata FOLDER/metadata.json` shows each tenant's
    list, runs and engagement under its own name, with every table and column described.
    """
    from listferry.tools.datasette import write_folder

    config = state.app().config
    written = write_folder(config, Path(folder))
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"datasette {folder}/*.db --metadata {folder}/metadata.json")


@cli.command()
@click.option("--keep", type=click.Path(file_okay=False), help="Run in this folder and keep it.")
def demo(keep: str | None) -> None:
    """The whole job end to end in a temporary folder."""
    from listferry.tools.demo import run_demo

    run_demo(Path(keep) if keep else None, click.echo)


def _plugin_commands() -> None:
    """Let plugins add commands, honouring the config's plugin settings when it reads."""
    from listferry.plugins import load_host

    argv = sys.argv[1:]
    option = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            option = argv[i + 1]
        elif arg.startswith("--config="):
            option = arg.split("=", 1)[1]
    try:
        config = load_config(find_config(option))
        host = load_host(config.disable, config.plugins)
    except ListferryError:
        try:
            host = load_host()
        except ListferryError:
            return
    host.hook.register_commands(cli=cli)


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """A background thread (a server connection, a library's helper) that raised: one line."""
    if issubclass(args.exc_type, SystemExit):
        return
    if os.environ.get("LISTFERRY_DEBUG"):
        threading.__excepthook__(args)
        return
    name = args.thread.name if args.thread else "a thread"
    log.error("%s failed: %s: %s", name, args.exc_type.__name__, args.exc_value)


def main() -> None:
    threading.excepthook = _thread_failed
    _plugin_commands()
    cli(prog_name="listferry")
