"""The HubSpot pack on its sample contacts export: read, sync, events, import file."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from listferry_hubspot import COLUMNS

from listferry.testing import Sandbox

SAMPLES = Path(__file__).parent.parent / "samples"
EXPORT = SAMPLES / "hubspot-crm-exports-newsletter-contacts-2026-11-30.csv"
EXPECTED = SAMPLES / "hubspot-import_expected.csv"
EVENTS = SAMPLES / "events.csv"

#: Grace opted out in the list itself: the date is that of the run that applied it.
RUN_DATED = {("grace.hopper@example.org", "Listferry opted out date")}


def sandbox(tmp_path: Path) -> Sandbox:
    # The sample holds one bad address in seven rows: let a quarter of a file be invalid.
    return Sandbox(
        tmp_path,
        plugins=["listferry_hubspot"],
        dialect="hubspot",
        export_template="hubspot-import",
        max_invalid_share=0.25,
    )


def read_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def next_export(words: dict[str, str], bom: bool) -> bytes:
    """The sample export as the next night's: Ada opted out, Alan gone, Zoë new.

    ``words`` turns each opt-out value into the word written; ``bom`` adds a byte-order mark.
    """
    with EXPORT.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    rows = [r for r in rows if r["Email"] != "alan@example.org"]
    for row in rows:
        if row["Email"] == "ada@example.org":
            row["Unsubscribed from all email"] = "true"
        row["Unsubscribed from all email"] = words[row["Unsubscribed from all email"]]
    rows.append(
        dict.fromkeys(header, "")
        | {
            "Record ID": "51234567808",
            "First Name": "Zoë",
            "Last Name": "Lefèvre",
            "Email": "zoe.lefevre@example.fr",
            "Marketing contact status": "Marketing contact",
            "Create Date": "2026-11-30 06:45",
        }
    )
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, header, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8")


def test_each_hubspot_header_maps_to_its_field(tmp_path: Path) -> None:
    result = sandbox(tmp_path).check(EXPORT)
    assert result.status == "ok", result.reason
    assert result.columns == {
        "Record ID": None,
        "First Name": "first_name",
        "Last Name": "last_name",
        "Email": "email",
        "Phone Number": None,
        "Contact owner": None,
        "Last Activity Date": None,
        "Lead Status": None,
        "Marketing contact status": None,
        "Create Date": None,
        "Message": None,
        "Unsubscribed from all email": "opt_out",
    }
    assert (result.encoding, result.delimiter) == ("utf-8", ",")
    assert (result.records, result.invalid) == (7, 1)
    assert [i.line for i in result.invalid_sample] == [7]
    assert "chidi.okafor@example" in result.invalid_sample[0].reason


def test_the_sample_syncs_and_comes_back_as_the_expected_import_file(tmp_path: Path) -> None:
    box = sandbox(tmp_path)
    box.upload(EXPORT)
    run = box.sync()
    assert run.status == "applied", run.reason
    assert (run.received, run.added, run.unsubscribed, run.invalid) == (7, 5, 1, 1)

    people = box.subscribers()
    assert "chidi.okafor@example" not in people
    assert people["grace.hopper@example.org"]["status"] == "unsubscribed"
    assert people["grace.hopper@example.org"]["last_name"] == "Hopper, RADM"
    assert people["jose.nunez@example.es"]["first_name"] == "José"
    assert people["jose.nunez@example.es"]["status"] == "active"
    alan = people["alan@example.org"]["fields"]
    assert alan["Record ID"] == "51234567804"
    assert alan["Message"] == "Met at the Manchester meetup.\nAsked for the quarterly report."

    loaded = box.cli("events", "load", "test", str(EVENTS))
    assert loaded.exit_code == 0, loaded.output

    result, path = box.export()
    data = path.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf")
    assert data.split(b"\r\n")[0].decode() == ",".join(COLUMNS)
    assert data.count(b"\r\n") == data.count(b"\n") == 7
    count_file = path.with_name(path.stem + "_count.txt")
    assert count_file.read_text(encoding="ascii").strip() == str(result.records) == "6"

    got = read_rows(data.decode("utf-8"))
    want = read_rows(EXPECTED.read_text(encoding="utf-8"))
    assert [r["Email"] for r in got] == [r["Email"] for r in want]
    run_dates = {run.started_at[:10], run.finished_at[:10]}
    for mine, theirs in zip(got, want, strict=True):
        for column in COLUMNS:
            if (theirs["Email"], column) in RUN_DATED:
                assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", mine[column])
                assert mine[column] in run_dates
            else:
                assert mine[column] == theirs[column], (theirs["Email"], column)


def test_a_changed_export_next_night_with_yes_no_words_and_a_bom(tmp_path: Path) -> None:
    box = sandbox(tmp_path)
    box.upload(EXPORT)
    assert box.sync().status == "applied"

    words = {"": "No", "false": "No", "true": "Yes"}
    box.upload(
        next_export(words, bom=True),
        name="hubspot-crm-exports-newsletter-contacts-2026-12-01.csv",
    )
    run = box.sync()
    assert run.status == "applied", run.reason
    assert (run.added, run.removed, run.unsubscribed, run.invalid) == (1, 1, 1, 1)

    people = box.subscribers()
    assert people["ada@example.org"]["status"] == "unsubscribed"
    assert people["zoe.lefevre@example.fr"]["first_name"] == "Zoë"

    rows = {r["Email"]: r for r in box.export_rows()}
    assert "alan@example.org" not in rows
    assert rows["ada@example.org"]["Listferry opted out"] == "true"
    assert rows["ada@example.org"]["Listferry opted out date"] == run.started_at[:10]
    assert rows["ada@example.org"]["Listferry open count"] == "0"
    assert rows["zoe.lefevre@example.fr"]["Record ID"] == "51234567808"
    assert rows["zoe.lefevre@example.fr"]["Listferry opted out"] == "false"
    assert rows["soren@example.dk"]["Listferry opted out"] == "false"


def test_a_word_hubspot_does_not_write_in_the_opt_out_column_makes_the_row_invalid(
    tmp_path: Path,
) -> None:
    text = EXPORT.read_text(encoding="utf-8").replace('"true"\n', '"maybe"\n')
    path = tmp_path / "contacts.csv"
    path.write_text(text, encoding="utf-8")
    result = sandbox(tmp_path / "box").check(path)
    assert result.invalid == 2
    assert any("maybe" in i.reason for i in result.invalid_sample)
