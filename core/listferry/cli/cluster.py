"""Cluster mode: ``cluster init``, ``cluster status``, ``cluster restore``, ``worker``,
and ``sync`` queueing its tenants' jobs (see docs/cluster.md)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from listferry.cli.root import State, cli, emit_json, pass_state
from listferry.config import Config
from listferry.errors import ListferryError

log = logging.getLogger("listferry")


def _database(config: Config) -> str:
    """The cluster's database URL, checked to answer (one line naming it if not)."""
    from listferry.cluster.database import connect
    from listferry.cluster.queue import database_of

    url = database_of(config)
    connect(url).close()
    return url


@cli.group()
def cluster() -> None:
    """Cluster mode: many machines on PostgreSQL, Procrastinate and S3-compatible storage."""


@cluster.command("init")
@pass_state
def cluster_init(state: State) -> None:
    """Make the cluster's tables (Procrastinate's and listferry's), check the bucket, and
    share this node's server keys (SSH host key, TLS certificate) with every serve node
    through storage, unless storage holds the cluster's already.

    Safe to run twice: Procrastinate's tables are brought to this version, or said to
    be current.
    """
    from listferry.cluster.database import connect, create_schema, shown
    from listferry.cluster.queue import install_schema
    from listferry.cluster.serving import share_server_keys

    config = state.app().config
    url = _database(config)
    with connect(url) as conn:
        done = install_schema(conn)
        create_schema(conn)
    click.echo(f"database {shown(url)}: {done}; listferry's tables ready")
    click.echo(_check_storage(config))
    for line in share_server_keys(config):
        click.echo(line)


def _check_storage(config: Config) -> str:
    storage = config.storage
    assert storage is not None  # [storage] comes with [cluster]
    try:
        from listferry.cluster.storage import Storage
    except ImportError:
        return f"storage {storage.url}: not checked (this listferry has no S3 storage yet)"
    Storage(storage.url, storage.endpoint_url, storage.region).check()
    return f"storage {storage.url}: the bucket answers"


@cluster.command("import")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(dir_okay=False),
    help="The single machine's listferry.toml.",
)
@click.option("--replace", is_flag=True, help="Import a tenant already in the cluster over it.")
@pass_state
def cluster_import(state: State, source: str, replace: bool) -> None:
    """Move the tenants of a single machine's config into the cluster.

    Per tenant: its settings into the database, its store as a new version in storage,
    its archived files into archive/NAME/ (its runs pointing there), the files waiting
    in its home into homes/NAME/; the settings row last, with the store pointer, so no
    node ever sees half a tenant. A tenant already in the cluster is skipped unless
    --replace. Nothing on the single machine changes: stop its serve and cron first.
    One line per tenant; exit 1 if any was not imported.
    """
    from pathlib import Path

    from listferry.cluster.importing import import_site

    app = state.app()
    _database(app.config)
    failed = 0
    for ok, line in import_site(app, Path(source), replace):
        click.echo(line, err=not ok)
        failed += not ok
    if failed:
        raise SystemExit(1)


@cluster.command("status")
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def cluster_status(state: State, json_: bool) -> None:
    """Workers and their last heartbeat, queue depth, running and stalled jobs, the
    leader, and whether storage answers.

    A worker is alive while it sends heartbeats ([cluster] stalled_after); a running job
    whose worker stopped sending them is stalled, and is queued again by the others.
    """
    from listferry.cluster.access import versions_of
    from listferry.cluster.database import connect
    from listferry.cluster.queue import cluster_status as status_of

    config = state.app().config
    url = _database(config)
    assert config.cluster is not None and config.storage is not None
    with connect(url) as conn:
        status = status_of(conn, url, config.cluster.stalled_after)
    try:  # one request that touches no data: does the bucket answer?
        versions_of(config).storage.head("stores/")
        status["storage"] = {"url": config.storage.url, "error": None}
    except ListferryError as exc:
        status["storage"] = {"url": config.storage.url, "error": str(exc)}
    if json_:
        emit_json(status)
        return
    alive = sum(worker["alive"] for worker in status["workers"])
    click.echo(f"database {status['database']}")
    problem = status["storage"]["error"]
    click.echo(f"storage: {problem}" if problem else f"storage {config.storage.url}: answers")
    click.echo(f"workers: {alive} alive")
    for worker in status["workers"]:
        word = "alive" if worker["alive"] else "silent"
        click.echo(f"  worker {worker['id']}: {word}, last heartbeat {worker['last_heartbeat']}")
    click.echo(f"queued: {status['queued']} jobs")
    for word in ("running", "stalled"):
        click.echo(f"{word}: {len(status[word])} jobs")
        for job in status[word]:
            click.echo(
                f"  job {job['job_id']}: {job['task']} {job['tenant']} on worker "
                f"{job['worker']} since {job['since']}"
            )
    click.echo(f"leader: {status['leader'] or 'none'}")


@cluster.command("restore")
@click.argument("tenant")
@click.argument("version", required=False, type=click.IntRange(min=1))
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def cluster_restore(state: State, tenant: str, version: int | None, json_: bool) -> None:
    """The tenant's store versions kept in storage, newest first; with VERSION, make
    that version the tenant's store again.

    The restored version is published as a new one over the current, through the same
    fence as a run, so nothing is lost: the versions in between stay (as many as
    [storage] keep_versions keeps) and can be restored in turn. It waits for no run:
    while a run of the tenant holds it, the restore is refused in one line.
    """
    from listferry.cluster.access import versions_of
    from listferry.cluster.turn import tenant_turn
    from listferry.text import size_text

    app = state.app()
    chosen = app.config.tenant(tenant)
    _database(app.config)
    if version is not None:
        with tenant_turn(app, chosen, "the restore", checkout=False) as turn:
            was = turn.base
            now = turn.versions.restore(chosen.name, version, chosen.database, turn.base)
        if json_:
            emit_json({"tenant": chosen.name, "restored": version, "was": was, "version": now})
        else:
            click.echo(
                f"{chosen.name}: store version {version} restored as version {now} "
                f"(it was version {was})"
            )
        return
    with versions_of(app.config) as versions:
        history = versions.history(chosen.name)
    if json_:
        emit_json([{**entry, "written_at": _utc(entry["written_at"])} for entry in history])
        return
    if not history:
        click.echo(f"{chosen.name}: no store version yet (the tenant never ran)")
    for place, entry in enumerate(history):
        notes = ["current"] if place == 0 else []
        if entry["restored_from"]:
            notes.append(f"restored from version {entry['restored_from']}")
        click.echo(
            f"version {entry['version']}  {_utc(entry['written_at'])}  "
            f"{size_text(entry['size'])}  {entry['runs']} run(s)  by {entry['written_by']}"
            + (f"  ({', '.join(notes)})" if notes else "")
        )


def _utc(moment: Any) -> str:
    from datetime import UTC

    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


@cli.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    help="Jobs run at once (default: [cluster] concurrency).",
)
@pass_state
def worker(state: State, concurrency: int | None) -> None:
    """Run queued jobs until SIGTERM or SIGINT, then finish the jobs held and exit.

    Each job is one tenant's sync, run as its own `listferry sync --here` process that
    dies with the worker. A tenant's jobs never overlap, on any number of workers.
    """
    from listferry.cluster.database import shown
    from listferry.cluster.queue import node_name, run_worker

    config = state.app().config
    url = _database(config)
    assert config.cluster is not None
    concurrency = concurrency or config.cluster.concurrency
    node = node_name()
    _quiet_procrastinate()
    click.echo(f"worker {node}: concurrency {concurrency}, database {shown(url)}")
    sys.stdout.flush()
    run_worker(config, concurrency, node)
    click.echo(f"worker {node}: stopped")


def _quiet_procrastinate() -> None:
    """Procrastinate's log lines without their tracebacks (unless LISTFERRY_DEBUG): a
    failed job is one line; its run in the runs index says why."""

    def no_traceback(record: logging.LogRecord) -> bool:
        if record.name.startswith("procrastinate") and not os.environ.get("LISTFERRY_DEBUG"):
            record.exc_info = None
            record.exc_text = None
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(no_traceback)


def queue_syncs(
    state: State, names: list[str], force: bool, wait: bool, json_: bool
) -> list[Any] | None:
    """``sync`` in cluster mode: one job per tenant. Without ``wait`` the job ids are
    printed and ``None`` returned; with it, the runs of those jobs' last attempts, once
    they ended (an attempt that was tried again is one warning line each)."""
    from listferry.cluster.database import connect
    from listferry.cluster.queue import (
        alive_workers,
        build_app,
        queue_sync,
        runs_of_jobs,
        wait_for_jobs,
    )
    from listferry.runs import RunRecord, RunStatus

    config = state.app().config
    url = _database(config)
    assert config.cluster is not None
    app = build_app(config)
    app.open()
    try:
        queued = [(name, *queue_sync(app, name, force)) for name in names]
    finally:
        app.close()
    if not wait:
        if json_:
            emit_json([{"tenant": n, "job_id": job, "queued": new} for n, job, new in queued])
        for name, job, new in queued:
            if not json_:
                click.echo(f"{name}: {'queued' if new else 'already queued'} as job {job}")
        return None
    job_ids = [job for _, job, _ in queued]
    with connect(url) as conn:
        if not alive_workers(conn, config.cluster.stalled_after):
            log.warning("no worker is running: the jobs wait for `listferry worker`")
        statuses = wait_for_jobs(conn, job_ids)
        runs, retried = runs_of_jobs(conn, job_ids)
    for run in retried:  # shown, as each attempt is in `runs`; the last attempt's count
        log.warning("%s (the job tried again)", run.describe())
    order = {name: i for i, name in enumerate(names)}
    runs.sort(key=lambda run: order.get(run.tenant, len(order)))
    seen = {run.tenant for run in runs}
    for name, job, _ in queued:
        if name not in seen and statuses.get(job) != "succeeded":
            ended = statuses.get(job, "removed")
            reason = f"job {job} ended {ended} with no run: see the worker's log"
            runs.append(RunRecord(name).end(RunStatus.FAILED, reason))
    return runs
