"""The scheduler: due jobs start through the executor, the config is re-read, homes that
are still receiving get a little longer, and a crashed job is told as a failed run."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import people, write_module
from notify_servers import WebhookServer
from test_serve_config import a_pack

from listferry.config.edit import write_atomically
from listferry.jobs import Job, JobResult
from listferry.ops.scheduler import Scheduler
from listferry.testing import Sandbox


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_due_syncs_run_as_their_own_processes_and_move_on_to_the_next_day(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme", schedule="02:00", timezone="Europe/Berlin")
    ws.add_tenant("beta", schedule="30 3 * * *", export_schedule="04:00")
    ws.upload(people(5), tenant="acme")
    os.utime(ws.home / "subscriber_list.csv", (0, 0))  # long settled
    clock = Clock(at("2026-11-30T00:59:00Z"))
    results: list[tuple[Job, JobResult]] = []
    scheduler = Scheduler(ws.config_path, clock, on_result=lambda j, r: results.append((j, r)))
    scheduler.reload()
    assert scheduler.next_times() == {
        "acme": {"sync": "2026-11-30T01:00:00Z"},
        "beta": {"sync": "2026-11-30T03:30:00Z", "export": "2026-11-30T04:00:00Z"},
    }
    assert scheduler.start_due(clock()) == []
    clock.now = at("2026-11-30T01:00:00Z")
    (job,) = scheduler.start_due(clock())
    assert (job.kind, job.tenant) == ("sync", "acme")
    scheduler.executor.shutdown(wait=True)
    ((done, result),) = results
    assert done.kind == "sync"
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)
    assert (run["tenant"], run["status"], run["added"]) == ("acme", "applied", 5)
    assert scheduler.next_times()["acme"] == {"sync": "2026-12-01T01:00:00Z"}


def test_a_changed_config_is_read_again_without_a_restart(ws: Sandbox) -> None:
    ws.add_tenant("acme", schedule="02:00")
    clock = Clock(at("2026-11-30T00:00:00Z"))
    scheduler = Scheduler(ws.config_path, clock)
    scheduler.reload()
    text = ws.config_path.read_text().replace('schedule = "02:00"', 'schedule = "05:15"')
    time.sleep(0.01)
    ws.config_path.write_text(text)
    os.utime(ws.config_path, None)
    ws.add_tenant("beta", schedule="")
    scheduler.reload()
    assert scheduler.next_times() == {"acme": {"sync": "2026-11-30T05:15:00Z"}}
    broken = ws.config_path.read_text() + "\n[tenants.gamma]\nschedule = 'nonsense'\n"
    ws.config_path.write_text(broken)
    os.utime(ws.config_path, (time.time() + 5, time.time() + 5))
    scheduler.reload()  # logged, and the last good config stays
    assert scheduler.next_times() == {"acme": {"sync": "2026-11-30T05:15:00Z"}}
    scheduler.executor.shutdown()


def test_a_pack_installed_while_the_schedule_runs_leaves_schedule_changes_working(
    ws: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws.add_tenant("acme", schedule="02:00")
    pack = a_pack(tmp_path, monkeypatch)
    scheduler = Scheduler(ws.config_path, Clock(at("2026-11-30T00:00:00Z")))
    scheduler.reload()
    pack.install()  # the running schedule cannot import it

    text = ws.config_path.read_text().replace('schedule = "02:00"', 'schedule = "05:15"')
    write_atomically(ws.config_path, text)
    os.utime(ws.config_path, (time.time() + 5, time.time() + 5))
    scheduler.reload()

    assert scheduler.next_times() == {"acme": {"sync": "2026-11-30T05:15:00Z"}}
    scheduler.executor.shutdown()


def test_a_home_still_receiving_files_is_given_the_upload_grace(ws: Sandbox) -> None:
    ws.add_tenant("acme", schedule="02:00")
    ws.upload(people(3))  # just now
    now = datetime.now(UTC)
    clock = Clock(now)
    scheduler = Scheduler(ws.config_path, clock)
    scheduler.reload()
    due = scheduler.due[("sync", "acme")]
    due.at = now - timedelta(seconds=1)
    assert scheduler.start_due(now) == []
    assert now < due.at <= now + timedelta(seconds=3)  # [server] upload_grace
    os.utime(ws.home / "subscriber_list.csv", (0, 0))
    clock.now = due.at
    (job,) = scheduler.start_due(clock())
    assert job.tenant == "acme"
    scheduler.executor.shutdown(wait=True)


def test_a_sync_process_that_dies_is_recorded_and_told_as_a_failed_run(
    ws: Sandbox, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_module(
        plugin_dir,
        "killed_jobs_for_test",
        """
        from concurrent.futures import Future
        from listferry import JobResult, hookimpl

        class Killed:  # every job's process dies of SIGKILL, as the OOM killer does it
            def __init__(self, config):
                pass

            def submit(self, job):
                future = Future()
                future.set_result(JobResult(-9, "", ""))
                return future

            def shutdown(self, wait=True):
                pass

        @hookimpl
        def register_executors(register):
            register("killed", Killed)
        """,
    )
    monkeypatch.setenv("HOOK_SECRET", "s")
    text = ws.config_path.read_text().replace(
        'homes = "homes"',
        'homes = "homes"\nplugins = ["killed_jobs_for_test"]\nexecutor = "killed"',
    )
    ws.config_path.write_text(text)
    ws.add_tenant("acme", schedule="02:00")
    with WebhookServer() as hook:
        with open(ws.config_path, "a") as f:
            f.write(f'\n[notify.webhook]\nurl = "{hook.url}"\nsecret_env = "HOOK_SECRET"\n')
        now = datetime.now(UTC)
        scheduler = Scheduler(ws.config_path, Clock(now))
        scheduler.reload()
        scheduler.due[("sync", "acme")].at = now

        (job,) = scheduler.start_due(now)

    ((_, body),) = hook.requests
    run = json.loads(body)
    assert (job.tenant, run["tenant"], run["status"]) == ("acme", "acme", "failed")
    assert "was killed by SIGKILL" in run["reason"]
    with ws.store() as store:
        (recorded,) = store.runs("acme")
    assert (recorded.status, recorded.reason) == ("failed", run["reason"])
    assert ws.cli("status").stdout.startswith("acme: failed, run 1 ")


def test_schedule_command_prints_the_plan_and_stops_on_sigterm(ws: Sandbox) -> None:
    import signal
    import subprocess
    import sys

    ws.add_tenant("acme", schedule="@hourly")
    proc = subprocess.Popen(
        [sys.executable, "-m", "listferry", "--config", str(ws.config_path), "schedule"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()
    assert first.startswith("acme: next sync ")  # within the hour (at once: never synced)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip().endswith("stopped")
    assert Path(ws.config_path).exists()


def test_a_sync_missed_while_no_schedule_ran_runs_at_once_but_only_once(ws: Sandbox) -> None:
    ws.add_tenant("late", schedule="02:00")
    ws.add_tenant("done", schedule="02:00")
    ws.add_tenant("long", schedule="02:00")
    for name in ("late", "done", "long"):
        ws.upload(people(2), tenant=name)
        ws.sync(tenant=name)
    import sqlite3

    def started(name: str, stamp: str) -> None:
        with sqlite3.connect(ws.app().config.tenant(name).database) as conn:
            conn.execute("UPDATE runs SET started_at = ?", (stamp,))

    started("late", "2026-11-29T02:00:04Z")  # last night's run; tonight's was missed
    started("done", "2026-11-30T02:00:03Z")  # tonight's ran before the restart
    started("long", "2026-11-29T02:00:04Z")
    clock = Clock(at("2026-11-30T03:10:00Z"))  # restarted at 03:10
    scheduler = Scheduler(ws.config_path, clock)
    scheduler.reload()
    times = scheduler.next_times()
    assert times["late"]["sync"] == "2026-11-30T03:10:00Z"  # at once
    assert times["done"]["sync"] == "2026-12-01T02:00:00Z"
    later = Scheduler(ws.config_path, Clock(at("2026-11-30T09:00:00Z")))  # 7 h late
    later.reload()
    assert later.next_times()["long"]["sync"] == "2026-12-01T02:00:00Z"
    scheduler.executor.shutdown()
    later.executor.shutdown()


def test_a_tenant_added_after_its_time_passed_has_missed_nothing(ws: Sandbox) -> None:
    """A tenant added at 02:30 to a schedule that starts at 03:10 did not miss 02:00 (a
    test uploading to a just-added tenant between 02:00 and 08:00 saw its list synced)."""
    import os

    ws.add_tenant("fresh", schedule="02:00")
    ws.add_tenant("stale", schedule="02:00")
    for name, stamp in (("fresh", "2026-11-30T02:30:00Z"), ("stale", "2026-11-20T12:00:00Z")):
        tenant = ws.app().config.tenant(name)
        moment = at(stamp).timestamp()
        for folder in (tenant.state_dir, ws.home_of(name)):
            if folder.exists():
                os.utime(folder, (moment, moment))
    scheduler = Scheduler(ws.config_path, Clock(at("2026-11-30T03:10:00Z")))
    scheduler.reload()
    times = scheduler.next_times()
    assert times["fresh"]["sync"] == "2026-12-01T02:00:00Z"
    assert times["stale"]["sync"] == "2026-11-30T03:10:00Z"  # never ran since it was added
    scheduler.executor.shutdown()


def test_a_scheduled_sync_that_hangs_past_its_sync_timeout_is_stopped(ws: Sandbox) -> None:
    """Issue #14, finding 8: a sync keeps its tenant's ``sync_timeout`` at its next batch;
    a process that hangs anyway (stuck in a system call, a plugin that never returns) was
    waited for without end, holding one of the executor's workers for good."""
    ws.add_tenant("acme", schedule="02:00", sync_timeout=30)
    clock = Clock(at("2026-11-30T00:59:00Z"))
    scheduler = Scheduler(ws.config_path, clock)
    scheduler.reload()
    job = scheduler._job(scheduler.due[("sync", "acme")])
    assert (job.kind, job.timeout) == ("sync", 30 + 60)

    hangs = Job("sync", "acme", [sys.executable, "-c", "import time; time.sleep(600)"], 0.5)
    result = scheduler.executor.submit(hangs).result(timeout=60)
    scheduler.executor.shutdown()
    assert result.returncode == -9
    assert result.last_line() == "stopped: still running after 0.5 s"
