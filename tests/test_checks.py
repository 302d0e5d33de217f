"""The checks a list file must pass: count file, records, columns, error rate, shrink guard.

A file that fails one is voided: nothing changes in the store and the last good list
stands. Every test starts from a good list so that it can see the list stand.
"""

from __future__ import annotations

import json

import pytest
from conftest import csv_text, people

from listferry.runs import RunRecord
from listferry.testing import Sandbox

GOOD = people(3)  # the last good list of every tenant here


def only(runs: list[RunRecord]) -> RunRecord:
    assert len(runs) == 1, runs
    return runs[0]


def with_good_list(ws: Sandbox, **settings: object) -> dict[str, dict]:
    """Add tenant acme with ``settings`` and apply :data:`GOOD`; return its list."""
    ws.add_tenant("acme", **settings)
    ws.upload(GOOD, count=len(GOOD))
    assert only(ws.sync_all()).status == "applied"
    return ws.subscribers()


def report(ws: Sandbox, stem: str = "subscriber_list") -> str:
    return (ws.home / f"{stem}.result.txt").read_text()


# -- the count file ------------------------------------------------------------------


def test_count_file_that_matches_the_records_applies(ws: Sandbox) -> None:
    with_good_list(ws, count_file="required")
    ws.upload(people(4), count=4)

    run = only(ws.sync_all())

    assert (run.status, run.received, run.added) == ("applied", 4, 1)


def test_count_file_saying_fewer_records_than_the_file_has_voids(ws: Sandbox) -> None:
    before = with_good_list(ws)
    ws.upload(people(4), count=3)

    run = only(ws.sync_all())

    assert run.status == "voided"
    assert run.reason == "record count mismatch: count file says 3, file has 4 records"
    assert ws.subscribers() == before


def test_count_mismatch_voids_and_keeps_last_list(ws: Sandbox) -> None:
    before = with_good_list(ws)
    ws.upload(people(998), count=1000)

    run = only(ws.sync_all())

    assert run.status == "voided"
    assert run.reason == "record count mismatch: count file says 1000, file has 998 records"
    assert ws.subscribers() == before
    assert "count file says 1000, file has 998 records" in report(ws)


@pytest.mark.parametrize("text", ["three", "3 3", "3\n4", "", "-3", "3.0", "1,000", "٣"])
def test_count_file_that_is_not_one_whole_number_voids(ws: Sandbox, text: str) -> None:
    before = with_good_list(ws)
    ws.upload(people(3, start=10))
    (ws.home / "subscriber_list_count.txt").write_text(text)

    run = only(ws.sync_all())

    assert run.status == "voided"
    assert run.reason.startswith("count file subscriber_list_count.txt must hold one whole number")
    assert ws.subscribers() == before


def test_count_file_with_byte_order_mark_and_spaces_is_read(ws: Sandbox) -> None:
    with_good_list(ws)
    ws.upload(people(3, segment="SILVER"))
    (ws.home / "subscriber_list_count.txt").write_bytes(b"\xef\xbb\xbf 3 \r\n")

    run = only(ws.sync_all())

    assert (run.status, run.updated) == ("applied", 3), run.reason


def test_required_count_file_that_is_missing_voids_when_the_tenant_does_not_wait(
    ws: Sandbox,
) -> None:
    before = with_good_list(ws, count_file="required", count_file_wait="")
    ws.upload(people(4))

    run = only(ws.sync_all())

    assert run.status == "voided"
    assert run.reason == (
        "count file subscriber_list_count.txt is missing, and this tenant requires one"
    )
    assert ws.subscribers() == before


def test_optional_count_file_may_be_missing(ws: Sandbox) -> None:
    with_good_list(ws, count_file="optional")
    ws.upload(people(4))

    assert only(ws.sync_all()).status == "applied"


def test_count_policy_off_ignores_a_wrong_count_file(ws: Sandbox) -> None:
    with_good_list(ws, count_file="off")
    ws.upload(people(4), count=99)

    run = only(ws.sync_all())

    assert (run.status, run.received) == ("applied", 4)


def test_count_file_counts_records_not_lines(ws: Sandbox) -> None:
    with_good_list(ws, count_file="required")
    rows = [*people(2), ("multi@example.org", "Two\nLines", "Last", "GOLD")]
    text = csv_text(rows)
    assert text.count("\r\n") == 4  # header + 3 records, one holding a line break
    ws.upload(text, count=3)

    run = only(ws.sync_all())

    assert (run.status, run.received) == ("applied", 3), run.reason
    assert ws.subscribers("active")["multi@example.org"]["first_name"] == "Two\nLines"


def test_count_file_that_counts_lines_instead_of_records_voids(ws: Sandbox) -> None:
    with_good_list(ws)
    ws.upload([("multi@example.org", "Two\nLines", "Last", "GOLD")], count=2)

    run = only(ws.sync_all())

    assert run.status == "voided"
    assert run.reason == "record count mismatch: count file says 2, file has 1 records"


# -- records -------------------------------------------------------------------------


def test_invalid_email_rows_are_skipped_counted_and_listed_by_line(ws: Sandbox) -> None:
    with_good_list(ws, strategy="incremental")
    rows = [
        ("multi@example.org", "Two\nLines", "L", ""),  # lines 2-3
        ("not-an-address", "Bad", "One", ""),  # line 4
        *people(80, start=10),  # lines 5-84
        ("", "No", "Address", ""),  # line 85
        ("dot..dot@example.org", "Bad", "Two", ""),  # line 86
    ]
    ws.upload(rows, count=len(rows))

    run = only(ws.sync_all())

    assert (run.status, run.received, run.invalid, run.added) == ("applied", 84, 3, 81)
    assert "not-an-address" not in ws.subscribers()
    text = report(ws)
    assert "Invalid records (skipped):\n" in text
    assert "  line 4: 'not-an-address' is not a valid e-mail address\n" in text
    assert "  line 85: empty e-mail address\n" in text
    assert "  line 86: 'dot..dot@example.org' is not a valid e-mail address\n" in text
    assert "invalid 3, duplicates 0" in text


def test_duplicate_emails_last_row_wins_and_are_reported(ws: Sandbox) -> None:
    with_good_list(ws, strategy="incremental")
    rows = [
        ("dup@example.org", "First", "Row", "A"),  # line 2
        ("other@example.org", "O", "O", "B"),  # line 3
        ("DUP@example.org", "Second", "Row", "B"),  # line 4
        ("dup@example.org ", "Last", "Row", "C"),  # line 5
    ]
    ws.upload(rows, count=4)

    run = only(ws.sync_all())

    assert (run.status, run.received, run.duplicates, run.added) == ("applied", 4, 2, 2)
    dup = ws.subscribers("active")["dup@example.org"]
    assert (dup["first_name"], dup["segment_code"]) == ("Last", "C")
    assert "  dup@example.org: lines 2, 4, 5\n" in report(ws)


def test_missing_email_column_voids_and_names_the_header(ws: Sandbox) -> None:
    before = with_good_list(ws)
    ws.upload([("Ada", "L")], header=("first_name", "last_name"))

    run = only(ws.sync_all())

    assert run.status == "voided"
    assert run.reason.startswith("missing column: email (headers: email, e-mail")
    assert "the file's header is 'first_name', 'last_name'" in run.reason
    assert ws.subscribers() == before


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "subscriber_list.csv: the file is empty (no header line)"),
        (b"\r\n\r\n", "subscriber_list.csv: the file is empty (no header line)"),
        (b"email,first_name\r\n", "no records: the file has a header line only"),
        (b"email,first_name\r\n,\r\n\r\n", "no records: the file has a header line only"),
    ],
    ids=["empty", "blank-lines", "header-only", "header-and-blank-rows"],
)
def test_empty_or_header_only_file_voids(ws: Sandbox, content: bytes, reason: str) -> None:
    before = with_good_list(ws)
    ws.upload(content)

    run = only(ws.sync_all())

    assert (run.status, run.reason) == ("voided", reason)
    assert ws.subscribers() == before


# -- error rate ----------------------------------------------------------------------


def test_invalid_share_at_the_limit_applies(ws: Sandbox) -> None:
    with_good_list(ws, strategy="incremental")
    ws.upload([*people(19, start=10), ("bad", "", "", "")])  # 1 of 20: 5%

    run = only(ws.sync_all())

    assert (run.status, run.invalid, run.added) == ("applied", 1, 19)


def test_invalid_share_over_the_limit_voids_and_keeps_last_list(ws: Sandbox) -> None:
    before = with_good_list(ws, strategy="incremental")
    ws.upload([*people(18, start=10), ("bad", "", "", ""), ("worse", "", "", "")])  # 10%

    run = only(ws.sync_all())

    assert run.status == "voided"
    assert run.reason == "too many invalid records: 2 of 20 (10.0%), the limit is 5%"
    assert ws.subscribers() == before


def test_invalid_share_limit_follows_the_tenant_setting(ws: Sandbox) -> None:
    with_good_list(ws, strategy="incremental", max_invalid_share=0.1)
    ws.upload([*people(18, start=10), ("bad", "", "", ""), ("worse", "", "", "")])

    assert only(ws.sync_all()).status == "applied"


def test_force_does_not_lift_the_invalid_share_limit(ws: Sandbox) -> None:
    with_good_list(ws, strategy="incremental")
    ws.upload([*people(1, start=10), ("bad", "", "", "")])

    run = only(ws.sync_all(force=True))

    assert run.status == "voided"
    assert run.reason.startswith("too many invalid records: 1 of 2")


# -- shrink guard --------------------------------------------------------------------


def test_full_list_removing_exactly_half_applies(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(people(10))
    ws.sync()
    ws.upload(people(5))

    run = only(ws.sync_all())

    assert (run.status, run.removed) == ("applied", 5)


def test_shrink_guard_voids_a_full_list_that_removes_more_than_half(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(people(10))
    ws.sync()
    before = ws.subscribers()
    ws.upload(people(4))

    run = only(ws.sync_all())

    assert run.status == "voided"
    assert run.reason == (
        "shrink guard: the file would remove 6 of 10 active subscribers (60.0%), more than "
        "the limit of 50%"
    )
    assert run.hint == "to apply it anyway: listferry sync acme --force"
    assert (run.received, run.removed, run.unchanged) == (4, 0, 0)  # nothing was removed
    assert ws.subscribers() == before
    assert "  added 0, updated 0, removed 0," in report(ws)


def test_the_customers_report_never_tells_the_customer_to_run_an_operator_command(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme")
    ws.upload(people(10))
    ws.sync()
    ws.upload(people(4))

    result = ws.cli("sync", "acme")

    assert result.exit_code == 1
    assert "(to apply it anyway: listferry sync acme --force)" in result.output
    assert "listferry" not in report(ws).split("\n", 1)[1]  # the title line aside
    assert "ask your operator to apply it; if not, send a corrected file" in report(ws)
    shown = json.loads(ws.cli("runs", "acme", "--json").stdout)[0]
    assert shown["hint"] == "to apply it anyway: listferry sync acme --force"


def test_sync_force_applies_the_file_the_shrink_guard_held_back_once(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(people(10))
    ws.sync()
    ws.upload(people(4))
    assert only(ws.sync_all()).status == "voided"
    assert (ws.home / "subscriber_list.csv").exists()  # kept for the operator's --force
    assert "The file stays in place until a newer file replaces it" in report(ws)
    assert "upload it again" not in report(ws)

    forced = ws.cli("sync", "acme", "--force", "--json")

    assert forced.exit_code == 0, forced.output
    [run] = json.loads(forced.output)
    assert (run["status"], run["removed"]) == ("applied", 6)
    assert len(ws.subscribers("active")) == 4
    ws.upload(people(1))  # the next shrinking list meets the guard again
    assert only(ws.sync_all()).status == "voided"


def test_shrink_guard_limit_follows_the_tenant_setting(ws: Sandbox) -> None:
    ws.add_tenant("acme", max_shrink_share=0.7)
    ws.upload(people(10))
    ws.sync()
    ws.upload(people(4))

    assert only(ws.sync_all()).status == "applied"
    ws.upload(people(1))  # 3 of 4: 75%
    assert only(ws.sync_all()).status == "voided"
