"""The job queue of cluster mode: Procrastinate on the cluster's PostgreSQL database.

Each tenant's sync is a job of the ``listferry.sync`` task, queued with the lock
``tenant:NAME`` (one running job per tenant across all workers) and the queueing lock
``sync:NAME`` (a tenant queued twice runs once). A worker runs a job as its own child
process, ``listferry sync --here NAME``, so one tenant's crash cannot touch another;
the process is forked from the worker's fork server, which has imported listferry
already (:mod:`listferry.cluster.forks`), and dies with its worker.

A child that dies without its runs (a signal, an exit code other than 0 or 1, its time
limit) leaves one ``failed`` run in ``listferry_runs``; a crash is tried again a few
times, with backoff. A worker that stops sending heartbeats for ``stalled_after``
seconds counts as dead: the other workers put its jobs back in the queue.

Procrastinate's own retry cannot move a job back to the queue while another job with
the same queueing lock waits there (procrastinate#1446, #1543): the unique index on
waiting jobs refuses it and the job would stay ``doing``. So a job is retried only when
no other job of its tenant waits; when one does, the job ends ``failed`` and the waiting
job runs the tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import socket
from datetime import UTC
from pathlib import Path
from typing import Any

from listferry.cluster import INSTALL, RETRY_EXIT
from listferry.cluster.database import shown
from listferry.cluster.forks import ForkServer
from listferry.cluster.leader import leader
from listferry.config import Config, load_config
from listferry.errors import ListferryError
from listferry.jobs import KILL_AFTER
from listferry.runs import RunRecord, RunStatus
from listferry.text import how_ended

log = logging.getLogger("listferry")

#: The task that syncs one tenant.
SYNC_TASK = "listferry.sync"
#: The task that makes one tenant's return file (its ``export_schedule``).
EXPORT_TASK = "listferry.export"
#: A crashed sync process is run at most this many times for one job.
MAX_ATTEMPTS = 3
#: Seconds before the retry of a crash: this to the power of the attempt (2, 4 ...).
BACKOFF = 2
#: The job statuses that end a job.
FINISHED = ("succeeded", "failed", "cancelled", "aborted")
#: The worker's fork server: each job's process (a sync, an export) is one of its forks.
FORKS = ForkServer()
#: How the first line of a schema we made says which Procrastinate migration it is at.
SCHEMA_MARK = "listferry: procrastinate schema "


class Crashed(ListferryError):
    """The sync process died without its runs; the job may be tried again."""


class Away(Crashed):
    """The cluster's database or storage did not answer the job's process; the job is
    tried again for longer (:data:`AWAY_ATTEMPTS`), for an outage to end."""


#: A job whose cluster did not answer is tried this many times, waiting twice as long
#: each time up to :data:`AWAY_WAIT` seconds: about 25 minutes in all.
AWAY_ATTEMPTS = 12
AWAY_WAIT = 300


def retry_in(error: BaseException, attempts: int) -> int | None:
    """Seconds until a job that ended with ``error`` after ``attempts`` earlier attempts
    is tried again; ``None``: it is not."""
    wait = BACKOFF ** (attempts + 1)
    if isinstance(error, Away) and attempts + 1 < AWAY_ATTEMPTS:
        return min(wait, AWAY_WAIT)
    if isinstance(error, Crashed) and attempts + 1 < MAX_ATTEMPTS:
        return wait
    return None


def procrastinate() -> Any:
    """The procrastinate package, or one clear error saying how to install it."""
    try:
        return importlib.import_module("procrastinate")
    except ImportError:
        raise ListferryError(INSTALL) from None


def node_name() -> str:
    """This process as the runs index names it: ``host:pid``."""
    return f"{socket.gethostname() or 'localhost'}:{os.getpid()}"


def lock_of(tenant: str) -> str:
    return f"tenant:{tenant}"


def waiting_lock_of(task: str, tenant: str) -> str:
    """The queueing lock of ``task``'s jobs for ``tenant``: one waits at a time."""
    return queueing_lock_of(tenant) if task == SYNC_TASK else export_lock_of(tenant)


def export_lock_of(tenant: str) -> str:
    return f"export:{tenant}"


def queueing_lock_of(tenant: str) -> str:
    return f"sync:{tenant}"


def database_of(config: Config) -> str:
    """The cluster's database URL; one clear error when the config has no ``[cluster]``."""
    if config.cluster is None:
        from listferry.errors import ConfigError

        raise ConfigError(
            f"no [cluster] table in {config.path}: cluster mode is off (see docs/cluster.md)"
        )
    return config.cluster.database


def build_app(config: Config, pool_size: int = 2) -> Any:
    """A Procrastinate ``App`` over the cluster's database, with the ``listferry.sync``
    task. Open it with ``app.open()`` (the CLI) or ``app.open_async()`` (a worker)."""
    pc = procrastinate()
    url = database_of(config)
    connector = pc.PsycopgConnector(
        conninfo=url, min_size=1, max_size=pool_size, kwargs={"connect_timeout": 10}
    )
    app = pc.App(connector=connector)

    class Strategy(pc.BaseRetryStrategy):  # type: ignore[misc,name-defined]
        def get_retry_decision(self, *, exception: BaseException, job: Any) -> Any:
            seconds = retry_in(exception, job.attempts)
            return None if seconds is None else pc.RetryDecision(retry_in={"seconds": seconds})

    strategy = Strategy()

    @app.task(name=SYNC_TASK, pass_context=True, retry=strategy)
    async def sync(context: Any, tenant: str, force: bool = False) -> str:
        return await run_sync_job(app, config.path, context.job, tenant, force)

    @app.task(name=EXPORT_TASK, pass_context=True, retry=strategy)
    async def export(context: Any, tenant: str) -> str:
        return await run_export_job(app, config.path, context.job, tenant)

    return app


# --- queueing -------------------------------------------------------------------------


def queue_sync(app: Any, tenant: str, force: bool = False) -> tuple[int, bool]:
    """Queue a sync of ``tenant``: ``(job id, True)``, or ``(id, False)`` when one waits
    in the queue already (that job runs the tenant; nothing new is queued)."""
    pc = procrastinate()
    task = app.tasks[SYNC_TASK].configure(
        lock=lock_of(tenant), queueing_lock=queueing_lock_of(tenant)
    )
    for _ in range(20):
        try:
            return task.defer(tenant=tenant, force=force), True
        except pc.exceptions.AlreadyEnqueued:
            row = app.connector.get_sync_connector().execute_query_one(
                query="SELECT coalesce(max(id), 0) AS id FROM procrastinate_jobs "
                "WHERE queueing_lock = %(lock)s AND status = 'todo'",
                lock=queueing_lock_of(tenant),
            )
            if row["id"]:
                return row["id"], False
            # the waiting job started between the two statements: queue again
    raise ListferryError(f"{tenant}: could not queue a sync (the queue kept changing)")


def queue_export(app: Any, tenant: str) -> tuple[int, bool]:
    """Queue an export of ``tenant`` (it waits for the tenant's running job, as a sync
    does): ``(job id, True)``, or ``(id, False)`` when one waits in the queue already."""
    pc = procrastinate()
    waiting = export_lock_of(tenant)
    task = app.tasks[EXPORT_TASK].configure(lock=lock_of(tenant), queueing_lock=waiting)
    for _ in range(20):
        try:
            return task.defer(tenant=tenant), True
        except pc.exceptions.AlreadyEnqueued:
            row = app.connector.get_sync_connector().execute_query_one(
                query="SELECT coalesce(max(id), 0) AS id FROM procrastinate_jobs "
                "WHERE queueing_lock = %(lock)s AND status = 'todo'",
                lock=waiting,
            )
            if row["id"]:
                return row["id"], False
    raise ListferryError(f"{tenant}: could not queue an export (the queue kept changing)")


def job_statuses(conn: Any, job_ids: list[int]) -> dict[int, str]:
    """The status of each of ``job_ids`` (``todo``, ``doing``, ``succeeded`` ...)."""
    rows = conn.execute(
        "SELECT id, status::text FROM procrastinate_jobs WHERE id = ANY(%s)", (job_ids,)
    ).fetchall()
    return dict(rows)


def wait_for_jobs(conn: Any, job_ids: list[int], interval: float = 0.2) -> dict[int, str]:
    """Block until every job of ``job_ids`` has ended; their last statuses."""
    import time

    while True:
        statuses = job_statuses(conn, job_ids)
        if all(statuses.get(job, "gone") in (*FINISHED, "gone") for job in job_ids):
            return statuses
        time.sleep(interval)


def runs_of_jobs(conn: Any, job_ids: list[int]) -> tuple[list[RunRecord], list[RunRecord]]:
    """The runs the jobs recorded in ``listferry_runs``, in the order they were made:
    those of each job's last attempt, and those of its attempts that were tried again."""
    rows = conn.execute(
        "SELECT record, attempt, max(attempt) OVER (PARTITION BY job_id) "
        "FROM listferry_runs WHERE job_id = ANY(%s) ORDER BY id",
        (job_ids,),
    ).fetchall()
    last, retried = [], []
    for record, attempt, final in rows:
        (retried if attempt is not None and attempt < final else last).append(RunRecord(**record))
    return last, retried


def alive_workers(conn: Any, stalled_after: float) -> int:
    (count,) = conn.execute(
        "SELECT count(*) FROM procrastinate_workers "
        "WHERE last_heartbeat >= now() - make_interval(secs => %s)",
        (stalled_after,),
    ).fetchone()
    return count


# --- running a job --------------------------------------------------------------------


def sync_argv(config_path: Path, tenant: str, force: bool) -> list[str]:
    """The listferry command line a job runs (without the program), in a process of its
    own forked by the worker's fork server."""
    argv = ["--config", str(config_path), "sync", "--here", tenant, "--json"]
    return [*argv, "--force"] if force else argv


def time_limit(config_path: Path, tenant: str) -> float | None:
    """The tenant's ``sync_timeout`` and :data:`KILL_AFTER`, from the config as it is
    now; ``None`` when it does not read or name the tenant (the child then says why)."""
    try:
        return load_config(config_path, [tenant]).tenant(tenant).sync_timeout + KILL_AFTER
    except ListferryError:
        return None


async def run_sync_job(app: Any, config_path: Path, job: Any, tenant: str, force: bool) -> str:
    """Run one sync job: the child process, then what its end means for the job."""
    attempt = RunRecord(tenant)
    limit = time_limit(config_path, tenant)
    try:
        argv = sync_argv(config_path, tenant, force)
        code, stderr = await run_child(argv, job.id, limit, job.attempts)
    except TimeoutError:
        reason = f"the sync process was still running {limit:g} s after it started: killed"
        await record_failed(app, tenant, job, attempt, reason)
        raise ListferryError(f"{tenant}: {reason}") from None
    if code in (0, 1):
        return f"{tenant}: the sync process {how_ended(code)}"
    if code == RETRY_EXIT:  # its failed run says why; the database or storage was away
        waiting = await _waiting_job(app, tenant)
        if waiting:  # that job runs the tenant (and waits for the cluster itself)
            raise ListferryError(f"{tenant}: the cluster did not answer; job {waiting} runs it")
        seconds = retry_in(Away(""), job.attempts)
        log.warning(
            "%s: job %s: the cluster did not answer; %s",
            tenant,
            job.id,
            f"tried again in {seconds} s" if seconds else "tried too often: given up",
        )
        raise Away(f"{tenant}: the cluster's database or storage did not answer")
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    reason = f"the sync process {how_ended(code)}"
    if code is not None and code > 0 and lines:
        reason += f": {lines[-1].removeprefix('Error: ')}"
    waiting = await _waiting_job(app, tenant)
    if waiting:
        reason += f"; job {waiting}, queued since, runs the tenant"
    elif code == 2:
        reason += " (a config or usage error: not tried again)"
    elif job.attempts + 1 < MAX_ATTEMPTS:
        reason += f"; tried again in {BACKOFF ** (job.attempts + 1)} s"
    await record_failed(app, tenant, job, attempt, reason)
    log.warning("%s: job %s: %s", tenant, job.id, reason)
    if waiting or code == 2:
        raise ListferryError(f"{tenant}: {reason}")
    raise Crashed(f"{tenant}: {reason}")


async def run_child(
    argv: list[str], job_id: int, limit: float | None, attempt: int = 0
) -> tuple[int, bytes]:
    """Run a job's listferry command line (without the program) as a process of its own,
    forked by the worker's fork server, that dies with this worker; its exit code and
    stderr. Killed with its session (and :class:`TimeoutError`) past ``limit`` seconds,
    and when the job is cancelled."""
    env = {"LISTFERRY_JOB_ID": str(job_id), "LISTFERRY_JOB_ATTEMPT": str(attempt)}
    child = await FORKS.start(argv, env)
    try:
        stderr = await asyncio.wait_for(child.communicate(), limit)
    except (TimeoutError, asyncio.CancelledError):
        _kill(child.pid)
        await child.wait()
        raise
    assert child.returncode is not None
    return child.returncode, stderr


async def run_export_job(app: Any, config_path: Path, job: Any, tenant: str) -> str:
    """Run one export job: ``listferry export NAME`` in a child process. A cluster that
    did not answer, or a process that died, is tried again; an export that failed (it
    says why in the worker's log) is not."""
    argv = ["--config", str(config_path), "export", tenant, "--json"]
    limit = time_limit(config_path, tenant)
    try:
        code, stderr = await run_child(argv, job.id, limit, job.attempts)
    except TimeoutError:
        raise ListferryError(
            f"{tenant}: the export was still running {limit:g} s after it started: killed"
        ) from None
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    said = lines[-1].removeprefix("Error: ") if lines else how_ended(code)
    if code == 0:
        return f"{tenant}: the export process {how_ended(code)}"
    waiting = await _waiting_job(app, tenant, EXPORT_TASK)
    if waiting and (code == RETRY_EXIT or code < 0):  # that one makes the return file
        log.warning("%s: job %s: export: %s; job %s makes it", tenant, job.id, said, waiting)
        raise ListferryError(f"{tenant}: the export failed: {said}; job {waiting} makes it")
    if code == RETRY_EXIT:
        log.warning("%s: job %s: export: %s; tried again later", tenant, job.id, said)
        raise Away(f"{tenant}: the export process {how_ended(code)}: {said}")
    if code < 0:
        log.warning("%s: job %s: export: %s; tried again", tenant, job.id, said)
        raise Crashed(f"{tenant}: the export process {how_ended(code)}: {said}")
    log.error("%s: job %s: the export failed: %s", tenant, job.id, said)
    raise ListferryError(f"{tenant}: the export failed: {said}")


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


async def _waiting_job(app: Any, tenant: str, task: str = SYNC_TASK) -> int | None:
    """A job of the same task for ``tenant`` waiting in the queue: then a job may not be
    put back there (procrastinate#1446), and the waiting one does the work."""
    row = await app.connector.execute_query_one_async(
        query="SELECT min(id) AS id FROM procrastinate_jobs "
        "WHERE queueing_lock = %(lock)s AND status = 'todo'",
        lock=waiting_lock_of(task, tenant),
    )
    return row["id"]


FAILED_ROW = (
    "INSERT INTO listferry_runs (tenant, job_id, attempt, node, status, reason, started_at, "
    "finished_at, record) VALUES (%(tenant)s, %(job_id)s, %(attempt)s, %(node)s, 'failed', "
    "%(reason)s, %(started_at)s, %(finished_at)s, %(record)s)"
)


def failed_row(
    tenant: str, job_id: int, attempt: RunRecord, reason: str, number: int | None = None
) -> dict[str, Any]:
    """The index row of a job's attempt (``number``, 0 the first) that left no run."""
    run = attempt.end(RunStatus.FAILED, reason)
    return {
        "tenant": tenant,
        "job_id": job_id,
        "attempt": number,
        "node": node_name(),
        "reason": reason,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "record": json.dumps(run.to_json()),
    }


async def record_failed(app: Any, tenant: str, job: Any, attempt: RunRecord, reason: str) -> None:
    """One ``failed`` run in the runs index for a job whose sync process left none."""
    await app.connector.execute_query_async(
        query=FAILED_ROW, **failed_row(tenant, job.id, attempt, reason, job.attempts)
    )


# --- workers --------------------------------------------------------------------------


async def requeue_stalled(app: Any, stalled_after: float) -> list[int]:
    """Put back in the queue the sync and export jobs of workers silent for
    ``stalled_after`` seconds (a sync with a ``failed`` run for the attempt that was cut
    off); a job tried :data:`MAX_ATTEMPTS` times, or whose tenant has another job of the
    task waiting, ends ``failed`` instead. Safe on any number of workers at once. The
    ids it moved."""
    import psycopg

    stalled = []
    for task in (SYNC_TASK, EXPORT_TASK):
        stalled += await app.job_manager.get_stalled_jobs(
            task_name=task, seconds_since_heartbeat=stalled_after
        )
    moved = []
    for job in stalled:
        tenant = job.task_kwargs.get("tenant", "?")
        reason = f"the worker running it stopped answering (no heartbeat for {stalled_after:g} s)"
        try:
            async with app.connector.pool.connection() as conn, conn.transaction():
                mine = await conn.execute(
                    "SELECT attempts FROM procrastinate_jobs WHERE id = %s AND status = 'doing' "
                    "FOR UPDATE SKIP LOCKED",
                    (job.id,),
                )
                row = await mine.fetchone()
                if row is None:
                    continue
                waiting = await conn.execute(
                    "SELECT min(id) FROM procrastinate_jobs "
                    "WHERE queueing_lock = %s AND status = 'todo'",
                    (waiting_lock_of(job.task_name, tenant),),
                )
                (other,) = await waiting.fetchone()
                if other or row[0] + 1 >= MAX_ATTEMPTS:
                    reason += f"; job {other} runs the tenant" if other else "; tried too often"
                    finish = "SELECT procrastinate_finish_job_v1(%s, 'failed', false)"
                else:
                    reason += "; queued again"
                    finish = "SELECT procrastinate_retry_job_v2(%s, now(), NULL, NULL, NULL)"
                await conn.execute(finish, (job.id,))
                if job.task_name == SYNC_TASK:  # an export is no run: its log line says it
                    params = failed_row(tenant, job.id, RunRecord(tenant), reason, row[0])
                    await conn.execute(FAILED_ROW, params)
        except psycopg.errors.UniqueViolation:
            continue  # a job of the tenant was queued meanwhile: the next round ends it
        log.warning("%s: job %s: %s", tenant, job.id, reason)
        moved.append(job.id)
    return moved


async def _requeue_forever(app: Any, stalled_after: float) -> None:
    while True:
        try:
            await requeue_stalled(app, stalled_after)
        except Exception as exc:  # the database away for a moment: try again next round
            log.warning("could not look for stalled jobs: %s", exc)
        await asyncio.sleep(stalled_after / 2)


def run_worker(config: Config, concurrency: int, name: str | None = None) -> None:
    """Run jobs until SIGTERM or SIGINT, then finish the jobs held and return."""
    stalled_after = config.cluster.stalled_after if config.cluster else 60.0
    app = build_app(config, pool_size=concurrency + 4)

    async def main() -> None:
        async with app.open_async():
            worker = importlib.import_module("procrastinate.worker").Worker(
                app,
                name=name or node_name(),
                concurrency=concurrency,
                update_heartbeat_interval=max(stalled_after / 4, 0.2),
                stalled_worker_timeout=stalled_after,
                fetch_job_polling_interval=min(5.0, max(stalled_after / 2, 0.5)),
                shutdown_graceful_timeout=None,
            )
            requeue = asyncio.create_task(_requeue_forever(app, stalled_after))
            try:
                await worker.run()
            finally:
                requeue.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await requeue

    try:
        asyncio.run(main())
    finally:
        FORKS.close()


# --- schema ---------------------------------------------------------------------------


def _schema_manager() -> Any:
    procrastinate()
    return importlib.import_module("procrastinate.schema").SchemaManager


def schema_version() -> str:
    """The newest Procrastinate migration this Procrastinate's schema includes."""
    path = Path(_schema_manager().get_migrations_path())
    return max(p.name.split("_", 1)[0] for p in path.glob("*.sql"))


def pending_migrations(since: str) -> list[Path]:
    path = Path(_schema_manager().get_migrations_path())
    return sorted(p for p in path.glob("*.sql") if p.name.split("_", 1)[0] > since)


def install_schema(conn: Any) -> str:
    """Make Procrastinate's tables, or bring them to this Procrastinate's version; what
    was done, in words. Safe to run twice, and on several nodes at once."""
    import re

    schema = _schema_manager().get_schema()
    current = schema_version()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('listferry cluster init'))")
        (exists,) = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
        if exists is None:
            conn.execute(schema)
            _mark(conn, current)
            return f"Procrastinate's tables made (schema {current})"
        (note,) = conn.execute(
            "SELECT obj_description('procrastinate_jobs'::regclass, 'pg_class')"
        ).fetchone()
        if note and note.startswith(SCHEMA_MARK):
            was = note.removeprefix(SCHEMA_MARK)
            pending = pending_migrations(was)
            if not pending:
                return f"Procrastinate's tables are current (schema {was})"
            for migration in pending:
                conn.execute(migration.read_text())
            _mark(conn, current)
            return f"Procrastinate's tables migrated from schema {was} to {current}"
        wanted = set(re.findall(r"CREATE FUNCTION (\w+)", schema))
        found = {
            name
            for (name,) in conn.execute(
                "SELECT proname FROM pg_proc WHERE proname LIKE 'procrastinate%%'"
            ).fetchall()
        }
        if wanted - found:
            raise ListferryError(
                f"Procrastinate's tables exist but are older than this Procrastinate's "
                f"(schema {current}) and were not made by listferry: apply Procrastinate's "
                f"migrations from {pending_migrations('')[0].parent}, then run this again"
            )
        _mark(conn, current)
        return f"Procrastinate's tables are current (schema {current})"


def _mark(conn: Any, version: str) -> None:
    conn.execute(f"COMMENT ON TABLE procrastinate_jobs IS '{SCHEMA_MARK}{version}'")


# --- status ---------------------------------------------------------------------------


def _when(moment: Any) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def cluster_status(conn: Any, url: str, stalled_after: float) -> dict[str, Any]:
    """What ``cluster status`` shows: workers, queue depth, running and stalled jobs."""
    workers = [
        {"id": wid, "last_heartbeat": _when(beat), "alive": alive}
        for wid, beat, alive in conn.execute(
            "SELECT id, last_heartbeat, last_heartbeat >= now() - make_interval(secs => %s) "
            "FROM procrastinate_workers ORDER BY id",
            (stalled_after,),
        ).fetchall()
    ]
    (queued,) = conn.execute(
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"
    ).fetchone()
    running, stalled = [], []
    for job_id, task, args, worker_id, since, alive in conn.execute(
        "SELECT j.id, j.task_name, j.args, j.worker_id, "
        "(SELECT max(at) FROM procrastinate_events e "
        " WHERE e.job_id = j.id AND e.type = 'started'), "
        "w.last_heartbeat >= now() - make_interval(secs => %s) "
        "FROM procrastinate_jobs j LEFT JOIN procrastinate_workers w ON w.id = j.worker_id "
        "WHERE j.status = 'doing' ORDER BY j.id",
        (stalled_after,),
    ).fetchall():
        job = {
            "job_id": job_id,
            "task": task.removeprefix("listferry."),
            "tenant": args.get("tenant"),
            "worker": worker_id,
            "since": _when(since),
        }
        (running if alive else stalled).append(job)
    return {
        "database": shown(url),
        "workers": workers,
        "queued": queued,
        "running": running,
        "stalled": stalled,
        "leader": leader(conn),
    }
