"""Setting up: ``init``, and the ``tenant`` group (add, set, show, remove, credentials)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from listferry.cli.root import State, cli, emit_json, pass_state, password_from_stdin
from listferry.config import COUNT_POLICIES, load_config
from listferry.config.starter import STARTER_CONFIG
from listferry.errors import UsageError

log = logging.getLogger("listferry")


@cli.command()
@pass_state
def init(state: State) -> None:
    """Write a starter config and create the folders it names. Safe to run twice."""
    path = state.config_path
    if path.exists():
        click.echo(f"{path} exists; left as it is")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        from listferry.config.edit import write_atomically

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


@cli.group()
def tenant() -> None:
    """Add, change, show, list and remove tenants (customers).

    Each change is checked whole before the config file is replaced, keeping its
    comments and layout; a running `serve` takes it from the next login.
    """


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
    state: State,
    name: str,
    password_stdin: bool,
    ssh_key: str | None,
    allow_ips: tuple[str, ...],
    dialect: str | None,
    strategy: str | None,
    count_file: str | None,
    home: str | None,
) -> None:
    """Add a tenant to the config and create its home."""
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
        settings["password_hash"] = new_password_hash()
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
@click.option(
    "--allow-ip",
    "allow_ips",
    multiple=True,
    help="Allowed IP or CIDR (repeatable): the new allow list.",
)
@click.option(
    "--add-allow-ip",
    "add_ips",
    multiple=True,
    help="Add an IP or CIDR to the allow list (repeatable).",
)
@click.option(
    "--remove-allow-ip",
    "remove_ips",
    multiple=True,
    help="Take an IP or CIDR out of the allow list (repeatable).",
)
@click.option("--dialect", help="The tenant's CRM dialect.")
@click.option("--strategy", help="full, incremental, add-only, update-only or opt-out.")
@click.option("--count-file", type=click.Choice(COUNT_POLICIES), help="Count file policy.")
@click.option("--home", help="A folder, or a URL for a customer-hosted server.")
@click.option("--password-stdin", is_flag=True, help="Read a new password from stdin.")
@click.option(
    "--ssh-key",
    type=click.Path(exists=True, dir_okay=False),
    help="Replace its SFTP keys with those in this public key file.",
)
@click.option(
    "--unset",
    "unset",
    multiple=True,
    metavar="KEY",
    help="Take KEY out of the tenant's table, so [defaults] or the default applies (repeatable).",
)
@pass_state
def tenant_set(
    state: State,
    name: str,
    settings: tuple[str, ...],
    allow_ips: tuple[str, ...],
    add_ips: tuple[str, ...],
    remove_ips: tuple[str, ...],
    dialect: str | None,
    strategy: str | None,
    count_file: str | None,
    home: str | None,
    password_stdin: bool,
    ssh_key: str | None,
    unset: tuple[str, ...],
) -> None:
    """Change a tenant, keeping the config's comments and layout.

    KEY=VALUE sets any tenant key (see docs/operator.md); VALUE is read as TOML when
    the key takes it so (max_invalid_share=0.1, require_tls=true, allow_ips=[]), else
    as text (schedule=02:30). The new config is checked whole before the file is
    replaced: a refused change leaves it as it was. A running `serve` takes the change
    from the next login; secrets are never printed.
    """
    from listferry.config.edit import UNSET
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
        put("password_hash", new_password_hash())
    app = state.app()
    before = app.config.tenants.get(name)
    if before is None and name not in app.config.tenant_problems:
        app.config.tenant(name)  # no such tenant: said as every command says it
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
    if before is not None and after.home != before.home and after.is_local:
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

    shown = describe(state.app(), name)
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


def new_password_hash() -> str:
    """The hash of a new password read from stdin; one line and exit 2 when it is too short."""
    from listferry.config.passwords import hash_password, password_problem

    password = password_from_stdin()
    problem = password_problem(password)
    if problem:
        raise UsageError(f"--password-stdin: {problem}")
    return hash_password(password)


@tenant.command("password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, required=True, help="Read it from stdin.")
@pass_state
def tenant_password(state: State, name: str, password_stdin: bool) -> None:
    """Give a tenant a new upload password (stored as a salted hash).

    The config file is changed in place: only the tenant's password_hash line. A running
    `serve` takes the new password for the next login.
    """
    from listferry.ops.tenants import set_tenant

    app = state.app()
    if name not in app.config.tenant_problems:  # a row that does not check can be mended
        app.config.tenant(name)  # an unknown tenant is said before the password is judged
    set_tenant(app, name, {"password_hash": new_password_hash()})
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
