"""The Dynamics 365 pack: a contact view export in, an Import Data wizard CSV out."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from listferry.testing import Sandbox

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
EXPORT = SAMPLES / "contacts_export.csv"
EXPORT_2 = SAMPLES / "contacts_export_2.csv"
EXPECTED = SAMPLES / "expected_return.csv"
EVENTS = SAMPLES / "events.csv"
US_DATE = re.compile(r"\d{2}/\d{2}/\d{4}")


def sandbox(tmp_path: Path) -> Sandbox:
    # The sample holds one bad address in five records: above the default 5% limit.
    return Sandbox(
        tmp_path,
        plugins=["listferry_dynamics365"],
        dialect="dynamics365",
        export_template="dynamics365-import",
        max_invalid_share=0.25,
    )


def sample_events() -> list[dict[str, str]]:
    with EVENTS.open(encoding="utf-8", newline="") as f:
        return [{key: value for key, value in row.items() if value} for row in csv.DictReader(f)]


def read_return(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline="")))


def synced(tmp_path: Path) -> Sandbox:
    box = sandbox(tmp_path)
    box.upload(EXPORT)
    run = box.sync()
    assert run.status == "applied", run.reason
    box.record_events(sample_events())
    return box


def test_check_maps_each_header(tmp_path):
    result = sandbox(tmp_path).check(EXPORT)
    assert result.status == "ok", result.reason
    assert result.encoding == "utf-8" and result.delimiter == ","
    assert result.columns == {
        "(Do Not Modify) Contact": None,
        "(Do Not Modify) Row Checksum": None,
        "(Do Not Modify) Modified On": None,
        "Full Name": None,
        "First Name": "first_name",
        "Last Name": "last_name",
        "Email": "email",
        "Company Name": None,
        "Business Phone": None,
        "Do not allow Bulk Emails": "opt_out",
        "Description": None,
    }
    assert (result.records, result.invalid) == (5, 1)
    assert [line.line for line in result.invalid_sample] == [6]  # the quoted newline is line 3-4


def test_sample_syncs_with_the_opt_out_and_the_invalid_address(tmp_path):
    box = sandbox(tmp_path)
    box.upload(EXPORT)
    run = box.sync()
    assert run.status == "applied", run.reason
    assert (run.received, run.added, run.unsubscribed, run.invalid) == (5, 3, 1, 1)
    people = box.subscribers()
    assert sorted(people) == [
        "ada@example.org",
        "grace@example.org",
        "katherine@example.com",
        "renee.dubois@example.fr",
    ]
    assert people["grace@example.org"]["status"] == "unsubscribed"
    assert people["ada@example.org"]["status"] == "active"
    assert people["renee.dubois@example.fr"]["first_name"] == "Renée"
    grace = people["grace@example.org"]["fields"]
    assert grace["(Do Not Modify) Contact"] == "a1b2c3d4-0000-4a5b-8c9d-00000000c002"
    assert grace["Description"] == "Prefers phone.\nNo newsletters, please."
    assert people["ada@example.org"]["fields"]["Company Name"] == "Analytical Engines, Ltd"


def test_return_file_matches_the_sample_column_by_column(tmp_path):
    box = synced(tmp_path)
    result, path = box.export()
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfContact,Email,First Name,Last Name,")
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert result.records == 4
    assert path.with_name(path.stem + "_count.txt").read_text() == "4\n"

    got = read_return(raw.decode("utf-8"))
    want = read_return(EXPECTED.read_text(encoding="utf-8"))
    assert list(got[0]) == list(want[0])
    assert [row["Email"] for row in got] == [row["Email"] for row in want]
    for got_row, want_row in zip(got, want, strict=True):
        for column, expected in want_row.items():
            if want_row["Email"] == "grace@example.org" and column == "Email Opt-Out Date":
                # Opted out in the list: the date of the run that applied it.
                assert US_DATE.fullmatch(got_row[column]), got_row[column]
            else:
                assert got_row[column] == expected, (want_row["Email"], column)


def test_return_file_uses_the_option_labels_and_the_date_order(tmp_path):
    box = synced(tmp_path)
    rows = {row["Email"]: row for row in read_return(box.export_text())}
    assert rows["grace@example.org"]["Do not allow Bulk Emails"] == "Do Not Allow"
    assert rows["ada@example.org"]["Do not allow Bulk Emails"] == "Allow"
    katherine = rows["katherine@example.com"]
    assert katherine["Do not allow Bulk Emails"] == "Do Not Allow"  # an unsubscribe event
    assert (katherine["Email Opt-Out Date"], katherine["Last Email Open"]) == (
        "11/29/2026",
        "11/26/2026",
    )
    assert rows["ada@example.org"]["Email Topics"] == "science, events"
    assert rows["ada@example.org"]["Contact"] == "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

    rows = {
        row["Email"]: row for row in read_return(box.export_text(template="dynamics365-import-dmy"))
    }
    katherine = rows["katherine@example.com"]
    assert (katherine["Email Opt-Out Date"], katherine["Last Email Open"]) == (
        "29/11/2026",
        "26/11/2026",
    )


def test_excel_ansi_csv_reads_the_same(tmp_path):
    # Excel's "CSV (Comma delimited)" writes the Windows code page, without a BOM.
    ansi = tmp_path / "contacts_ansi.csv"
    ansi.write_bytes(EXPORT.read_text(encoding="utf-8-sig").encode("cp1252"))
    box = sandbox(tmp_path / "box")
    result = box.check(ansi)
    assert (result.status, result.encoding, result.records) == ("ok", "cp1252", 5)
    box.upload(ansi)
    assert box.sync().status == "applied"
    assert box.subscribers()["renee.dubois@example.fr"]["fields"]["Full Name"] == "Renée Dubois"


def test_a_word_that_is_not_an_option_label_makes_the_row_invalid(tmp_path):
    box = sandbox(tmp_path)
    for word in ("Yes", "Opted Out", "1"):
        text = EXPORT.read_text(encoding="utf-8-sig").replace(",Do Not Allow,", f",{word},")
        result = box.check(box.upload(text, name=f"contacts_{len(word)}.csv"))
        assert result.invalid == 2, word
        assert any("opt-out value" in line.reason for line in result.invalid_sample)


def test_second_export_updates_names_opt_outs_and_the_fixed_address(tmp_path):
    box = synced(tmp_path)
    box.export()
    box.upload(EXPORT_2)
    run = box.sync()
    assert run.status == "applied", run.reason
    assert (run.received, run.invalid, run.added) == (5, 0, 1)
    people = box.subscribers()
    assert people["ada@example.org"]["status"] == "unsubscribed"
    assert people["renee.dubois@example.fr"]["last_name"] == "Dubois-Martin"
    assert people["alan.turing@example.org"]["status"] == "active"
    # Unsubscribed on the platform: a list saying "Allow" does not bring her back.
    assert people["katherine@example.com"]["status"] == "unsubscribed"

    rows = {row["Email"]: row for row in read_return(box.export_text())}
    assert rows["ada@example.org"]["Do not allow Bulk Emails"] == "Do Not Allow"
    assert US_DATE.fullmatch(rows["ada@example.org"]["Email Opt-Out Date"])
    assert rows["renee.dubois@example.fr"]["Last Name"] == "Dubois-Martin"
    alan = rows["alan.turing@example.org"]
    assert (alan["Contact"], alan["Email Open Count"], alan["Last Email Open"]) == (
        "a1b2c3d4-0000-4a5b-8c9d-00000000c004",
        "0",
        "",
    )
    assert rows["katherine@example.com"]["Do not allow Bulk Emails"] == "Do Not Allow"
