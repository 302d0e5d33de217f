"""The servers and the schedule: ``serve``, ``server keys``, ``schedule``."""

from __future__ import annotations

import logging
import threading
from typing import Any

import click

from listferry.cli.root import State, cli, emit_json, pass_state
from listferry.config import load_config
from listferry.errors import ListferryError

log = logging.getLogger("listferry")


@cli.command()
@click.option("--protocols", help="Comma-separated, e.g. ftps,sftp (default: every installed one).")
@click.option("--host", help="The address to listen on (default: [server] host, 127.0.0.1).")
@click.option("--ftp-port", type=click.IntRange(0, 65535), help="0: any free port.")
@click.option("--ftps-port", type=click.IntRange(0, 65535), help="0: any free port.")
@click.option("--sftp-port", type=click.IntRange(0, 65535), help="0: any free port.")
@click.option(
    "--no-schedule",
    is_flag=True,
    help="Do not run the schedule (when `listferry schedule`, cron or a timer runs the syncs).",
)
@click.option(
    "--show-keys",
    is_flag=True,
    help="Print the servers' key fingerprints, as `listferry server keys` does, and exit.",
)
@pass_state
def serve(
    state: State,
    protocols: str | None,
    host: str | None,
    ftp_port: int | None,
    ftps_port: int | None,
    sftp_port: int | None,
    no_schedule: bool,
    show_keys: bool,
) -> None:
    """Run the FTP, FTPS and SFTP servers, and the schedule, until SIGINT or SIGTERM.

    Each tenant's sync runs at its `schedule` (in its `timezone`), its return file at
    its `export_schedule`, the digest at [notify] digest_at; --no-schedule leaves that
    to `listferry schedule` or cron. In cluster mode each completed upload is put into
    the tenant's home in storage, and an on-upload tenant's sync is queued for a worker.
    """
    from dataclasses import replace

    overrides = {"host": host, "ftp_port": ftp_port, "ftps_port": ftps_port, "sftp_port": sftp_port}
    if show_keys:
        from listferry.serve.fingerprints import server_keys

        server = replace(
            load_config(state.config_path).server,
            **{k: v for k, v in overrides.items() if v is not None},
        )
        _show_keys(server_keys(server), known_hosts=False, json_=False)
        return

    from listferry.serve.runtime import stopped_by_signals

    stop = threading.Event()
    with stopped_by_signals(stop):  # a signal while starting stops it as cleanly
        _serve(state, protocols, overrides, no_schedule, stop)


def _serve(
    state: State,
    protocols: str | None,
    overrides: dict[str, Any],
    no_schedule: bool,
    stop: threading.Event,
) -> None:
    from dataclasses import replace

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
    if app.config.web.enabled:
        try:
            from listferry.web.run import beside as with_console
        except ImportError:
            from listferry.cli.web import web_missing

            raise web_missing() from None
        beside = with_console(state.config_path, app.config, beside)
    homes = queue = blocks = None
    if app.config.cluster is not None:
        from listferry.cluster.logins import SharedLogins
        from listferry.cluster.queue import database_of
        from listferry.cluster.serving import SyncQueue, cluster_homes, share_server_keys

        for line in share_server_keys(app.config):
            click.echo(line)
        homes, queue = cluster_homes(app.config), SyncQueue(app.config)
        blocks = SharedLogins(database_of(app.config), watch=True)
    try:
        run_servers(
            app,
            settings,
            [n.strip() for n in chosen],
            lambda text: click.echo(text),
            beside,
            homes=homes,
            queue=queue,
            blocks=blocks,
            stop=stop,
        )
    finally:
        if queue is not None:
            queue.close()


@cli.group()
def server() -> None:
    """The built-in servers: what customers need to trust them."""


@server.command("keys")
@click.option(
    "--host",
    metavar="NAME",
    help="The name customers connect to, for the known_hosts lines (default: [server] host).",
)
@click.option(
    "--known-hosts",
    "known_hosts",
    is_flag=True,
    help="Print only the known_hosts lines, for a file to hand a customer.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="The SFTP port customers connect to, for the known_hosts lines (default: [server] "
    "sftp_port; behind a load balancer, the balancer's).",
)
@click.option("--json", "json_", is_flag=True, help="Print them as JSON.")
@pass_state
def server_keys(
    state: State, host: str | None, known_hosts: bool, port: int | None, json_: bool
) -> None:
    """The TLS certificate and SSH host key fingerprints, as customers' clients show them.

    The certificate's SHA-256 fingerprint as `openssl x509 -fingerprint -sha256`, curl,
    lftp and FileZilla show it, its names and expiry; each SSH host key's fingerprint as
    `ssh-keygen -lf` shows it and its known_hosts line (`[host]:port type key`). Warnings
    (a certificate that does not name HOST, expires soon, or whose key does not match) go
    to stderr. Exit 2 when a key file is missing or unreadable. In cluster mode, the
    cluster's keys, taken from storage as `serve` takes them.
    """
    from dataclasses import replace

    from listferry.serve.fingerprints import server_keys

    if json_ and known_hosts:
        raise click.UsageError("--json and --known-hosts do not go together")
    config = load_config(state.config_path)
    if config.cluster is not None and config.storage is not None:
        from listferry.cluster.serving import share_server_keys

        share_server_keys(config)
    settings = config.server if port is None else replace(config.server, sftp_port=port)
    keys = server_keys(settings, host, require_host=known_hosts)
    _show_keys(keys, known_hosts, json_)


@server.command("blocked")
@click.option("--json", "json_", is_flag=True, help="Print them as JSON.")
@pass_state
def server_blocked(state: State, json_: bool) -> None:
    """Addresses blocked after repeated failed logins, as the running `serve` keeps them
    (in cluster mode, every serve node's, from the cluster's database).

    One line each: the address (an IPv6 address's /64), until when (UTC), how many
    failed logins and the accounts they tried. JSON: a list of `{"source", "until",
    "failures", "accounts"}`.
    """
    import time

    from listferry.cluster.logins import blocks_of
    from listferry.serve.blocks import blocks_path

    config = load_config(state.config_path)
    local = config.cluster is None and not blocks_path(config.state_dir).exists()
    found = [] if local else blocks_of(config).active(time.time())
    if json_:
        emit_json([block.to_json() for block in found])
        return
    for block in found:
        click.echo(block.line())


@server.command("unblock")
@click.argument("address")
@pass_state
def server_unblock(state: State, address: str) -> None:
    """Lift the block of ADDRESS (an IPv4 or IPv6 address, or an IPv6 /64), at once, also
    for a running `serve` (in cluster mode, on every serve node within a second). Exit 2
    when it is not an address or not blocked."""
    import time

    from listferry.cluster.logins import blocks_of
    from listferry.errors import UsageError
    from listferry.serve.blocks import block_source, blocks_path

    source = block_source(address)
    config = load_config(state.config_path)
    local = config.cluster is None and not blocks_path(config.state_dir).exists()
    if local or not blocks_of(config).remove(source, time.time()):
        raise UsageError(f"{source} is not blocked")
    click.echo(f"{source}: unblocked")


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
    from listferry.ops.scheduler import Scheduler
    from listferry.serve.runtime import stopped_by_signals

    stop = threading.Event()
    with stopped_by_signals(stop):
        state.app()  # a config that cannot be used stops here, with its line
        scheduler = Scheduler(state.config_path.resolve())
        scheduler.reload()
        _say_plan(scheduler)
        scheduler.run(stop)
    click.echo("stopped")


def _say_plan(scheduler: Any) -> None:
    """Each scheduled job's next time, one line each, as the schedule starts."""
    planned = sorted(scheduler.next_times().items())
    for tenant, times in planned:
        for kind, at in sorted(times.items()):
            click.echo(f"{tenant or '(all)'}: next {kind} {at}")
    if not planned:
        click.echo("schedule: nothing scheduled")
