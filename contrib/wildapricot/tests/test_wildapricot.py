"""The WildApricot pack: its contact export in, a file for its contact import out."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from listferry.testing import Sandbox

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
EXPORT = SAMPLES / "wildapricot_contacts.csv"
EVENTS = SAMPLES / "wildapricot_events.csv"
EXPECTED = SAMPLES / "wildapricot_import_expected.csv"

#: Seven contacts, one of them with a broken address: above the default 5 % share of
#: invalid records, which is meant for real lists, not a sample this small.
SETTINGS = {"dialect": "wildapricot", "max_invalid_share": 0.2}

#: The one cell that depends on the run: Hedy opted out in the export, so her opt-out
#: date is the day the run applied it.
RUN_DATED = ("hedy@example.org", "Listferry opted out on")


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(
        tmp_path,
        plugins=["listferry_wildapricot"],
        export_template="wildapricot-import",
        **SETTINGS,
    )


def sample_events() -> list[dict[str, str]]:
    with open(EVENTS, encoding="utf-8", newline="") as f:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_check_maps_each_wildapricot_header(box: Sandbox) -> None:
    result = box.check(EXPORT)

    assert result.status == "ok", result.reason
    assert (result.encoding, result.delimiter) == ("utf-8", ",")
    assert result.columns == {
        "User ID": None,
        "First name": "first_name",
        "Last name": "last_name",
        "Organization": None,
        "Email": "email",
        "Phone": None,
        "Archived": None,
        "Subscribed to emails": "opt_out",
        "Event announcements": None,
        "Member emails and newsletters": None,
        "Email delivery disabled": None,
        "Created on": None,
        "Membership enabled": None,
        "Membership level": "segment_code",
        "Membership status": None,
        "Member since": None,
        "Renewal due": None,
        "Member bundle ID or email": None,
    }
    assert (result.records, result.invalid) == (7, 1)
    assert [i.line for i in result.invalid_sample] == [8]
    assert "bad.address.example.org" in result.invalid_sample[0].reason


def test_sync_reads_the_export_as_wildapricot_writes_it(box: Sandbox) -> None:
    box.upload(EXPORT)
    run = box.sync()

    assert run.status == "applied", run.reason
    assert (run.received, run.added, run.unsubscribed, run.invalid) == (7, 5, 1, 1)
    people = box.subscribers()
    assert sorted(people) == [
        "ada@example.org",
        "alan@example.org",
        "grace@example.org",
        "hedy@example.org",
        "katherine@example.org",
        "zoe@example.org",
    ]
    assert people["hedy@example.org"]["status"] == "unsubscribed"  # Subscribed to emails: No
    assert people["zoe@example.org"]["status"] == "active"  # empty: WildApricot's default
    zoe = people["zoe@example.org"]
    assert (zoe["first_name"], zoe["last_name"]) == ("Zoë", "Müller-Lüdenscheidt")
    assert zoe["fields"]["Organization"] == "Société Générale"
    assert people["grace@example.org"]["last_name"] == "Hopper, RADM"
    assert people["alan@example.org"]["fields"]["Organization"] == "Bletchley Park\nHut 8"
    assert people["ada@example.org"]["segment_code"] == "Gold"
    assert people["katherine@example.org"]["segment_code"] is None
    assert people["ada@example.org"]["fields"]["User ID"] == "50112233"


def test_return_file_matches_the_sample_column_by_column(box: Sandbox) -> None:
    box.upload(EXPORT)
    assert box.sync().status == "applied"
    assert box.record_events(sample_events()) == (7, 0)

    result, path = box.export()
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf"), "UTF-8 with a byte-order mark"
    assert data.count(b"\r\n") == data.count(b"\n"), "CRLF line endings"
    assert result.file.endswith(".csv")

    got = read_csv(data.decode("utf-8-sig"))
    want = read_csv(EXPECTED.read_bytes().decode("utf-8-sig"))
    assert list(got[0]) == list(want[0])
    assert [row["Email"] for row in got] == [row["Email"] for row in want]
    for mine, theirs in zip(got, want, strict=True):
        for column in want[0]:
            if (theirs["Email"], column) == RUN_DATED:
                assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", mine[column]), mine[column]
            else:
                assert mine[column] == theirs[column], (theirs["Email"], column)


def test_return_file_leaves_consent_alone_unless_opted_out(box: Sandbox) -> None:
    box.upload(EXPORT)
    box.sync()
    box.record_events(sample_events())

    rows = {row["Email"]: row for row in read_csv(box.export_text(encoding="utf-8-sig"))}

    assert {e for e, row in rows.items() if row["Subscribed to emails"] == "No"} == {
        "grace@example.org",
        "hedy@example.org",
    }
    assert {row["Subscribed to emails"] for row in rows.values()} == {"No", ""}
    assert all(row["User ID"] for row in rows.values()), "every row keyed by User ID"


def test_a_second_export_updates_removes_and_honours_new_opt_outs(box: Sandbox) -> None:
    box.upload(EXPORT)
    assert box.sync().status == "applied"

    text = EXPORT.read_bytes().decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header, body = rows[0], rows[1:]
    column = {name: i for i, name in enumerate(header)}
    changed = []
    for row in body:
        if row[column["Email"]] == "KATHERINE@Example.org":
            continue  # deleted in WildApricot
        if row[column["Email"]] == "zoe@example.org":
            row[column["Subscribed to emails"]] = "No"
        if row[column["Email"]] == "alan@example.org":
            row[column["Membership level"]] = "Silver"
        changed.append(row)
    mary = {"User ID": "50112240", "First name": "Mary", "Last name": "Jackson"}
    mary |= {"Email": "mary@example.org", "Subscribed to emails": "Yes"}
    mary |= {"Membership level": "Silver", "Membership status": "Active"}
    changed.append([mary.get(name, "") for name in header])  # joined in WildApricot
    out = io.StringIO(newline="")
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerows([header, *changed])
    box.upload(b"\xef\xbb\xbf" + out.getvalue().encode("utf-8"), name="contacts_2.csv")

    run = box.sync()

    assert run.status == "applied", run.reason
    assert (run.added, run.updated, run.removed, run.unsubscribed) == (1, 1, 1, 1)
    people = box.subscribers()
    assert "katherine@example.org" not in box.subscribers("active")
    assert people["zoe@example.org"]["status"] == "unsubscribed"
    assert people["alan@example.org"]["segment_code"] == "Silver"
    assert people["mary@example.org"]["fields"]["User ID"] == "50112240"
    emails = [row["Email"] for row in read_csv(box.export_text(encoding="utf-8-sig"))]
    assert "katherine@example.org" not in emails
    assert "mary@example.org" in emails


def test_an_export_without_the_consent_column_is_refused(box: Sandbox) -> None:
    text = EXPORT.read_bytes().decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    drop = rows[0].index("Subscribed to emails")
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n").writerows([r[:drop] + r[drop + 1 :] for r in rows])
    box.upload(out.getvalue(), name="no_consent.csv")

    run = box.sync()

    assert run.status != "applied"
    assert "opt_out" in (run.reason or "")
    assert box.subscribers() == {}


def test_an_unknown_consent_word_makes_the_row_invalid(box: Sandbox, tmp_path: Path) -> None:
    text = (
        EXPORT.read_bytes()
        .decode("utf-8-sig")
        .replace('"Yes","Yes","Yes","No"', '"Maybe","Yes","Yes","No"', 1)
    )
    path = tmp_path / "maybe.csv"
    path.write_text(text, encoding="utf-8")

    result = box.check(path)

    assert result.invalid == 2
    assert result.invalid_sample[0].line == 2


def test_the_older_e_mail_header_is_the_address(box: Sandbox, tmp_path: Path) -> None:
    path = tmp_path / "older.csv"
    path.write_text(
        '"User ID","e-Mail","First name","Subscribed to emails"\r\n'
        '"50112233","ada@example.org","Ada","Yes"\r\n',
        encoding="utf-8",
    )

    result = box.check(path)

    assert result.columns["e-Mail"] == "email"
    assert (result.records, result.invalid) == (1, 0)
