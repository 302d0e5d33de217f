"""Retention: a tenant's archive is trimmed after each sync by ``archive_keep_runs`` and
``archive_keep_days``; its run records stay (issue #14, finding 6: "the archive is
never trimmed")."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime, timedelta

import pytest
from conftest import people

from listferry.testing import Sandbox
from listferry.times import iso


def archived(ws: Sandbox) -> list[str]:
    return sorted(p.name for p in (ws.tenant.state_dir / "archive").iterdir())


def ended_long_ago(ws: Sandbox, *run_ids: int) -> None:
    """Make runs have ended 11 days ago, in the store, as if they had; and their
    files as old (a customer's file may bring any time: the store's is the one counted)."""
    long_ago = datetime.now(UTC) - timedelta(days=11)
    with ws.store() as store, store.transaction():
        for run_id in run_ids:
            store.conn.execute(
                "UPDATE runs SET started_at = ?, finished_at = ? WHERE id = ?",
                (iso(long_ago), iso(long_ago), run_id),
            )


def test_archive_keep_runs_keeps_the_newest_files_and_every_run_record(
    ws: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 6: 30 small uploads with archive_keep_runs = 5 leave 5 archived files and 5
    reports; `runs` still lists 30 runs, the trimming is logged, and `replay` of a
    trimmed run refuses in one line."""
    caplog.set_level(logging.INFO, logger="listferry")
    ws.add_tenant(count_file="optional", archive_keep_runs=5)
    for night in range(30):
        ws.upload(people(3, start=night), name=f"list-{night:02d}.csv")
        assert ws.sync().status == "applied"
    assert [n[:6] for n in archived(ws)] == ["000026", "000027", "000028", "000029", "000030"]
    assert len(list(ws.home.glob("*.result.txt"))) == 5
    runs = json.loads(ws.cli("runs", "acme", "--json", "--limit", "100").output)
    assert [r["run_id"] for r in runs] == list(range(30, 0, -1))
    assert "list-00.csv" in ws.cli("runs", "acme", "1").output  # its report, still stored
    trims = [r.getMessage() for r in caplog.records if "archive trimmed" in r.getMessage()]
    assert trims and "acme: archive trimmed: 1 file(s) of 1 run(s) (runs 25)" in trims[-1]

    replayed = ws.cli("replay", "acme", "3")
    assert replayed.exit_code == 1
    assert replayed.output.count("\n") == 1, replayed.output
    assert "run 3 of acme has no archived file to replay" in replayed.output
    assert "trimmed" in replayed.output and "Traceback" not in replayed.output
    assert ws.cli("replay", "acme", "30").exit_code == 0  # a kept one replays, as run 31
    assert [n[:6] for n in archived(ws)] == ["000027", "000028", "000029", "000030", "000031"]


def test_archive_keep_days_trims_older_files_but_never_the_last_applied_one(
    ws: Sandbox,
) -> None:
    """Finding 6: with archive_keep_days = 10 (and no limit by count) the files of runs
    that ended more than 10 days ago go at the next sync, whatever time the files carry;
    the last applied run's file stays however old it is."""
    ws.add_tenant(count_file="optional", archive_keep_days=10, archive_keep_runs=0)
    for night in range(3):
        ws.upload(people(3, start=night), name=f"list-{night}.csv")
        assert ws.sync().status == "applied"
    ended_long_ago(ws, 1, 2)
    assert len(archived(ws)) == 3
    assert ws.sync().status == "idle"
    assert [n[:6] for n in archived(ws)] == ["000003"]

    fresh = ws.upload(people(4, start=2), name="list-7.csv", count=4)  # with its count file
    os.utime(fresh, (0, 0))  # a time from the CRM's side: 1970, and not what counts
    assert ws.sync().status == "applied"
    assert [n[:6] for n in archived(ws)] == ["000003", "000004", "000004"]
    ended_long_ago(ws, 3, 4)
    assert ws.sync().status == "idle"
    assert [n[:6] for n in archived(ws)] == ["000004", "000004"]  # the last applied run's
    runs = json.loads(ws.cli("runs", "acme", "--json").output)
    assert [r["run_id"] for r in runs] == [4, 3, 2, 1]  # idle runs are not recorded
