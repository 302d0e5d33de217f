"""A sync run: select > read > validate > plan > check plan > apply > archive + report.

Each stage takes what the one before produced. Only :func:`listferry.sync.apply.apply`
writes the list. A voided or failed run changes nothing in the store; a voided file
is archived with its report, a failed one stays in the home for the next run, and so
does one voided only by a guard that ``sync --force`` lifts.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

from listferry.app import App, settings_digest
from listferry.config import Tenant, duration_seconds
from listferry.errors import ListferryError, Void
from listferry.names import (
    count_name,
    is_report,
    report_name,
)
from listferry.reader import ReadLimits, read_limits, too_large
from listferry.records import FileInfo
from listferry.runs import RunRecord, RunStatus, utcnow
from listferry.store.database import Store, StoreError
from listferry.store.locks import tenant_lock
from listferry.sync.apply import apply
from listferry.sync.deadline import Deadline
from listferry.sync.plan import Overrulable, checked_plan, overrule_hint
from listferry.sync.report import customer_notes, render
from listferry.sync.retention import trim_archive
from listferry.sync.select import Pending, Selection, complete, repeat_reason, select, sha256_of
from listferry.sync.stage import Staged, check_file_whole, read_list, unpacked
from listferry.transport import RemoteFile, Transport

log = logging.getLogger("listferry")

#: The counts of what a run changed: all 0 for a run that did not apply.
CHANGES = ("added", "updated", "removed", "unsubscribed", "unchanged", "ignored")

#: ``progress(total_bytes)`` returns ``update(bytes_done)``; the CLI passes a bar.
Progress = Callable[[int], Callable[[int], None]]


def log_failure(message: str) -> None:
    """Log the exception being handled in one line; the traceback with LISTFERRY_DEBUG=1."""
    kind, exc, _ = sys.exc_info()
    detail = f"{kind.__name__}: {exc}" if kind else "unknown error"
    log.error("%s: %s", message, detail, exc_info=bool(os.environ.get("LISTFERRY_DEBUG")))


def reason_of(exc: BaseException) -> str:
    """A failure in plain words: the error's own message, with the file it concerns."""
    if isinstance(exc, OSError) and not isinstance(exc, ListferryError):
        return f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    return str(exc)


def store_failure(path: Path, exc: sqlite3.Error) -> str:
    """A failure of the tenant database in plain words, naming its file."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL":
        return f"{path}: disk full: the tenant database cannot grow ({exc})"
    if name.startswith("SQLITE_IOERR"):
        return f"{path}: could not write the tenant database ({exc}); is the disk full?"
    return f"{path}: the tenant database failed: {exc}"


def unarchive(moved: list[tuple[Path, Path]]) -> None:
    """Move archived files back to where they were, last first, and forget the moves."""
    while moved:
        source, dest = moved.pop()
        os.replace(dest, source)


class TenantSync:
    """The runs of one tenant, over one open store and one transport."""

    def __init__(
        self,
        app: App,
        tenant: Tenant,
        store: Store,
        transport: Transport,
        force: bool = False,
        progress: Progress | None = None,
        replay_of: int | None = None,
        reports: Transport | None = None,
    ) -> None:
        self.app = app
        self.replay_of = replay_of
        self.hook = app.host.hook
        self.tenant = tenant
        self.store = store
        self.transport = transport
        self.reports = reports or transport
        self.force = force
        self.progress = progress
        self.work = tenant.state_dir / "work"
        self.waiting: str | None = None  # the list held for its count file, for the operator
        self.archive = tenant.state_dir / "archive"
        #: The home as the sync listed it, and the reports it wrote there since.
        self.listed: list[RemoteFile] | None = None
        self.reported: set[str] = set()
        #: ``sync_timeout`` from now: hashing, reading and applying stop once it passed.
        self.deadline = Deadline(tenant.sync_timeout)

    def run_all(self) -> list[RunRecord]:
        """A run for each file to take now; ``idle`` when there is none.

        A home that cannot be listed (missing, unreachable, login refused) is one
        ``failed`` run, recorded like any other.
        """
        self.store.close_interrupted_runs(self.archive)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True, mode=0o700)
        self.archive.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            selection = self.select_files()
        except (ListferryError, OSError) as exc:
            return [self.unreachable(reason_of(exc))]
        self.looked_at()
        selection = self.hold_for_count_files(selection)
        runs = [self.supersede(p, selection.runs[-1]) for p in selection.superseded]
        runs += [self.run_file(p) for p in selection.runs]
        idle = RunRecord(
            self.tenant.name, status=RunStatus.IDLE, finished_at=utcnow(), hint=self.waiting
        )
        return runs or [idle]

    def looked_at(self) -> None:
        """Remember that the home was listed now (``status`` shows it)."""
        self.store.set_meta("looked_at", utcnow())

    def unreachable(self, reason: str) -> RunRecord:
        """The attempt of a run whose home could not be listed: ``failed``, recorded."""
        run = RunRecord(self.tenant.name, strategy=self.tenant.strategy).end(
            RunStatus.FAILED, reason
        )
        record_attempt(self.store, run)
        return run

    def hold_for_count_files(self, selection: Selection) -> Selection:
        """Leave a list whose required count file has not come yet, for ``count_file_wait``.

        The wait counts from when a run first saw the list as it is now (the store keeps
        that). Files after a waiting one wait too (their order matters), and older full
        lists are not superseded by a newer one that waits.
        """
        if self.tenant.count_file != "required" or self.replay_of is not None:
            return selection
        now = time.time()
        without = [p.list_file for p in selection.runs + selection.superseded if not p.count_file]
        seen = self.store.first_seen(without, now)
        wait = duration_seconds(self.tenant.count_file_wait) if self.tenant.count_file_wait else 0
        ready: list[Pending] = []
        for pending in selection.runs:
            since = seen.get(pending.list_file.name, now)
            if not pending.count_file and now - since < wait:
                until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since + wait))
                self.waiting = f"{pending.list_file.name} waits for its count file until {until}"
                log.info(
                    "%s: %s waits for its count file %s (since %s)",
                    self.tenant.name,
                    pending.list_file.name,
                    count_name(pending.list_file.name),
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)),
                )
                return Selection(runs=ready, superseded=[])
            ready.append(pending)
        return selection

    def select_files(self) -> Selection:
        """List the home and pick the files to run.

        A home on another server may be written to in place, so it is listed twice,
        ``stable_seconds`` apart, and a file still changing is left for the next run;
        no second look is needed when every list file has its count file. Local homes
        are written atomically by the built-in servers and need no wait, nor do homes
        whose transport says every file it lists is whole (``atomic``: object storage).
        """
        files = self.listed = self.transport.list()
        selection = select(files, self.tenant)
        atomic = self.tenant.is_local or getattr(self.transport, "atomic", False)
        if atomic or not self.tenant.stable_seconds or complete(selection):
            return selection
        time.sleep(self.tenant.stable_seconds)
        self.listed = self.transport.list()
        return select(self.listed, self.tenant, earlier=files)

    def supersede(self, old: Pending, new: Pending) -> RunRecord:
        run = RunRecord(
            self.tenant.name,
            file=old.list_file.name,
            strategy=self.tenant.strategy,
            replay_of=self.replay_of,
        )
        self.store.begin_run(run)
        local: Path | None = None
        try:
            local = self.fetch(run, old)
            run.sha256 = sha256_of(local, self.deadline.check)
            run.end(RunStatus.SKIPPED, f"superseded by the newer file {new.list_file.name}")
        except (ListferryError, OSError) as exc:
            run.end(RunStatus.FAILED, reason_of(exc))
        self.finish(run, old, local, keep=run.status == RunStatus.FAILED)
        return run

    def fetch(self, run: RunRecord, pending: Pending) -> Path:
        folder = self.work / f"run-{run.run_id}"
        folder.mkdir(mode=0o700)
        local = folder / pending.list_file.name
        self.transport.fetch(pending.list_file.name, local)
        if pending.count_file:
            self.transport.fetch(pending.count_file.name, folder / pending.count_file.name)
        return local

    def run_file(self, pending: Pending) -> RunRecord:
        tenant = self.tenant
        run = RunRecord(
            tenant.name,
            file=pending.list_file.name,
            strategy=tenant.strategy,
            replay_of=self.replay_of,
        )
        self.store.begin_run(run)
        local: Path | None = None
        staged: Staged | None = None
        info: FileInfo | None = None
        keep = False
        limit = tenant.max_list_size
        self.deadline.watch(self.store.conn)
        try:
            if not tenant.is_local and pending.list_file.size > limit:  # not even fetched
                raise too_large(run.file, limit, pending.list_file.size)
            local = self.fetch(run, pending)
            if (size := local.stat().st_size) > limit:  # neither hashed nor read
                raise too_large(run.file, limit, size)
            run.sha256 = sha256_of(local, self.deadline.check)
            run.settings_digest = settings_digest(self.app.host, tenant)
            last = None if self.replay_of else self.store.last_applied()
            repeat = repeat_reason(last, run.sha256, run.settings_digest)
            if repeat:
                run.end(RunStatus.SKIPPED, repeat)
            else:
                count = local.parent / pending.count_file.name if pending.count_file else None
                source, name = unpacked(tenant, local, run.file)
                if (plain := source.stat().st_size) > limit:  # an encrypted list, decrypted
                    raise too_large(run.file, limit, plain, unpacks=True)
                bar = self.progress(plain) if self.progress else None

                def update(done: int) -> None:  # after each batch, whatever the reader
                    self.deadline.check()
                    if bar is not None:
                        bar(done)

                with read_limits(ReadLimits(limit, self.deadline.check)):
                    info, staged = read_list(
                        self.app.host, tenant, self.store.conn, source, name, count, update
                    )
                run.received, run.invalid = staged.received, staged.invalid
                run.duplicates = staged.duplicates
                check_file_whole(self.app.host, info)
                self.plan_and_apply(run, staged, pending, local)
        except Void as exc:
            run.end(RunStatus.VOIDED, str(exc))
            keep = isinstance(exc, Overrulable)
            if keep:
                run.hint = overrule_hint(tenant, self.replay_of)
                where = "in the home" if self.replay_of is None else "in the archive"
                log.warning(
                    "%s: %s held %s: %s; %s", tenant.name, run.file, where, run.reason, run.hint
                )
        except ListferryError as exc:
            run.end(RunStatus.FAILED, str(exc))
        except OSError as exc:
            run.end(RunStatus.FAILED, reason_of(exc))
        except sqlite3.Error as exc:
            if self.deadline.passed():  # the statement was interrupted: the time is up
                run.end(RunStatus.FAILED, self.deadline.reason)
            else:
                run.end(RunStatus.FAILED, store_failure(self.store.path, exc))
            log.error("%s: run %s failed: %s", tenant.name, run.run_id, run.reason)
        except Exception as exc:
            log_failure(f"run {run.run_id} of {tenant.name} failed")
            run.end(RunStatus.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.store.conn.set_progress_handler(None, 0)
            self.store.conn.execute("DROP TABLE IF EXISTS temp.incoming")
            self.store.conn.execute("DROP TABLE IF EXISTS temp.plan")
        self.finish(run, pending, local, staged, info, keep or run.status == RunStatus.FAILED)
        return run

    def plan_and_apply(self, run: RunRecord, staged: Staged, pending: Pending, local: Path) -> None:
        """Plan, check the plan, and apply it; the file is archived as part of the commit."""
        self.deadline.check()
        active = self.store.count("active")
        plan = checked_plan(self.app.host, self.tenant, self.store.conn, staged, active, self.force)
        planned = {name: value for name, value in plan.counts().items() if hasattr(run, name)}
        for name, value in planned.items():  # a voided run added, removed... nothing
            setattr(run, name, value)
        moved: list[tuple[Path, Path]] = []

        def archive() -> None:  # inside the transaction: a file that cannot be archived
            self.deadline.check()  # is not applied, nor one whose time is up
            try:
                run.archive = self.archive_local(run, pending, local, moved)
            except OSError as exc:
                raise ListferryError(f"could not archive {run.file}: {reason_of(exc)}") from None

        try:
            apply(self.store, staged, run, utcnow(), before_commit=archive)
        except BaseException:
            for name in CHANGES:  # nor does a failed one
                setattr(run, name, 0)
            run.archive = None
            unarchive(moved)
            raise

    def finish(
        self,
        run: RunRecord,
        pending: Pending,
        local: Path | None,
        staged: Staged | None = None,
        info: FileInfo | None = None,
        keep: bool = False,
    ) -> None:
        """Archive the file (unless ``keep``: it stays in the home), settle the run, report.

        An applied file was archived when it was applied; a file that cannot be archived
        (a full disk) stays in the home and its run ends ``failed``.
        """
        archived = False
        if not keep and local is not None:
            try:
                if run.status != RunStatus.APPLIED:
                    run.archive = self.archive_local(run, pending, local, [])
                archived = True
            except OSError as exc:
                run.end(RunStatus.FAILED, f"could not archive {run.file}: {reason_of(exc)}")
        notes = customer_notes(info) if info else []
        if self.replay_of is not None:
            notes = [f"a replay of run {self.replay_of}'s archived file", *notes]
        run.report = render(
            run,
            staged.invalid_sample if staged else (),
            staged.duplicate_sample if staged else (),
            notes,
            held=keep and run.status == RunStatus.VOIDED,
            read=staged is not None,
        )
        if self.settle(run, pending if archived else None):
            self.write_report(run)
        if local is not None:
            shutil.rmtree(local.parent, ignore_errors=True)

    def settle(self, run: RunRecord, taken: Pending | None) -> bool:
        """Make the run's end last: take its archived file (``taken``) out of the home and
        record the run. True when the run's report should go to the customer."""
        if taken is not None:
            self.remove_from_home(taken)
        self.record(run)
        return True

    def record(self, run: RunRecord) -> None:
        """Save the run's outcome in the store (an applied run's was saved as it applied:
        only its archive and report are added)."""
        try:
            if run.status != RunStatus.APPLIED:
                with self.store.transaction():
                    self.store.save_run(run)
            else:
                self.store.conn.execute(
                    "UPDATE runs SET archive = ?, report = ? WHERE id = ?",
                    (run.archive, run.report, run.run_id),
                )
        except sqlite3.Error as exc:  # the run is still printed, and reported in the home
            log.error(
                "%s: run %s ended %s but could not be recorded: %s",
                self.tenant.name,
                run.run_id,
                run.status,
                store_failure(self.store.path, exc),
            )

    def archive_local(
        self, run: RunRecord, pending: Pending, local: Path, moved: list[tuple[Path, Path]]
    ) -> str:
        """Move the run's copy (and its count file) into the archive; all or nothing.

        ``moved`` collects what was moved, for :func:`unarchive`.
        """
        prefix = f"{run.run_id:06d}-{(run.sha256 or 'unread')[:12]}-"
        target = self.archive / (prefix + pending.list_file.name)
        moves = [(local, target)]
        count_local = local.parent / pending.count_file.name if pending.count_file else None
        if count_local and count_local.exists():
            moves.append((count_local, self.archive / (prefix + count_local.name)))
        try:
            for source, dest in moves:
                os.replace(source, dest)
                moved.append((source, dest))
        except OSError:
            unarchive(moved)
            raise
        return str(target)

    def remove_from_home(self, pending: Pending) -> None:
        """Take an archived file (and its count file) out of the home."""
        try:
            if not self.transport.remove(pending.list_file.name, pending.list_file):
                log.info(
                    "%s: %s changed in the home during the run; left for the next run",
                    self.tenant.name,
                    pending.list_file.name,
                )
            elif pending.count_file:
                self.transport.remove(pending.count_file.name, pending.count_file)
        except (ListferryError, OSError) as exc:
            # The run stands as it ended; the next run finds the same content and skips it.
            log.warning(
                "%s: could not remove %s from the home: %s",
                self.tenant.name,
                pending.list_file.name,
                reason_of(exc),
            )

    def write_report(self, run: RunRecord) -> None:
        """Put the run's report in the home as ``<stem>.result.txt``; keep the newest few.

        Of the reports in the home, the tenant's ``keep_reports`` newest stay; older
        ones (of lists with other names: a dated export each night) are removed. The
        home is listed again for that only when the reports its first listing showed and
        those written since could be more than that (a round trip fewer on a remote home).
        """
        name = report_name(run.file)
        temp = self.work / f"report-{run.run_id}.txt"
        try:
            temp.write_text(run.report or "", encoding="utf-8")
            self.reports.put(temp, name)
            self.reported.add(name)
            if self.reports is self.transport and self.listed is not None:
                seen = {f.name for f in self.listed if is_report(f.name)} | self.reported
                if len(seen) <= self.tenant.keep_reports:
                    return
            reports = [f for f in self.reports.list() if is_report(f.name)]
            reports.sort(key=lambda f: (f.mtime, f.name == name))
            for old in reports[: -self.tenant.keep_reports]:
                self.reports.remove(old.name, old)
        except (OSError, ListferryError) as exc:
            log.warning(
                "%s: could not write the result report: %s", self.tenant.name, reason_of(exc)
            )
        finally:
            temp.unlink(missing_ok=True)


def record_attempt(store: Store, run: RunRecord) -> None:
    """Record ``run``, an attempt that ended before it reached a file; one log line."""
    log.error("%s: failed: %s", run.tenant, run.reason)
    try:
        store.record_attempt(run)
    except sqlite3.Error as exc:
        log.error(
            "%s: the failed attempt could not be recorded: %s",
            run.tenant,
            store_failure(store.path, exc),
        )


def record_failure(tenant: Tenant, reason: str) -> RunRecord:
    """A ``failed`` run of ``tenant`` that left no record of its own (its process died, or
    could not read the config), recorded in the tenant's store if that can be opened."""
    run = RunRecord(tenant.name, strategy=tenant.strategy).end(RunStatus.FAILED, reason)
    try:
        with Store(tenant.database) as store:
            record_attempt(store, run)
    except (StoreError, OSError) as exc:
        log.error(
            "%s: failed: %s; the run could not be recorded: %s", tenant.name, reason, reason_of(exc)
        )
    return run


def tell_finished(app: App, tenant: Tenant, runs: list[RunRecord]) -> None:
    """Tell the ``run_finished`` plugins of each run; one that raises is one log line."""
    for run in runs:
        try:
            app.host.hook.run_finished(run=run, tenant=tenant, config=app.config)
        except Exception:
            log_failure(f"a run_finished plugin failed for {tenant.name}")


def sync_tenant(
    app: App, tenant: Tenant, force: bool = False, progress: Progress | None = None
) -> list[RunRecord]:
    """Run every pending list file of ``tenant``; one record per run (``idle`` if none).
    Then the tenant's archive is trimmed to its ``archive_keep_runs``/``archive_keep_days``."""
    with tenant_lock(tenant) as locked:
        if not locked:
            run = RunRecord(tenant.name, status=RunStatus.SKIPPED, finished_at=utcnow())
            run.reason = "another run of this tenant is in progress"
            return [run]
        try:
            with Store(tenant.database) as store:
                try:
                    transport = app.transport(tenant)
                except (ListferryError, OSError) as exc:
                    run = RunRecord(tenant.name, strategy=tenant.strategy)
                    runs = [run.end(RunStatus.FAILED, reason_of(exc))]
                    record_attempt(store, run)
                else:
                    try:
                        runs = TenantSync(app, tenant, store, transport, force, progress).run_all()
                    finally:
                        transport.close()
                trim_archive(tenant, store)
        except (StoreError, sqlite3.Error) as exc:  # no run can be recorded in the store
            db = tenant.database
            reason = str(exc) if isinstance(exc, StoreError) else store_failure(db, exc)
            log.error("%s: failed: %s", tenant.name, reason)
            runs = [
                RunRecord(tenant.name, status=RunStatus.FAILED, finished_at=utcnow(), reason=reason)
            ]
        except ListferryError as exc:
            runs = [
                RunRecord(
                    tenant.name, status=RunStatus.FAILED, finished_at=utcnow(), reason=str(exc)
                )
            ]
        except OSError as exc:
            runs = [
                RunRecord(
                    tenant.name,
                    status=RunStatus.FAILED,
                    finished_at=utcnow(),
                    reason=reason_of(exc),
                )
            ]
    tell_finished(app, tenant, runs)
    return runs
