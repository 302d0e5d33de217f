"""The morning look: ``status`` and ``digest``."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import click

from listferry.cli.root import State, cli, emit_json, pass_state
from listferry.errors import ConfigError
from listferry.runs import PROBLEMS, RunStatus
from listferry.text import visible

if TYPE_CHECKING:
    from listferry.ops.status import TenantStatus

log = logging.getLogger("listferry")


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
    if problem or any(i.last_status in PROBLEMS or i.silent or i.error for i in found):
        sys.exit(1)


_COLOURS = {"applied": "green", "voided": "yellow", "failed": "red", "skipped": "cyan"}


def _status_line(item: TenantStatus, colour: bool) -> str:
    outcome = item.last_status or (
        "error" if item.error else "no file yet" if item.looked_at else "never run"
    )
    if colour:
        outcome = click.style(outcome, fg=_COLOURS.get(item.last_status or ""), bold=True)
    parts = [f"{item.tenant}: {outcome}"]
    if item.last_run is not None:
        parts.append(f"run {item.last_run} {item.last_run_at}")
    if item.subscribers is not None:
        parts.append(f"{item.subscribers} active")
    parts.append(f"{'-' if item.pending is None else item.pending} pending")
    if item.days_since_applied is not None:
        if item.last_status == RunStatus.APPLIED:
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
        when = f"until {waiting['until']}" if waiting["until"] else "(not yet looked at)"
        seen = f" (seen {waiting['as_of']})" if waiting["as_of"] else ""
        parts.append(f"{visible(waiting['file'])} waiting for its count file {when}{seen}")
    if item.ignored:
        shown = ", ".join(map(visible, item.ignored[:3]))
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
        line += f"; {visible(item.error)}"
    elif item.last_status in PROBLEMS and item.last_reason:
        line += f": {visible(item.last_reason)}"
    return line


@cli.command()
@click.option(
    "--hours",
    type=click.FloatRange(min=1),
    default=24,
    show_default=True,
    help="The window the digest covers, ending now.",
)
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
