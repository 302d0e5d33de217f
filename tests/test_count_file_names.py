"""Count files and result reports are known by their names in any case, as list files are.

Windows clients and CRMs that shout write ``EXPORT.CSV`` and ``EXPORT_COUNT.TXT``: the
pattern ``*.csv`` takes the list, so its count file must be found too, or the count is
never checked (a truncated list applies), a required one is voided as missing, and the
count file stays in the home for ever.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import csv_text, people

from listferry.testing import Sandbox

LIST = csv_text(people(3))


def upload_shouting(ws: Sandbox, count: str) -> None:
    (ws.home / "EXPORT.CSV").write_text(LIST)
    (ws.home / "EXPORT_COUNT.TXT").write_text(count)


def sync(ws: Sandbox) -> dict:
    (run,) = json.loads(ws.cli("sync", "acme", "--json").stdout)
    return run


def test_an_upper_case_count_file_is_checked_when_it_is_optional(ws: Sandbox) -> None:
    ws.add_tenant("acme", count_file="optional")
    upload_shouting(ws, "5\n")  # two records lost on the way

    run = sync(ws)

    assert (run["status"], run["reason"]) == (
        "voided",
        "record count mismatch: count file says 5, file has 3 records",
    )
    assert ws.subscribers("active") == {}


def test_an_upper_case_count_file_is_taken_with_its_list_when_it_is_required(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme", count_file="required", count_file_wait="")
    upload_shouting(ws, "3\n")

    run = sync(ws)

    assert (run["status"], run["added"]) == ("applied", 3), run
    assert sorted(p.name for p in ws.home.iterdir()) == ["EXPORT.result.txt"]
    archived = sorted(p.name.split("-", 2)[2] for p in (ws.root / "state/acme/archive").iterdir())
    assert archived == ["EXPORT.CSV", "EXPORT_COUNT.TXT"]

    replayed = json.loads(ws.cli("replay", "acme", str(run["run_id"]), "--json").stdout)

    assert replayed["status"] == "applied", replayed  # its count file came along


def test_status_does_not_take_an_upper_case_count_file_for_a_stray_file(ws: Sandbox) -> None:
    ws.add_tenant("acme", count_file="required")
    upload_shouting(ws, "3\n")

    (shown,) = json.loads(ws.cli("status", "--json").stdout)

    assert (shown["pending"], shown["waiting"], shown["ignored"]) == (1, [], [])


def test_check_finds_the_count_file_beside_the_list_in_any_case(
    ws: Sandbox, tmp_path: Path
) -> None:
    (tmp_path / "EXPORT.CSV").write_text(LIST)
    (tmp_path / "Export_Count.txt").write_text("5\n")

    result = ws.cli("check", str(tmp_path / "EXPORT.CSV"), "--json")

    assert result.exit_code == 1
    assert json.loads(result.stdout)["reason"] == (
        "record count mismatch: count file says 5, file has 3 records"
    )


def test_an_upper_case_report_is_never_taken_for_a_list(ws: Sandbox) -> None:
    ws.add_tenant("acme", pattern="*")
    (ws.home / "OLD.RESULT.TXT").write_text("listferry result for OLD.CSV\n")
    ws.upload(people(2))

    run = sync(ws)

    assert (run["status"], run["file"]) == ("applied", "subscriber_list.csv")
    assert (ws.home / "OLD.RESULT.TXT").exists()


def test_push_takes_away_a_count_file_an_earlier_upload_left_in_any_case(
    ws: Sandbox, tmp_path: Path
) -> None:
    home = ws.add_tenant("acme")
    (home / "LIST_COUNT.TXT").write_text("99\n")
    listing = tmp_path / "list.csv"
    listing.write_text(LIST)

    result = ws.cli("push", str(listing), str(home))

    assert result.exit_code == 0, result.output
    assert "removed the count file LIST_COUNT.TXT an earlier upload left" in result.output
    assert sorted(p.name for p in home.iterdir()) == ["list.csv", "list_count.txt"]
