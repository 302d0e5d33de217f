"""Runs: which files a sync takes, in what order, and what every run leaves behind."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time

import pytest
from conftest import people
from test_cli import RUN_FIELDS

from listferry.runs import RunRecord
from listferry.store.locks import tenant_lock
from listferry.testing import Sandbox

UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def only(runs: list[RunRecord]) -> RunRecord:
    assert len(runs) == 1, runs
    return runs[0]


def aged(path: os.PathLike, mtime: int) -> None:
    """Give an uploaded file a modification time (seconds since the epoch)."""
    os.utime(path, (mtime, mtime))


def table(ws: Sandbox, name: str = "subscribers") -> list[tuple]:
    """Every row and column of a table in the tenant's database file."""
    conn = sqlite3.connect(ws.tenant.database)
    try:
        return conn.execute(f"SELECT * FROM {name} ORDER BY 1").fetchall()
    finally:
        conn.close()


def home_files(ws: Sandbox) -> list[str]:
    return sorted(p.name for p in ws.home.iterdir())


def archived(ws: Sandbox) -> list[str]:
    return sorted(p.name for p in (ws.tenant.state_dir / "archive").iterdir())


# -- what a sync picks up ------------------------------------------------------------


def test_sync_is_idle_when_nothing_is_pending(ws: Sandbox) -> None:
    ws.add_tenant("acme")

    run = only(ws.sync_all())

    assert (run.status, run.reason, run.file, run.run_id) == ("idle", None, None, None)
    with ws.store() as store:
        assert store.runs("acme") == []


def test_hidden_files_of_uploads_in_progress_are_never_read(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    partial = ws.home / ".subscriber_list.csv"
    partial.write_bytes(b"email\r\nhalf@exam")
    (ws.home / ".other.csv.part").write_bytes(b"email\r\n")

    assert only(ws.sync_all()).status == "idle"

    assert home_files(ws) == [".other.csv.part", ".subscriber_list.csv"]
    assert partial.read_bytes() == b"email\r\nhalf@exam"
    assert table(ws) == []
    partial.rename(ws.home / "subscriber_list.csv")  # the upload completes
    assert only(ws.sync_all()).status == "voided"  # and only now is it read


def test_incremental_runs_pending_files_oldest_first(ws: Sandbox) -> None:
    ws.add_tenant("acme", strategy="incremental")
    aged(ws.upload([("ada@example.org", "Newer", "", "")], name="a.csv"), 1_700_000_000)
    aged(ws.upload([("ada@example.org", "Older", "", "")], name="b.csv"), 1_600_000_000)

    runs = ws.sync_all()

    assert [(r.file, r.status) for r in runs] == [("b.csv", "applied"), ("a.csv", "applied")]
    assert [(r.added, r.updated) for r in runs] == [(1, 0), (0, 1)]
    assert ws.subscribers("active")["ada@example.org"]["first_name"] == "Newer"
    assert home_files(ws) == ["a.result.txt", "b.result.txt"]


def test_full_runs_the_newest_file_and_archives_older_ones_as_superseded(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme")
    aged(ws.upload(people(3), name="monday.csv", count=3), 1_600_000_000)
    aged(ws.upload(people(2, start=10), name="tuesday.csv", count=2), 1_700_000_000)
    aged(ws.upload(people(1, start=20), name="old.csv"), 1_500_000_000)

    runs = ws.sync_all()

    assert [(r.file, r.status) for r in runs] == [
        ("old.csv", "skipped"),
        ("monday.csv", "skipped"),
        ("tuesday.csv", "applied"),
    ]
    assert runs[1].reason == "superseded by the newer file tuesday.csv"
    assert sorted(ws.subscribers("active")) == ["p10@example.org", "p11@example.org"]
    assert home_files(ws) == ["monday.result.txt", "old.result.txt", "tuesday.result.txt"]
    assert [name.split("-", 2)[2] for name in archived(ws)] == [
        "old.csv",
        "monday.csv",
        "monday_count.txt",
        "tuesday.csv",
        "tuesday_count.txt",
    ]
    assert (
        "Outcome: skipped: superseded by the newer file tuesday.csv"
        in (ws.home / "monday.result.txt").read_text()
    )


def test_a_repeat_of_the_last_applied_file_is_skipped(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(people(3, segment="SILVER"))
    assert only(ws.sync_all()).status == "applied"
    last = ws.upload(people(3)).read_bytes()
    assert only(ws.sync_all()).run_id == 2
    before = table(ws)
    ws.upload(last, name="again.csv")

    run = only(ws.sync_all())

    assert (run.status, run.reason) == (
        "skipped",
        "the same content as the last applied file (run 2)",
    )
    assert run.sha256 == hashlib.sha256(last).hexdigest()
    assert table(ws) == before
    assert "again.csv" not in home_files(ws)


def test_file_with_a_modification_time_in_the_future_is_taken(ws: Sandbox) -> None:
    ws.add_tenant("acme")  # `sftp put -p` keeps the mtime of a client whose clock runs ahead
    aged(ws.upload(people(3)), int(time.time()) + 3600)

    assert only(ws.sync_all()).status == "applied"


def test_file_younger_than_settle_seconds_waits_for_the_next_run(ws: Sandbox) -> None:
    ws.add_tenant("acme", settle_seconds=600)
    path = ws.upload(people(3))
    aged(path, int(time.time()) - 60)

    assert only(ws.sync_all()).status == "idle"
    aged(path, int(time.time()) - 600)
    assert only(ws.sync_all()).status == "applied"


def test_second_sync_of_a_tenant_while_one_runs_is_skipped(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(people(3))
    tenant = ws.tenant

    with tenant_lock(tenant) as locked:
        assert locked
        run = only(ws.sync_all())

    assert (run.status, run.reason) == ("skipped", "another run of this tenant is in progress")
    assert "subscriber_list.csv" in home_files(ws)
    assert ws.subscribers() == {}
    assert only(ws.sync_all()).status == "applied"  # the lock is free again


# -- what every run leaves behind ----------------------------------------------------


def test_every_run_is_recorded_in_the_cli_json_shape(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(people(3), count=3)
    synced = ws.cli("sync", "acme", "--json")
    assert synced.exit_code == 0, synced.output
    ws.upload(people(2), count=5)
    voided = ws.cli("sync", "acme", "--json")
    assert voided.exit_code == 1

    history = ws.cli("runs", "acme", "--json")

    assert history.exit_code == 0, history.output
    runs = json.loads(history.output)
    assert runs == json.loads(voided.output) + json.loads(synced.output)  # newest first
    for run in runs:
        assert set(run) >= RUN_FIELDS
        assert UTC_TIME.match(run["started_at"]) and UTC_TIME.match(run["finished_at"])
    assert {k: runs[1][k] for k in ("run_id", "status", "file", "strategy", "reason")} == {
        "run_id": 1,
        "status": "applied",
        "file": "subscriber_list.csv",
        "strategy": "full",
        "reason": None,
    }
    assert [runs[1][k] for k in ("received", "added", "removed", "unchanged")] == [3, 3, 0, 0]
    assert (runs[0]["run_id"], runs[0]["status"], runs[0]["received"]) == (2, "voided", 2)
    assert runs[0]["reason"] == "record count mismatch: count file says 5, file has 2 records"


def test_applied_file_is_archived_with_run_id_and_hash_and_leaves_the_home(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme")
    content = ws.upload(people(3), count=3).read_bytes()
    digest = hashlib.sha256(content).hexdigest()

    run = only(ws.sync_all())

    assert run.sha256 == digest
    state = ws.tenant.state_dir
    assert archived(ws) == [
        f"000001-{digest[:12]}-subscriber_list.csv",
        f"000001-{digest[:12]}-subscriber_list_count.txt",
    ]
    assert run.archive == str(state / "archive" / archived(ws)[0])
    assert (state / "archive" / archived(ws)[0]).read_bytes() == content
    assert home_files(ws) == ["subscriber_list.result.txt"]


def test_result_report_tells_the_customer_what_happened_in_plain_words(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme")
    ws.upload(people(3))
    ws.sync()
    ws.upload([*people(2), ("p5@example.org", "Five", "", "")])

    run = only(ws.sync_all())

    text = (ws.home / "subscriber_list.result.txt").read_text()
    assert text.splitlines()[:8] == [
        "listferry result for subscriber_list.csv",
        f"Tenant: acme   Run: 2   Finished: {run.finished_at}",
        "Outcome: applied",
        "The list was updated.",
        "",
        "Records received: 3",
        "  added 1, updated 0, removed 1, unsubscribed 0, unchanged 2, ignored 0",
        "  invalid 0, duplicates 0",
    ]
    assert f"File SHA-256: {run.sha256}" in text
    with ws.store() as store:
        assert store.run("acme", 2).report == text


# -- voided and failed runs change nothing -------------------------------------------


@pytest.mark.parametrize(
    ("upload", "reason"),
    [
        ({"data": people(5), "count": 6}, "record count mismatch"),
        ({"data": [("Ada",)], "header": ("first_name",)}, "missing column: email"),
        ({"data": [*people(5), ("bad", "", "", "")]}, "too many invalid records"),
        ({"data": people(1)}, "shrink guard"),
        ({"data": b"email\r\n"}, "no records"),
        ({"data": b'email,name\r\n"p9@example.org,Ada\r\np8@example.org,B\r\n'}, "never closed"),
    ],
    ids=["count", "column", "error-rate", "shrink", "header-only", "broken-quote"],
)
def test_voided_run_changes_nothing_in_the_store(ws: Sandbox, upload: dict, reason: str) -> None:
    ws.add_tenant("acme")
    ws.upload(people(4, segment="SILVER"))
    ws.sync()
    with ws.store() as store:
        store.add_events([("p3@example.org", "unsubscribe", "2026-01-02T03:04:05Z", "")])
    before = {name: table(ws, name) for name in ("subscribers", "optouts", "events")}

    ws.upload(**upload)
    run = only(ws.sync_all())

    assert run.status == "voided"
    assert reason in run.reason
    assert {name: table(ws, name) for name in before} == before
    assert f"Outcome: voided: {run.reason}" in (ws.home / "subscriber_list.result.txt").read_text()


def test_failed_run_rolls_back_everything_and_leaves_the_file_in_the_home(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme")
    ws.upload(people(4))
    ws.sync()
    database = ws.tenant.database
    conn = sqlite3.connect(database)
    conn.execute(
        "CREATE TRIGGER disk_full BEFORE UPDATE OF status ON subscribers "
        "WHEN NEW.status = 'removed' BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )
    conn.commit()
    before = table(ws)
    # Adds p10 and updates p0 first; removing p3 then fails inside the same transaction.
    content = ws.upload(
        [("p0@example.org", "Renamed", "", ""), *people(2, start=1), *people(1, start=10)]
    ).read_bytes()

    run = only(ws.sync_all())

    assert run.status == "failed"
    assert run.reason == f"{database}: the tenant database failed: disk I/O error"
    assert table(ws) == before
    assert (ws.home / "subscriber_list.csv").read_bytes() == content
    assert [name[:7] for name in archived(ws)] == ["000001-"]  # the first run's file only
    assert "The file stays in place" in (ws.home / "subscriber_list.result.txt").read_text()
    conn.execute("DROP TRIGGER disk_full")
    conn.commit()
    conn.close()
    retried = only(ws.sync_all())
    assert (retried.status, retried.added, retried.updated, retried.removed) == (
        "applied",
        1,
        1,
        1,
    )


def test_pattern_ignores_case_so_a_shouting_file_name_is_taken(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(people(2), name="SUBSCRIBERS.CSV", count=2)
    [run] = ws.sync_all()
    assert (run.status, run.file, run.added) == ("applied", "SUBSCRIBERS.CSV", 2)
