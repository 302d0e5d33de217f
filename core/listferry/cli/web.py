"""The operator's console: ``web``, and its accounts: ``operator ...``."""

from __future__ import annotations

import logging
import secrets

import click

from listferry.cli.root import State, cli, emit_json, pass_state
from listferry.cli.tenants import new_password_hash
from listferry.errors import ListferryError, UsageError

log = logging.getLogger("listferry")


def web_missing() -> ListferryError:
    return ListferryError(
        "the console needs FastAPI and uvicorn: pip install -e '.[web]' (in a checkout)"
    )


@cli.command()
@click.option("--host", metavar="H", help="The address to listen on ([web] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="The TCP port ([web] port, 8780).")
@pass_state
def web(state: State, host: str | None, port: int | None) -> None:
    """The operator's console and JSON API, in the foreground until SIGINT/SIGTERM.

    Pages show every tenant's state, runs and reports, the digest and the audit log;
    admins can replay or force a run. Log in with an account from `listferry operator
    add`. The API (same shapes as the CLI's --json) is described at /api/openapi.json.
    Keep it on 127.0.0.1 and put a TLS proxy in front to reach it from elsewhere
    (then set [web] secure_cookies = true).
    """
    try:
        from listferry.web.run import console_server, run_alone
    except ImportError:
        raise web_missing() from None
    run_alone(console_server(state.config_path, state.app().config, host, port))


@cli.group()
def operator() -> None:
    """Console accounts: add, list, change and remove operators and their API tokens."""


def _console(state: State):  # type: ignore[no-untyped-def]
    from listferry.web.accounts import console_of

    return console_of(state.app().config.state_dir)


def _new_password(from_stdin: bool) -> tuple[str, str | None]:
    """A password hash, and the password when listferry made it up (to show once)."""
    from listferry.config.passwords import hash_password

    if from_stdin:
        return new_password_hash(), None
    password = secrets.token_urlsafe(15)
    return hash_password(password), password


@operator.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "admin"]), default="viewer", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@pass_state
def operator_add(state: State, name: str, role: str, password_stdin: bool) -> None:
    """Add an operator; without --password-stdin a password is made up and shown once."""
    from listferry.web.accounts import name_problem

    if problem := name_problem(name):
        raise UsageError(problem)
    console = _console(state)
    digest, password = _new_password(password_stdin)
    console.add(name, role, digest)
    click.echo(f"added operator {name} ({role})")
    if password:
        click.echo(f"password: {password}")


@operator.command("list")
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def operator_list(state: State, json_: bool) -> None:
    """The operators and their roles (never a password)."""
    found = _console(state).operators()
    if json_:
        emit_json([op.to_json() for op in found])
        return
    for op in found:
        click.echo(f"{op.name}  {op.role}  added {op.created_at}")


@operator.command("password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@pass_state
def operator_password(state: State, name: str, password_stdin: bool) -> None:
    """Give an operator a new password (shown once when made up); its sessions end."""
    console = _console(state)
    if console.operator(name) is None:
        raise ListferryError(f"no operator {name!r} (`listferry operator list`)")
    digest, password = _new_password(password_stdin)
    console.set_password(name, digest)
    click.echo(f"{name}: new password set; its console sessions have ended")
    if password:
        click.echo(f"password: {password}")


@operator.command("role")
@click.argument("name")
@click.argument("role", type=click.Choice(["viewer", "admin"]))
@pass_state
def operator_role(state: State, name: str, role: str) -> None:
    """Make an operator a viewer or an admin; its sessions end."""
    _console(state).set_role(name, role)
    click.echo(f"{name}: now {role}")


@operator.command("remove")
@click.argument("name")
@pass_state
def operator_remove(state: State, name: str) -> None:
    """Remove an operator, its sessions and its API tokens."""
    _console(state).remove(name)
    click.echo(f"removed operator {name}")


@operator.command("token")
@click.argument("name")
@click.option("--label", default="", help="What the token is for.")
@pass_state
def operator_token(state: State, name: str, label: str) -> None:
    """A new API token for NAME, shown once (send it as Authorization: Bearer TOKEN)."""
    click.echo(_console(state).new_token(name, label))


@operator.command("tokens")
@click.argument("name", required=False)
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def operator_tokens(state: State, name: str | None, json_: bool) -> None:
    """The API tokens (their ids and labels, never the tokens)."""
    found = _console(state).tokens(name)
    if json_:
        emit_json(found)
        return
    for token in found:
        used = token["used_at"] or "never used"
        click.echo(f"{token['id']}  {token['operator']}  {token['label'] or '-'}  {used}")


@operator.command("revoke")
@click.argument("token_id", type=click.IntRange(min=1))
@pass_state
def operator_revoke(state: State, token_id: int) -> None:
    """Revoke the API token TOKEN_ID (`listferry operator tokens` lists them)."""
    _console(state).revoke_token(token_id)
    click.echo(f"revoked API token {token_id}")
