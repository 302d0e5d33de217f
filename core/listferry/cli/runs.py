"""Runs and lists: ``sync``, ``replay``, ``runs``, ``subscribers``, ``events load``,
``check``."""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from listferry.cli.root import (
    Failed,
    State,
    cli,
    emit_json,
    emit_json_list,
    pass_state,
    progress_bar,
    readable_file,
)
from listferry.config import Tenant
from listferry.errors import ListferryError
from listferry.text import visible

if TYPE_CHECKING:
    from listferry.runs import RunRecord

log = logging.getLogger("listferry")


@cli.command()
@click.argument("tenants", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every tenant in the config.")
@click.option("--force", is_flag=True, help="Apply even past the shrink guard (this run only).")
@click.option("--json", "json_", is_flag=True, help="Print the runs as JSON.")
@click.option(
    "--wait",
    is_flag=True,
    help="In cluster mode: wait for the queued jobs and print their runs (without "
    "[cluster], sync always waits).",
)
@click.option("--here", is_flag=True, hidden=True, help="Run in this process even in cluster mode.")
@pass_state
def sync(
    state: State,
    tenants: tuple[str, ...],
    all_: bool,
    force: bool,
    json_: bool,
    wait: bool,
    here: bool,
) -> None:
    """Run each tenant's pending list files now. Exit 1 if any run is voided or failed.

    Tenants run in parallel, up to [listferry] workers at a time; their runs are printed
    in the order the tenants were named (or appear in the config, with --all).

    In cluster mode ([cluster] in the config) each tenant's sync is queued as a job for
    the workers and its job id printed (exit 0); with --wait, sync waits for those jobs
    and prints their runs as above.
    """
    from listferry.ops.night import sync_and_export
    from listferry.ops.parallel import run_tenants
    from listferry.sync.run import tell_finished

    try:
        app = state.app(tenants if here and tenants else None)
    except ListferryError as exc:
        if here:  # a worker's job: the cluster's database did not answer, try it again
            unreachable(state, tenants, exc, json_)
        raise
    if not tenants and not all_:
        raise click.UsageError("name one or more tenants, or give --all")
    names = list(app.config.tenants) if all_ else list(tenants)
    chosen = [app.config.tenant(name) for name in names]
    if app.config.cluster is not None and not here:
        from listferry.cli.cluster import queue_syncs

        queued_runs = queue_syncs(state, names, force, wait, json_)
        if queued_runs is not None:
            show_runs(state, queued_runs, json_)
        return
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
        echo_runs(state, tenant_runs, json_)  # each tenant's as soon as it is done
    retry = False
    if app.config.cluster is not None:
        from listferry.cluster.sync import RETRY

        retry = bool(RETRY)  # the cluster's database or storage did not answer
    show_runs(state, runs, json_, echoed=True, retry=retry)


def unreachable(state: State, names: tuple[str, ...], exc: ListferryError, json_: bool) -> None:
    """``sync --here`` when the cluster's database did not answer while the tenants were
    read: a ``failed`` run per tenant, and the exit that has the worker try again."""
    from listferry.config.shared import Unreachable
    from listferry.runs import RunRecord, RunStatus

    if not isinstance(exc, Unreachable):
        return
    runs = [RunRecord(name).end(RunStatus.FAILED, str(exc)) for name in names]
    show_runs(state, runs, json_, retry=True)


def echo_runs(state: State, runs: list[RunRecord], json_: bool) -> None:
    """A line per run (none with ``--json``), and a log record each with JSON logs."""
    for run in runs:
        if not json_:
            click.echo(run.describe())
        if state.log_format == "json":
            log_run(run)


def show_runs(
    state: State, runs: list[RunRecord], json_: bool, echoed: bool = False, retry: bool = False
) -> None:
    """Print runs as ``sync`` does (``echoed``: their lines are out already); exit
    :data:`~listferry.cluster.RETRY_EXIT` with ``retry`` (a worker's job to try again),
    else 1 if any is voided or failed."""
    if not echoed:
        echo_runs(state, runs, json_)
    if json_:
        emit_json([run.to_json() for run in runs])
    if retry:
        from listferry.cluster import RETRY_EXIT

        sys.exit(RETRY_EXIT)
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
    app = state.app()
    if app.config.cluster is not None:  # the archived file comes from storage
        from listferry.cluster.replay import replay_in_cluster as replay_run
    else:
        from listferry.sync.replay import replay_run

    run = replay_run(app, app.config.tenant(tenant), run_id, force)
    if json_:
        emit_json(run.to_json())
    else:
        click.echo(run.describe())
    if run.status in ("voided", "failed"):
        sys.exit(1)


def log_run(run: RunRecord) -> None:
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
    from listferry.ops.history import one_run, run_history

    config = state.app().config
    chosen = config.tenant(tenant)
    if run_id is not None:
        run = one_run(config, chosen, run_id)
        if run is None:
            raise ListferryError(f"{chosen.name} has no run {run_id} (`listferry runs {tenant}`)")
        if json_:
            emit_json({**run.to_json(), "report": run.report})
        else:
            text = "\n".join(map(visible, run.report.split("\n"))) if run.report else None
            click.echo(text or run.describe(), nl=not (text or "").endswith("\n"))
        return
    history = run_history(config, chosen, limit)
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

    config = state.app().config
    chosen = config.tenant(tenant)
    if config.cluster is not None:
        from listferry.cluster.access import current_store

        opened = current_store(config, chosen)
    else:
        opened = Store(chosen.database)
    with opened as store:
        rows = store.subscribers(status)
        if json_:
            emit_json_list(rows)
            return
        for row in rows:
            name = " ".join(filter(None, (row["first_name"], row["last_name"])))
            values = (row["email"], name, row["segment_code"] or "", row["status"])
            click.echo("\t".join(map(visible, values)))


@cli.group()
def events() -> None:
    """Engagement events: opens, clicks, unsubscribes."""


@events.command("load")
@click.argument("tenant")
@click.argument("file")
@pass_state
def events_load(state: State, tenant: str, file: str) -> None:
    """Load events from a CSV or JSON-lines file (email, type, at, topic).

    Says how many were stored, how many were known already, and how many name an address
    that is not on the tenant's list (a typo, or the file of another tenant?).
    """
    from listferry.store.database import Store
    from listferry.store.events import load_events

    path = readable_file(file, state.log_format)
    config = state.app().config
    chosen = config.tenant(tenant)
    if config.cluster is not None:
        from listferry.cluster.access import change_store

        loaded = change_store(config, chosen, lambda store: load_events(store, path))
    else:
        with Store(chosen.database) as store:
            loaded = load_events(store, path)
    click.echo(
        f"{tenant}: {loaded.stored} events stored, {loaded.duplicates} already known; "
        f"events for addresses not on the list: {loaded.not_on_list}"
    )


@cli.command()
@click.argument("file")
@click.option("--tenant", "tenant_name", metavar="NAME", help="The verdict of this tenant's sync.")
@click.option("--dialect", metavar="D", help="Read as dialect D (default: the tenant's).")
@click.option("--count-file", metavar="F", help="The count file (default: <stem>_count.txt).")
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def check(
    state: State,
    file: str,
    tenant_name: str | None,
    dialect: str | None,
    count_file: str | None,
    json_: bool,
) -> None:
    """Dry run: the verdict a sync would give FILE, with nothing written. Exit 1 if void.

    The verdict is ok, void, or (with --tenant) skip: a repeat of the tenant's last
    applied file, read the same way, which the sync skips without reading it.

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
            readable_file(given, state.log_format)
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
    with contextlib.ExitStack() as stack:
        if tenant_name and config.cluster is not None:  # the tenant's current version
            from listferry.cluster.access import versions_of

            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lf-check-")))
            with versions_of(config) as versions:
                versions.checkout(chosen.name, folder / chosen.database.name)
            chosen = replace(chosen, state_dir=folder)
        result = check_file(host, Path(file), chosen, count, with_store=tenant_name is not None)
    if json_:
        emit_json(result.to_json())
    else:
        for line in result.lines():
            click.echo(visible(line))
    if result.status == "void":
        sys.exit(1)
