"""A sync killed in the middle of applying leaves the last good list, and the file pending.

The random trials are ``bench/crash.py``'s (``python3 bench/crash.py`` runs 100 of them
on a 100k-row list); CI runs 20 on a smaller one.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import people

from listferry.testing import Sandbox

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import crash


def listferry_command() -> list[str]:
    exe = Path(sys.executable).parent / "listferry"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "listferry"]


def committed_list(db: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(
            "SELECT email, first_name, last_name, segment_code, status FROM subscribers "
            "ORDER BY email"
        ).fetchall()


def applied_runs(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM runs WHERE status = 'applied'").fetchone()[0]


def stop_when_wal_grows(proc: subprocess.Popen, wal: Path, grow_by: int) -> bool:
    """SIGSTOP the sync once its write-ahead log grew by ``grow_by`` bytes (it is applying)."""
    base = wal.stat().st_size if wal.exists() else 0
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if wal.exists() and wal.stat().st_size > base + grow_by:
            proc.send_signal(signal.SIGSTOP)
            return True
        time.sleep(0.001)
    return False


def test_sigkill_mid_apply_keeps_last_good_list_and_file_pending(ws: Sandbox) -> None:
    home = ws.add_tenant("acme", strategy="full")
    ws.upload(people(1000), count=1000)
    assert [r.status for r in ws.sync_all()] == ["applied"]
    db = ws.tenant.database
    last_good = committed_list(db)

    rows = people(200_000, start=500, segment="SILVER")
    new_file = ws.upload(rows, count=len(rows))
    proc = subprocess.Popen(
        [*listferry_command(), "--config", str(ws.config_path), "sync", "acme"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stopped = stop_when_wal_grows(proc, Path(f"{db}-wal"), grow_by=2 << 20)
    assert stopped, f"the sync ended before applying: {proc.communicate()}"
    assert applied_runs(db) == 1, "the stopped sync must not have committed yet"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert committed_list(db) == last_good
    assert new_file.exists(), "the list file must still be pending in the home"
    assert (home / "subscriber_list_count.txt").exists()

    again = subprocess.run(
        [*listferry_command(), "--config", str(ws.config_path), "sync", "acme", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert '"status": "applied"' in again.stdout
    active = ws.subscribers("active", tenant="acme")
    assert set(active) == {r[0] for r in rows}
    with ws.store() as store:
        history = store.runs("acme")
    assert history[1].status == "failed"
    assert "interrupted" in (history[1].reason or "")
    assert not new_file.exists()


def test_sigkill_while_reading_leaves_the_old_list_or_the_new_never_a_mix(ws: Sandbox) -> None:
    ws.add_tenant("acme", strategy="incremental")
    ws.upload(people(10), count=10)
    ws.sync()
    db = ws.tenant.database
    last_good = committed_list(db)
    path = ws.upload(people(100_000, start=10))
    proc = subprocess.Popen(
        [*listferry_command(), "--config", str(ws.config_path), "sync", "acme"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    work = ws.tenant.state_dir / "work"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if work.exists() and any(work.iterdir()):  # the run has fetched its file
            proc.send_signal(signal.SIGSTOP)
            break
        time.sleep(0.001)
    committed = applied_runs(db) == 2  # a starved test may see the run already done
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    if committed:
        assert len(committed_list(db)) == 100_010
    else:
        assert committed_list(db) == last_good
        assert path.exists(), "the list file must still be pending in the home"
    after = [r.status for r in ws.sync_all()]  # killed before archiving: the same file is skipped
    assert after in (["idle"], ["skipped"]) if committed else after == ["applied"]
    assert len(ws.subscribers("active")) == 100_010
    assert not path.exists()


def test_twenty_random_sigkills_leave_the_old_list_or_the_new_and_lose_no_file(
    tmp_path: Path,
) -> None:
    result = crash.campaign(tmp_path, trials=20, rows=10_000, seed=20261130)
    assert not result.failures, result.report()
    assert len(result.phases_hit()) >= 3, result.report()


KILLED_AFTER_ARCHIVING = """
import os, signal, sys
from listferry.sync import run as pipeline
from listferry.cli import main

archive_local = pipeline.TenantSync.archive_local

def archive_then_die(self, *args, **kwargs):
    archive_local(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # the copy is in the archive, nothing committed

pipeline.TenantSync.archive_local = archive_then_die
sys.argv = ["listferry", *sys.argv[1:]]
main()
"""


def test_a_run_killed_after_archiving_its_copy_owns_that_copy_and_the_next_run_applies(
    ws: Sandbox,
) -> None:
    home = ws.add_tenant("acme", strategy="full")
    ws.upload(people(10), count=10)
    assert [r.status for r in ws.sync_all()] == ["applied"]
    db = ws.tenant.database
    last_good = committed_list(db)
    new_file = ws.upload(people(20, start=5), count=20)
    archive = ws.tenant.state_dir / "archive"
    before = set(archive.iterdir())

    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_AFTER_ARCHIVING,
            "--config",
            str(ws.config_path),
            "sync",
            "acme",
        ],
        capture_output=True,
        text=True,
        check=False,
    )

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert committed_list(db) == last_good
    assert new_file.exists() and (home / "subscriber_list_count.txt").exists()
    copies = sorted(p.name for p in set(archive.iterdir()) - before)
    assert len(copies) == 2 and all(name.startswith("000002-") for name in copies), copies

    [run] = ws.sync_all()

    assert run.status == "applied" and run.run_id == 3
    assert set(ws.subscribers("active")) == {r[0] for r in people(20, start=5)}
    with ws.store() as store:
        runs = {r.run_id: r for r in store.runs("acme")}
    assert runs[2].status == "failed" and "interrupted" in (runs[2].reason or "")
    [list_copy] = [name for name in copies if name.endswith("-subscriber_list.csv")]
    assert runs[2].archive == str(archive / list_copy)
    named = {Path(r.archive).name[:20] for r in runs.values() if r.archive}
    assert {p.name[:20] for p in archive.iterdir()} == named  # no copy without its run
    assert not new_file.exists()
