"""The repeat rule: only a file identical to the tenant's last applied file is skipped.

Any other file is a change, even one applied long ago: the list it describes is the
CRM's list now. These tests fail on a rule that skips any content applied before.
"""

from __future__ import annotations

import json

import pytest
from conftest import csv_text, people

from listferry.testing import Sandbox

A = people(3)  # a, b, c
B = people(2)  # a, b: c left the CRM's list


def statuses(ws: Sandbox, tenant: str = "acme") -> dict[str, str]:
    return {row["email"]: row["status"] for row in ws.subscribers(tenant=tenant).values()}


def sync_cli(ws: Sandbox, tenant: str = "acme") -> dict:
    result = ws.cli("sync", tenant, "--json")
    (run,) = json.loads(result.stdout)
    assert result.exit_code == (1 if run["status"] in ("voided", "failed") else 0)
    return run


def test_a_full_list_sent_again_after_a_different_one_is_applied(ws: Sandbox) -> None:
    ws.add_tenant("acme", strategy="full", max_shrink_share=1.0)
    ws.upload(A)
    assert sync_cli(ws)["status"] == "applied"
    ws.upload(B)
    assert sync_cli(ws)["removed"] == 1
    assert statuses(ws)["p2@example.org"] == "removed"

    ws.upload(A)
    run = sync_cli(ws)

    assert (run["status"], run["added"], run["unchanged"]) == ("applied", 1, 2)
    assert statuses(ws)["p2@example.org"] == "active"


def test_a_list_sent_again_does_not_resubscribe_who_opted_out_on_the_platform(
    ws: Sandbox, tmp_path
) -> None:
    ws.add_tenant("acme", strategy="full", max_shrink_share=1.0)
    ws.upload(A)
    sync_cli(ws)
    ws.upload(B)
    sync_cli(ws)
    events = tmp_path / "events.csv"
    events.write_text("email,type,at\np2@example.org,unsubscribe,2026-12-01T10:00:00Z\n")
    assert ws.cli("events", "load", "acme", str(events)).exit_code == 0

    ws.upload(A)
    assert sync_cli(ws)["status"] == "applied"

    assert statuses(ws)["p2@example.org"] == "unsubscribed"


def test_an_incremental_file_sent_again_after_another_has_its_rows_applied_again(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme", strategy="incremental")
    first = csv_text([("a@example.org", "Ada", "", "GOLD")])
    ws.upload(first, name="monday.csv")
    sync_cli(ws)
    ws.upload([("a@example.org", "Ada", "", "SILVER")], name="tuesday.csv")
    sync_cli(ws)

    ws.upload(first, name="wednesday.csv")
    run = sync_cli(ws)

    assert (run["status"], run["updated"]) == ("applied", 1)
    assert ws.subscribers("active")["a@example.org"]["segment_code"] == "GOLD"


@pytest.mark.parametrize("strategy", ["full", "incremental", "add-only", "update-only"])
def test_the_last_applied_file_sent_twice_is_skipped_whatever_the_strategy(
    ws: Sandbox, strategy: str
) -> None:
    ws.add_tenant("acme", strategy=strategy)
    ws.upload(A)
    first = sync_cli(ws)
    ws.upload(A, name="again.csv")

    again = sync_cli(ws)

    assert again["status"] == "skipped", again
    assert again["reason"] == f"the same content as the last applied file (run {first['run_id']})"


def test_after_a_replay_of_an_older_list_the_crms_current_list_is_applied(ws: Sandbox) -> None:
    ws.add_tenant("acme", strategy="full", max_shrink_share=1.0)
    ws.upload(A)
    old = sync_cli(ws)
    ws.upload(B)
    sync_cli(ws)
    assert ws.cli("replay", "acme", str(old["run_id"])).exit_code == 0
    assert statuses(ws)["p2@example.org"] == "active"  # the replayed list brought c back

    ws.upload(B)  # the CRM still says: a and b
    run = sync_cli(ws)

    assert (run["status"], run["removed"]) == ("applied", 1)
    assert statuses(ws)["p2@example.org"] == "removed"


def test_a_replayed_file_sent_again_is_a_repeat_of_the_last_applied(ws: Sandbox) -> None:
    ws.add_tenant("acme", strategy="full", max_shrink_share=1.0)
    ws.upload(A)
    old = sync_cli(ws)
    ws.upload(B)
    sync_cli(ws)
    replayed = json.loads(ws.cli("replay", "acme", str(old["run_id"]), "--json").stdout)

    ws.upload(A)
    run = sync_cli(ws)

    assert run["status"] == "skipped"
    assert run["reason"] == (
        f"the same content as the last applied file (run {replayed['run_id']})"
    )


# -- a repeat is the same content read the same way ------------------------------------------

#: A CRM's list without a pack: its consent column is "Do Not Email".
CONSENT = "Email,First Name,Do Not Email\r\nada@example.org,Ada,no\r\nbob@example.org,Bob,yes\r\n"


@pytest.mark.parametrize(
    ("change", "unsubscribed"),
    [
        ('opt_out_columns=["Do Not Email"]', 1),
        ('opt_out_values=["no"]', 0),
        ("strategy=incremental", 0),
    ],
)
def test_the_same_list_after_a_settings_change_is_applied_with_the_new_settings(
    ws: Sandbox, change: str, unsubscribed: int
) -> None:
    ws.add_tenant("acme", opt_out_columns=[] if "values" not in change else ["Do Not Email"])
    ws.upload(CONSENT)
    first = sync_cli(ws)
    assert first["status"] == "applied"
    assert ws.cli("tenant", "set", "acme", change).exit_code == 0

    ws.upload(CONSENT)
    again = sync_cli(ws)
    ws.upload(CONSENT)
    third = sync_cli(ws)

    assert again["status"] == "applied", again
    assert third["status"] == "skipped"
    assert third["reason"] == f"the same content as the last applied file (run {again['run_id']})"
    if change.startswith("opt_out_columns"):
        assert (again["unsubscribed"], statuses(ws)["bob@example.org"]) == (1, "unsubscribed")
    if change.startswith("opt_out_values"):  # "no" now opts out, "yes" no longer does
        assert statuses(ws)["ada@example.org"] == "unsubscribed"


def test_a_store_from_before_settings_were_kept_still_skips_a_repeat(ws: Sandbox, tmp_path) -> None:
    import hashlib
    import sqlite3

    import sqlite_utils

    from listferry.store.database import MIGRATIONS

    ws.add_tenant("acme")
    database = ws.tenant.database
    database.parent.mkdir(parents=True, exist_ok=True)
    data = csv_text(A).encode()
    conn = sqlite3.connect(database, isolation_level=None)
    for migration in MIGRATIONS[:3]:
        migration(sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 3")
    conn.execute(
        "INSERT INTO runs (status, file, started_at, sha256) VALUES "
        "('applied', 'subscriber_list.csv', '2026-01-02T03:04:05Z', ?)",
        (hashlib.sha256(data).hexdigest(),),
    )
    conn.close()
    path = tmp_path / "list.csv"
    path.write_bytes(data)

    checked = ws.cli("check", str(path), "--tenant", "acme", "--json")
    ws.upload(data)
    run = sync_cli(ws)

    assert (run["status"], run["reason"]) == (
        "skipped",
        "the same content as the last applied file (run 1)",
    )
    assert (json.loads(checked.stdout)["status"], checked.exit_code) == ("skip", 0)


def test_check_of_a_repeat_says_skip_as_the_sync_does_without_reading_it(
    ws: Sandbox, tmp_path
) -> None:
    ws.add_tenant("acme", count_file="optional")
    ws.upload(A, count=3)
    applied = sync_cli(ws)
    path = tmp_path / "subscriber_list.csv"
    path.write_text(csv_text(A))
    (tmp_path / "subscriber_list_count.txt").write_text("many\n")  # would void, if read

    checked = ws.cli("check", str(path), "--tenant", "acme", "--json")
    text = ws.cli("check", str(path), "--tenant", "acme")
    ws.upload(A, count="many")
    run = sync_cli(ws)

    verdict = json.loads(checked.stdout)
    reason = f"the same content as the last applied file (run {applied['run_id']})"
    assert (run["status"], run["reason"]) == ("skipped", reason)
    assert (verdict["status"], verdict["reason"], checked.exit_code) == ("skip", reason, 0)
    assert verdict["records"] == 0 and verdict["plan"] is None
    assert text.exit_code == 0
    assert text.output.startswith(f"{path}: skip: {reason} (as tenant acme's sync)\n")
    assert "  not read: the sync skips a repeat without reading it\n" in text.output


def test_check_after_a_settings_change_reads_the_file_as_the_sync_will(
    ws: Sandbox, tmp_path
) -> None:
    ws.add_tenant("acme")
    ws.upload(CONSENT)
    sync_cli(ws)
    path = tmp_path / "list.csv"
    path.write_text(CONSENT)
    assert (
        json.loads(ws.cli("check", str(path), "--tenant", "acme", "--json").stdout)["status"]
        == "skip"
    )
    ws.cli("tenant", "set", "acme", 'opt_out_columns=["Do Not Email"]')

    verdict = json.loads(ws.cli("check", str(path), "--tenant", "acme", "--json").stdout)

    assert verdict["status"] == "ok"
    assert verdict["plan"]["unsubscribed"] == 1


def test_the_settings_digest_is_the_same_in_every_process(ws: Sandbox) -> None:
    import os
    import subprocess
    import sys

    ws.add_tenant("acme", opt_out_columns=["Do Not Email", "Unsubscribed"])
    script = (
        "import sys; from listferry.app import open_app, settings_digest; "
        "app = open_app(__import__('pathlib').Path(sys.argv[1])); "
        "print(settings_digest(app.host, app.config.tenant('acme')))"
    )
    command = [sys.executable, "-c", script, str(ws.config_path)]
    seeds = [{**os.environ, "PYTHONHASHSEED": seed} for seed in ("1", "2", "3")]
    runs = [subprocess.run(command, capture_output=True, text=True, env=env) for env in seeds]

    assert [run.returncode for run in runs] == [0, 0, 0], runs[0].stderr
    assert len({run.stdout for run in runs}) == 1 and len(runs[0].stdout.strip()) == 64
