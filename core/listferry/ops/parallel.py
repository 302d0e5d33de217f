"""Running many tenants at once: ``workers`` forked processes, one tenant each at a time.

The workers are forked from the command's process, so they start with the config read
and the plugins loaded (nothing is imported or loaded again), and each runs tenant
after tenant as the parent hands them out. A crash while running a tenant (a
segfault, ``os._exit``, the OOM killer) ends that worker alone: the tenant's run is
``failed``, a new worker takes its place and the others go on. Results come back in
tenant order, each as soon as it and every tenant before it have finished.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from listferry.config import Tenant
from listferry.runs import RunRecord, RunStatus, utcnow
from listferry.text import how_ended

Runs = list[RunRecord]


def _work(run: Callable[[Tenant], Runs], tenants: Sequence[Tenant], conn: Connection) -> None:
    """A worker: run the tenant whose index comes in, send its runs back, until ``None``."""
    while (index := conn.recv()) is not None:
        tenant = tenants[index]
        try:
            runs = run(tenant)
        except BaseException as exc:
            runs = [
                RunRecord(
                    tenant.name,
                    status=RunStatus.FAILED,
                    finished_at=utcnow(),
                    reason=f"the run raised {type(exc).__name__}: {exc}",
                )
            ]
        conn.send(runs)
    conn.close()


def _crashed(tenant: Tenant, exitcode: int | None) -> Runs:
    how = how_ended(exitcode)
    reason = f"the worker running this tenant {how}; the run may have been cut short"
    return [RunRecord(tenant.name, status=RunStatus.FAILED, finished_at=utcnow(), reason=reason)]


def run_tenants(
    run: Callable[[Tenant], Runs],
    tenants: Sequence[Tenant],
    workers: int,
    crashed: Callable[[Runs], None] = lambda runs: None,
) -> Iterator[Runs]:
    """``run(tenant)`` for each tenant, ``workers`` at a time; the runs in tenant order.

    With one worker (or one tenant) everything runs in this process, one after another.
    When a worker dies without an answer, its tenant's ``failed`` run is passed to
    ``crashed`` in this process (the worker could not report it) before it is yielded.
    """
    if workers <= 1 or len(tenants) <= 1:
        for tenant in tenants:
            yield run(tenant)
        return
    context = multiprocessing.get_context("fork")
    live: dict[Connection, BaseProcess] = {}
    busy: dict[Connection, int] = {}
    done: dict[int, Runs] = {}
    queued = iter(range(len(tenants)))
    following = 0

    def start() -> None:
        ours, theirs = context.Pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        worker = context.Process(target=_work, args=(run, tenants, theirs))
        worker.start()
        theirs.close()
        live[ours] = worker

    try:
        for _ in range(workers):
            start()
        while following < len(tenants):
            for conn in live:
                if conn not in busy and (index := next(queued, None)) is not None:
                    conn.send(index)
                    busy[conn] = index
            for conn in wait(list(busy)):
                index = busy.pop(conn)  # type: ignore[call-overload]
                try:
                    done[index] = conn.recv()  # type: ignore[union-attr]
                except (EOFError, OSError):
                    worker = live.pop(conn)  # type: ignore[call-overload]
                    conn.close()  # type: ignore[union-attr]
                    worker.join()
                    done[index] = _crashed(tenants[index], worker.exitcode)
                    crashed(done[index])
                    start()
            while following in done:
                yield done.pop(following)
                following += 1
    finally:
        for conn, worker in live.items():
            with contextlib.suppress(OSError):
                conn.send(None)
            worker.join()
            conn.close()
