"""The iMIS pack: an IQA contact export in, an iDMS iImport return file out."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from listferry_imis import IMIS, IMIS_OPTOUT

from listferry.testing import Sandbox

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
EXPORT = SAMPLES / "iqa_contacts.csv"
CHANGED = SAMPLES / "iqa_contacts_changed.csv"
OPTOUT = SAMPLES / "iqa_contacts_optout.csv"
EVENTS = SAMPLES / "events.csv"
EXPECTED = SAMPLES / "expected_return.csv"
DATE = re.compile(r"\d{4}-\d\d-\d\d")


def sandbox(tmp_path: Path, dialect: str = "imis") -> Sandbox:
    return Sandbox(
        tmp_path, plugins=["listferry_imis"], dialect=dialect, export_template="imis-import"
    )


def sample_events() -> list[dict[str, str]]:
    with EVENTS.open(encoding="utf-8", newline="") as f:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]


def read_return(data: bytes) -> list[dict[str, str]]:
    assert data.startswith(b"\xef\xbb\xbf"), "UTF-8 with a byte-order mark"
    text = data.decode("utf-8-sig")
    assert "\n" not in text.replace("\r\n", ""), "CRLF line endings only"
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_iqa_export_syncs_and_returns_the_iimport_file(tmp_path: Path) -> None:
    box = sandbox(tmp_path)
    box.upload(EXPORT)

    run = box.sync()

    assert run.status == "applied", run.reason
    assert (run.received, run.added, run.unsubscribed, run.invalid) == (22, 20, 1, 1)
    people = box.subscribers()
    assert people["a.karimi@example.net"]["status"] == "unsubscribed"
    assert "jane.doe.example.org" not in people
    zoe = people["zoe.lefevre@example.org"]
    assert (zoe["first_name"], zoe["last_name"], zoe["segment_code"]) == ("Zoë", "Lefèvre", "REG")
    assert zoe["fields"]["iMIS ID"] == "23187"
    assert zoe["fields"]["Full Address"] == "4 Rue des Lilas\nMontréal, QC H2X 1Y4"
    assert people["rsmith@example.com"]["last_name"] == "Smith, Jr."
    assert "grace.hopper@example.org" in people

    assert box.record_events(sample_events()) == (6, 0)
    result, path = box.export()

    assert result.records == 21
    assert path.name.endswith(".csv")
    assert (path.parent / f"{path.stem}_count.txt").read_text().strip() == "21"
    got = read_return(path.read_bytes())
    expected = read_return(EXPECTED.read_bytes())
    assert (
        list(got[0])
        == list(expected[0])
        == [
            "iMIS ID",
            "Email",
            "Email Opt In",
            "EmailOptOut",
            "OptOutDate",
            "EmailOpens",
            "EmailClicks",
            "LastOpenDate",
            "LastClickDate",
            "EmailTopics",
        ]
    )
    assert [row["Email"] for row in got] == [row["Email"] for row in expected]
    run_days = {run.started_at[:10], run.finished_at[:10]}
    for mine, theirs in zip(got, expected, strict=True):
        for column, value in theirs.items():
            if column == "OptOutDate" and mine["Email"] == "a.karimi@example.net":
                # opted out through the export: the date of the run that applied it
                assert DATE.fullmatch(mine[column]) and mine[column] in run_days
            else:
                assert mine[column] == value, (mine["Email"], column)


def test_check_maps_each_iqa_header(tmp_path: Path) -> None:
    result = sandbox(tmp_path).check(EXPORT)

    assert result.status == "ok", result.reason
    assert result.columns == {
        "iMIS ID": None,
        "First Name": "first_name",
        "Last Name": "last_name",
        "Email": "email",
        "Member Type": "segment_code",
        "Status": None,
        "Full Address": None,
        "Email Opt In": "opt_out",
    }
    assert (result.encoding, result.delimiter) == ("utf-8", ",")
    assert (result.records, result.invalid) == (22, 1)
    assert [(i.line, i.reason) for i in result.invalid_sample] == [
        (8, "'jane.doe.example.org' is not a valid e-mail address")
    ]


def test_netcontactdata_style_headers_map_too(tmp_path: Path) -> None:
    text = (
        "Id,FirstName,LastName,Email,MemberType,Email Opt In\r\n"
        "1001,Ada,Lovelace,ada@x.org,REG,No\r\n"
    )
    box = sandbox(tmp_path)
    box.upload(text, name="netcontactdata.csv")

    result = box.check(box.home / "netcontactdata.csv")

    assert result.columns == {
        "Id": None,
        "FirstName": "first_name",
        "LastName": "last_name",
        "Email": "email",
        "MemberType": "segment_code",
        "Email Opt In": "opt_out",
    }


@pytest.mark.parametrize(
    ("word", "imis", "imis_optout"),
    [
        ("Yes", False, True),
        ("TRUE", False, True),
        ("1", False, True),
        ("No", True, False),
        ("false", True, False),
        ("0", True, False),
        ("Maybe", None, None),
    ],
)
def test_preference_words_follow_each_column_sense(word: str, imis: bool, imis_optout: bool):
    assert IMIS.opt_out_value(word) is imis
    assert IMIS_OPTOUT.opt_out_value(word) is imis_optout


def test_optout_flag_dialect_reads_yes_as_opted_out(tmp_path: Path) -> None:
    box = sandbox(tmp_path, dialect="imis-optout")

    checked = box.check(OPTOUT)

    assert checked.columns["Opt Out"] == "opt_out"
    assert checked.columns["ID"] is None
    assert [(i.line, i.reason) for i in checked.invalid_sample] == [
        (7, "opt-out value 'Maybe' is not one of the words read as opted out or as subscribed")
    ]

    clean = b"".join(OPTOUT.read_bytes().splitlines(keepends=True)[:-1])
    box.upload(clean, name="optout.csv")
    run = box.sync()

    assert run.status == "applied", run.reason
    people = box.subscribers()
    assert {e for e, p in people.items() if p["status"] == "unsubscribed"} == {
        "pbecker@example.com",
        "radler@example.org",
    }
    rows = read_return(box.export()[1].read_bytes())
    assert [(r["iMIS ID"], r["Email Opt In"], r["EmailOptOut"]) for r in rows] == [
        ("30001", "Yes", "No"),
        ("30005", "Yes", "No"),
        ("30004", "Yes", "No"),
        ("30002", "No", "Yes"),
        ("30003", "No", "Yes"),
    ]


def test_a_second_changed_export_updates_the_list(tmp_path: Path) -> None:
    box = sandbox(tmp_path)
    box.upload(EXPORT)
    assert box.sync().status == "applied"
    box.upload(CHANGED)

    run = box.sync()

    assert run.status == "applied", run.reason
    assert (run.received, run.invalid) == (22, 0)
    assert (run.added, run.removed, run.unsubscribed) == (2, 1, 1)
    people = box.subscribers()
    assert people["soren.odegard@example.no"]["last_name"] == "Ødegård"  # cp1252 read
    assert people["rsmith@example.com"]["last_name"] == "Smith"
    assert people["grace.hopper@example.org"]["status"] == "unsubscribed"
    assert people["jane.doe@example.org"]["fields"]["iMIS ID"] == "23195"
    # listferry never puts an opted-out address back: the return file keeps saying No
    assert people["a.karimi@example.net"]["status"] == "unsubscribed"
    rows = {r["Email"]: r for r in read_return(box.export()[1].read_bytes())}
    assert "hlee@example.org" not in rows
    assert rows["grace.hopper@example.org"]["Email Opt In"] == "No"
    assert DATE.fullmatch(rows["grace.hopper@example.org"]["OptOutDate"])
    assert rows["a.karimi@example.net"]["Email Opt In"] == "No"
    assert rows["soren.odegard@example.no"]["iMIS ID"] == "23233"


def test_an_export_without_the_imis_id_is_voided(tmp_path: Path) -> None:
    box = sandbox(tmp_path)
    box.upload("First Name,Last Name,Email,Email Opt In\r\nAda,Lovelace,ada@x.org,Yes\r\n")

    run = box.sync()

    assert run.status == "voided"
    assert "iMIS ID" in run.reason
