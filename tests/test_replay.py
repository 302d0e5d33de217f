"""`listferry replay TENANT RUN`: an archived file applied again, as a new run."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import people

from listferry.testing import Sandbox


def test_replaying_an_earlier_full_list_restores_it_as_a_new_run(ws: Sandbox) -> None:
    ws.add_tenant("acme", strategy="full", max_shrink_share=1.0, count_file="required")
    ws.upload(people(10), count=10)
    (first,) = ws.sync_all()
    ws.upload(people(4), count=4)
    ws.sync()
    assert len(ws.subscribers("active")) == 4

    result = ws.cli("replay", "acme", str(first.run_id), "--json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert (run["status"], run["run_id"], run["added"]) == ("applied", 3, 6)
    assert run["sha256"] == first.sha256 and run["file"] == "subscriber_list.csv"
    assert len(ws.subscribers("active")) == 10
    shown = ws.cli("runs", "acme", "3")
    assert "a replay of run 1's archived file" in shown.output
    assert not (ws.tenant.state_dir / "replay").exists()


def test_a_voided_file_replayed_after_the_setting_is_fixed_applies(ws: Sandbox) -> None:
    ws.add_tenant("acme", max_invalid_share=0.01)
    rows = [*people(20), ("not-an-address", "X", "Y", "GOLD")]
    ws.upload(rows)
    (voided,) = ws.sync_all()
    assert voided.status == "voided"
    text = ws.config_path.read_text().replace("max_invalid_share = 0.01", "max_invalid_share = 0.1")
    ws.config_path.write_text(text)
    result = ws.cli("replay", "acme", str(voided.run_id))
    assert result.exit_code == 0, result.output
    assert "applied" in result.output and f"(replay of run {voided.run_id})" in result.output
    assert len(ws.subscribers("active")) == 20


def test_a_run_without_an_archived_file_cannot_be_replayed(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(people(2))
    ws.sync()
    missing = ws.cli("replay", "acme", "7")
    assert missing.exit_code == 1 and "acme has no run 7" in missing.stderr
    archive = ws.tenant.state_dir / "archive"
    for path in archive.iterdir():
        path.unlink()
    gone = ws.cli("replay", "acme", "1")
    assert gone.exit_code == 1 and "no archived file to replay" in gone.stderr


def test_runs_says_which_run_a_replay_replayed(ws: Sandbox) -> None:
    ws.add_tenant("acme", strategy="full", max_shrink_share=1.0)
    ws.upload(people(3))
    (first,) = ws.sync_all()
    ws.upload(people(2))
    ws.sync()
    assert ws.cli("replay", "acme", str(first.run_id)).exit_code == 0

    text = ws.cli("runs", "acme").output.splitlines()
    listed = json.loads(ws.cli("runs", "acme", "--json").stdout)

    assert text[0].endswith(
        f"acme: applied subscriber_list.csv (run 3) (replay of run {first.run_id}): 3 received, "
        "1 added, 0 updated, 0 removed, 0 unsubscribed, 2 unchanged, 0 invalid"
    )
    assert "replay of run" not in text[1] + text[2]
    assert [run["replay_of"] for run in listed] == [first.run_id, None, None]


def test_a_replay_the_shrink_guard_holds_says_the_file_is_in_the_archive(
    ws: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """A replay that a guard holds back did not put anything into the home: the log said
    "held in the home" all the same."""
    ws.add_tenant("acme", strategy="full", max_shrink_share=0.5)
    ws.upload(people(4))
    (small,) = ws.sync_all()
    ws.upload(people(10))
    ws.sync()
    with caplog.at_level(logging.WARNING, logger="listferry"):
        result = ws.cli("replay", "acme", str(small.run_id))
    assert result.exit_code == 1, result.output
    held = [m for m in caplog.messages if "held" in m]
    assert held and all("held in the archive" in m for m in held), held
    assert not (ws.home / "subscriber_list.csv").exists()
