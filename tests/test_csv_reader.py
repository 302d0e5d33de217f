"""The CSV reader on real CRM exports: encodings, delimiters, quotes, lines, headers.

Unit-level checks open the reader on a file in ``tmp_path``; end-to-end checks run
``listferry check FILE --json`` on the same kind of file.
"""

from __future__ import annotations

import codecs
import json
import tracemalloc
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import csv_text, people

from listferry import Void
from listferry.dialect import DEFAULT_ALIASES, Dialect
from listferry.records import FileInfo, Invalid, Record
from listferry.testing import Sandbox
from listferry_plugins.csv_reader import FIELD_LIMIT, LINE_LIMIT, SAMPLE_CHARS, CsvReader
from listferry_plugins.default_dialect import DEFAULT

HEADER = "email,first_name,last_name,segment_code"


class Read(NamedTuple):
    info: FileInfo
    records: list[Record]
    invalid: list[Invalid]
    records_read: int


def write(folder: Path, content: str | bytes, encoding: str = "utf-8") -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "list.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def read(path: Path, dialect: Dialect = DEFAULT) -> Read:
    """Every record and rejected row, read in batches of two so records cross batches."""
    with CsvReader().open(path, path.name, dialect) as source:
        records: list[Record] = []
        invalid: list[Invalid] = []
        for batch, rejected in source.batches(2):
            assert len(batch) + len(rejected) <= 2
            records += batch
            invalid += rejected
        return Read(source.info, records, invalid, source.records_read)


def void_reason(path: Path, dialect: Dialect = DEFAULT) -> str:
    with pytest.raises(Void) as caught:
        read(path, dialect)
    return str(caught.value)


def check(ws: Sandbox, path: Path) -> dict:
    """``check --json`` with no error-rate limit: the verdict is the reader's alone."""
    text = ws.config_path.read_text()
    if "max_invalid_share" not in text:
        ws.config_path.write_text(
            text.replace("[defaults]", "[defaults]\nmax_invalid_share = 1", 1)
        )
    result = ws.cli("check", str(path), "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == (0 if report["status"] == "ok" else 1), result.output
    return report


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "files"


# Encodings ------------------------------------------------------------------------------


def test_utf8_export_reads_accented_names(folder: Path) -> None:
    path = write(folder, f"{HEADER}\nzoe@example.org,Zoë,Müller-Łukasz,GOLD\n")
    got = read(path)
    assert got.info.encoding == "utf-8"
    assert (got.records[0].first_name, got.records[0].last_name) == ("Zoë", "Müller-Łukasz")


def test_utf8_bom_is_not_part_of_a_quoted_first_header(folder: Path, ws: Sandbox) -> None:
    path = write(folder, '\ufeff"E-mail","First Name"\r\nada@example.org,Ada\r\n')
    got = read(path)
    assert got.info.encoding == "utf-8"
    assert got.info.header == ("E-mail", "First Name")
    assert got.records[0].email == "ada@example.org"
    assert check(ws, path)["columns"] == {"E-mail": "email", "First Name": "first_name"}


def test_utf8_bom_wins_over_a_dialect_that_says_cp1252(folder: Path) -> None:
    path = write(folder, "\ufeffemail,first_name\nzoe@example.org,Zoë\n")
    got = read(path, Dialect(name="old-crm", encoding="cp1252"))
    assert got.info.header == ("email", "first_name")
    assert got.records[0].first_name == "Zoë"


def test_cp1252_export_with_euro_sign_reads_as_text(folder: Path, ws: Sandbox) -> None:
    text = (
        "email;first_name;last_name;note\r\n"
        "rene@example.org;René;Müller;“Gold” member, pays 50 € – O’Neil’s club\r\n"
    )
    path = write(folder, text, encoding="cp1252")
    got = read(path)
    assert got.info.encoding == "cp1252"
    assert (got.records[0].first_name, got.records[0].last_name) == ("René", "Müller")
    assert got.records[0].extra == ("“Gold” member, pays 50 € – O’Neil’s club",)
    report = check(ws, path)
    assert (report["status"], report["encoding"], report["records"]) == ("ok", "cp1252", 1)


@pytest.mark.parametrize(
    "bom, codec", [(codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")]
)
def test_utf16_unicode_text_from_excel_reads_as_tab_separated(
    folder: Path, ws: Sandbox, bom: bytes, codec: str
) -> None:
    text = "E-Mail\tVorname\tNachname\tMitglied\r\nzoe@example.org\tZoë\tŁukasz\t€ 5\r\n"
    path = write(folder, bom + text.encode(codec))
    got = read(path)
    assert (got.info.encoding, got.info.delimiter) == ("utf-16", "\t")
    assert got.info.columns["E-Mail"] == "email"
    assert got.records[0].email == "zoe@example.org"
    assert (got.records[0].first_name, got.records[0].last_name) == ("Zoë", "Łukasz")
    assert got.records[0].extra == ("€ 5",)
    report = check(ws, path)
    assert (report["status"], report["encoding"], report["records"]) == ("ok", "utf-16", 1)


def test_utf8_file_with_one_cp1252_name_voids_naming_its_line_instead_of_garbling(
    folder: Path,
) -> None:
    utf8 = f"{HEADER}\nzoe@example.org,Zoë,Doe,GOLD\nada@example.org,Ada,Doe,GOLD\n".encode()
    path = write(folder, utf8 + "rene@example.org,René,Doe,GOLD\n".encode("cp1252"))
    assert void_reason(path) == (
        "list.csv line 4: bytes that are not utf-8 text (byte 0xE9), though the file is UTF-8 "
        "elsewhere; save the whole file as UTF-8"
    )


@pytest.mark.parametrize("ascii_rows", [0, 40_000], ids=["near", "past-the-first-megabyte"])
def test_a_cp1252_line_before_the_utf8_ones_voids_naming_it_for_check_and_sync_alike(
    ws: Sandbox, tmp_path: Path, ascii_rows: int
) -> None:
    ws.add_tenant("acme")
    stray = "rene@example.org,René,Doe,GOLD\n".encode("cp1252")
    filler = "".join(f"p{i}@example.org,Ann,Doe,GOLD\n" for i in range(ascii_rows)).encode()
    utf8 = "".join(f"a{i}@example.org,Änne,Müller,GOLD\n" for i in range(50)).encode()
    content = f"{HEADER}\n".encode() + stray + filler + utf8
    path = tmp_path / "list.csv"
    path.write_bytes(content)

    checked = ws.cli("check", str(path), "--tenant", "acme", "--json")
    ws.upload(content, name="list.csv")
    (run,) = ws.sync_all()

    reason = (
        "list.csv line 2: bytes that are not utf-8 text (byte 0xE9), though the file is "
        "UTF-8 elsewhere; save the whole file as UTF-8"
    )
    assert (run.status, run.reason) == ("voided", reason)
    assert (json.loads(checked.stdout)["status"], json.loads(checked.stdout)["reason"]) == (
        "void",
        reason,
    )
    assert checked.exit_code == 1
    assert ws.subscribers("active") == {}  # nothing stored as "Ã„nne"


def test_a_utf8_file_without_a_stray_byte_keeps_its_names(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload("email,first_name\nada@example.org,Änne\n".encode())
    (run,) = ws.sync_all()
    assert run.status == "applied"
    assert ws.subscribers("active")["ada@example.org"]["first_name"] == "Änne"


def test_utf16_without_bom_is_still_read_as_utf16(folder: Path) -> None:
    text = "email\tfirst_name\r\nzoe@example.org\tZoë\r\n"
    for codec in ("utf-16-le", "utf-16-be"):
        got = read(write(folder, text.encode(codec)))
        assert got.info.encoding == codec
        assert (got.records[0].email, got.records[0].first_name) == ("zoe@example.org", "Zoë")


def test_byte_undefined_in_cp1252_voids_naming_its_line(folder: Path, ws: Sandbox) -> None:
    rows = "".join(f"p{i}@example.org,Ren\xe9,Doe,GOLD\n" for i in range(3000))
    bad = b"bad@example.org,Bad\x81,Doe,GOLD\nlast@example.org,Last,Doe,GOLD\n"
    content = f"{HEADER}\n{rows}".encode("cp1252") + bad
    path = write(folder, content)
    assert void_reason(path) == (
        "list.csv line 3002: bytes that are not cp1252 text (byte 0x81); save the file as UTF-8"
    )
    report = check(ws, path)
    assert report["status"] == "void"
    assert "line 3002" in report["reason"]


def test_invalid_utf8_in_a_utf8_dialect_voids_naming_its_line(folder: Path) -> None:
    rows = "".join(f"p{i}@example.org,Zoë,Doe,GOLD\r\n" for i in range(5000))
    content = f"{HEADER}\r\n{rows}".encode() + b"x@example.org,\xff\xfe,Doe,GOLD\r\n"
    path = write(folder, content)
    reason = void_reason(path, Dialect(name="utf8-crm", encoding="utf-8"))
    assert "list.csv line 5002: bytes that are not utf-8 text" in reason


def test_utf16_file_cut_in_the_middle_of_a_character_voids(folder: Path) -> None:
    text = "email\tfirst_name\r\nada@example.org\tAda\r\n"
    path = write(folder, codecs.BOM_UTF16_LE + text.encode("utf-16-le") + b"b")
    assert "line 3: bytes that are not utf-16 text" in void_reason(path)


# Delimiters and line ends ---------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(folder: Path, ws: Sandbox, delimiter: str) -> None:
    others = "".join(d for d in ",;\t|" if d != delimiter)
    rows = [
        ["email", "first name", "last name", "note"],
        ["ada@example.org", "Ada", "Lovelace", f'"has {others} inside"'],
        ["bob@example.org", "Bob", "Ray", f'"and {delimiter} quoted"'],
    ]
    path = write(folder, "".join(delimiter.join(row) + "\n" for row in rows))
    got = read(path)
    assert got.info.delimiter == delimiter
    assert [r.extra for r in got.records] == [
        (f"has {others} inside",),
        (f"and {delimiter} quoted",),
    ]
    assert check(ws, path)["delimiter"] == delimiter


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r", "mixed"])
def test_line_endings_read_the_same(folder: Path, newline: str) -> None:
    lines = [HEADER, "ada@example.org,Ada,Lovelace,GOLD", "", "bob@example.org,Bob,Ray,SILVER"]
    ends = ["\r\n", "\n", "\r\n", "\n"] if newline == "mixed" else [newline] * 4
    path = write(folder, "".join(line + end for line, end in zip(lines, ends, strict=True)))
    got = read(path)
    assert [(r.line, r.email, r.segment_code) for r in got.records] == [
        (2, "ada@example.org", "GOLD"),
        (4, "bob@example.org", "SILVER"),
    ]
    assert (got.invalid, got.records_read) == ([], 2)


def test_last_line_without_line_end_is_read(folder: Path) -> None:
    path = write(folder, f"{HEADER}\r\nada@example.org,Ada,Lovelace,GOLD")
    assert read(path).records[0].segment_code == "GOLD"


def test_sniffing_sample_that_cuts_a_line_still_finds_the_delimiter(folder: Path) -> None:
    note = "word " * 400
    rows = [f"p{i}@example.org;Lee, Ann;{note};GOLD\n" for i in range(200)]
    rows[30] = f'p30@example.org;Lee, Ann;"{note}\n{note}";GOLD\n'
    text = "email;name, title;note;segment\n" + "".join(rows)
    cut = text[SAMPLE_CHARS - 5 : SAMPLE_CHARS + 5]
    assert "\n" not in cut, "the sample must end inside a line"
    got = read(write(folder, text))
    assert got.info.delimiter == ";"
    assert got.records_read == 200 and not got.invalid
    assert [r.line for r in got.records[29:33]] == [31, 32, 34, 35]
    assert got.records[30].extra == ("Lee, Ann", f"{note}\n{note}")


# Quotes, records and line numbers -------------------------------------------------------


QUOTED = (
    "email,first_name,last_name,notes\r\n"
    'ada@example.org,Ada,"Lovelace\r\nByron",one\r\n'
    'bob@example.org,Bob,Ray,"two\nlines\r\nhere, with a comma"\r\n'
    'cy@example.org,"Cy ""the"" Q",Doe,"said ""hi"", left"\r\n'
    "not-an-address,Dee,Doe,four\r\n"
)


def test_quoted_newlines_are_one_record_starting_on_its_first_line(folder: Path) -> None:
    got = read(write(folder, QUOTED))
    assert got.records_read == 4
    assert [r.line for r in got.records] == [2, 4, 7, 8]
    assert got.records[0].last_name == "Lovelace\r\nByron"
    assert got.records[1].extra == ("two\nlines\r\nhere, with a comma",)
    assert (got.records[2].first_name, got.records[2].extra) == ('Cy "the" Q', ('said "hi", left',))


def test_count_file_counts_records_not_lines(folder: Path, ws: Sandbox) -> None:
    path = write(folder, QUOTED)
    (folder / "list_count.txt").write_text("4\n")
    report = check(ws, path)
    assert (report["status"], report["records"], report["invalid"]) == ("ok", 4, 1)
    assert report["invalid_lines"] == [
        {"line": 8, "reason": "'not-an-address' is not a valid e-mail address"}
    ]


def test_ragged_rows_are_invalid_naming_both_counts(folder: Path, ws: Sandbox) -> None:
    text = (
        f"{HEADER}\n"
        "ada@example.org,Ada,Lovelace\n"
        "bob@example.org,Bob,Ray,GOLD,extra\n"
        "cy@example.org,Cy,Doe,GOLD\n"
        'dee@example.org,"Dee\nDoe",Doe,GOLD,x\n'
    )
    path = write(folder, text)
    got = read(path)
    assert got.invalid == [
        Invalid(2, "has 3 fields, the header has 4"),
        Invalid(3, "has 5 fields, the header has 4"),
        Invalid(5, "has 5 fields, the header has 4 (lines 5-6: check the quotes)"),
    ]
    assert [r.line for r in got.records] == [4]
    report = check(ws, path)
    assert (report["status"], report["records"], report["invalid"]) == ("ok", 4, 3)


def test_text_after_a_closing_quote_makes_only_that_row_invalid(folder: Path) -> None:
    text = f'{HEADER}\nada@example.org,"Ada"x,Lovelace,GOLD\nbob@example.org,Bob,Ray,GOLD\n'
    got = read(write(folder, text))
    assert [i.line for i in got.invalid] == [2]
    assert "check the quotes" in got.invalid[0].reason
    assert [(r.line, r.email) for r in got.records] == [(3, "bob@example.org")]
    assert got.records_read == 2


def test_blank_rows_are_not_records(folder: Path, ws: Sandbox) -> None:
    text = (
        f"{HEADER}\r\n\r\n"
        "ada@example.org,Ada,Lovelace,GOLD\r\n"
        ",,,\r\n"
        ",,,,\r\n"
        "  , ,\t,\r\n"
        '"","","",""\r\n'
        "bob@example.org,Bob,Ray,GOLD\r\n"
        ",,,,,,\r\n"
    )
    path = write(folder, text)
    got = read(path)
    assert [(r.line, r.email) for r in got.records] == [
        (3, "ada@example.org"),
        (8, "bob@example.org"),
    ]
    assert (got.invalid, got.records_read) == ([], 2)
    assert check(ws, path)["records"] == 2


def test_row_with_empty_email_is_counted_invalid(folder: Path, ws: Sandbox) -> None:
    path = write(folder, f"{HEADER}\nada@example.org,Ada,,\n  ,Nobody,Doe,GOLD\n")
    assert read(path).records[1].email == ""
    report = check(ws, path)
    assert (report["status"], report["records"], report["invalid"]) == ("ok", 2, 1)
    assert report["invalid_lines"] == [{"line": 3, "reason": "empty e-mail address"}]


def test_email_is_trimmed_and_lower_cased(folder: Path) -> None:
    path = write(folder, f"{HEADER}\n  Ada.Lovelace@Example.ORG\t,Ada,Lovelace,GOLD\n")
    assert read(path).records[0].email == "ada.lovelace@example.org"


@pytest.mark.parametrize(
    "last_lines, line",
    [
        ('bob@example.org,Bob,Ray,"GOLD\ncy@example.org,Cy,Doe,SILVER\n', 3),
        ('bob@example.org,"Bob,Ray,GOLD\n', 3),
        ('bob@example.org,Bob,Ray,"GOLD', 3),
        ('bob@example.org,"Bob\n\ncy@example.org,Cy,Doe,SILVER\ndee@example.org,Dee,Doe,GOLD', 3),
    ],
    ids=["right-width", "one-line", "no-line-end", "many-lines"],
)
def test_quote_never_closed_voids_naming_the_line(
    folder: Path, ws: Sandbox, last_lines: str, line: int
) -> None:
    path = write(folder, f"{HEADER}\nada@example.org,Ada,Lovelace,GOLD\n{last_lines}")
    reason = void_reason(path)
    assert f"list.csv line {line}: a quote opened in this record is never closed" in reason
    report = check(ws, path)
    assert report["status"] == "void" and f"line {line}" in report["reason"]


def test_quote_never_closed_after_many_batches_voids_the_run_and_keeps_the_list(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme", strategy="full")
    ws.upload(people(3))
    assert [run.status for run in ws.sync_all()] == ["applied"]
    ws.upload(csv_text(people(12_000)) + 'late@example.org,"Late,Comer,GOLD\r\n')
    (run,) = ws.sync_all()
    assert run.status == "voided"
    assert "subscriber_list.csv line 12002: a quote opened" in run.reason
    assert sorted(ws.subscribers("active")) == [f"p{i}@example.org" for i in range(3)]


def test_field_over_the_size_limit_voids_naming_its_line(folder: Path, ws: Sandbox) -> None:
    big = "x" * (FIELD_LIMIT + 1)
    path = write(
        folder, f"{HEADER}\nada@example.org,Ada,Lovelace,GOLD\nbob@example.org,{big},Ray,\n"
    )
    assert "list.csv line 3: a field is longer than" in void_reason(path)
    assert "line 3" in check(ws, path)["reason"]


def test_quoted_field_over_the_size_limit_voids_naming_the_line_it_starts_on(folder: Path) -> None:
    lines = ("y" * 999 + "\n") * (FIELD_LIMIT // 1000 + 1)
    path = write(
        folder, f'{HEADER}\nada@example.org,Ada,Lovelace,GOLD\nbob@example.org,"{lines}"\n'
    )
    assert "list.csv line 3: a field is longer than" in void_reason(path)


def test_endless_line_voids_without_being_read_whole(folder: Path) -> None:
    path = write(folder, f"{HEADER}\nada@example.org,Ada,Lovelace,GOLD\n" + "x," * LINE_LIMIT)
    assert f"list.csv line 3: longer than {LINE_LIMIT} characters" in void_reason(path)


def test_nul_byte_in_a_field_does_not_crash(folder: Path, ws: Sandbox) -> None:
    text = f"{HEADER}\nada@exa\x00mple.org,Ada,Lovelace,GOLD\nbob@example.org,B\x00b,Ray,GOLD\n"
    path = write(folder, text)
    got = read(path)
    assert [r.first_name for r in got.records] == ["Ada", "B\x00b"]
    report = check(ws, path)
    assert (report["status"], report["records"], report["invalid"]) == ("ok", 2, 1)
    assert report["invalid_lines"][0]["line"] == 2


# Headers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling, canonical",
    [
        ("email", "email"),
        ("Email", "email"),
        ("E-Mail", "email"),
        ("e_mail", "email"),
        ("Email Address", "email"),
        ("EMAIL_ADDRESS", "email"),
        ("E-mail address", "email"),
        ("  email-address  ", "email"),
        ("First Name", "first_name"),
        ("firstname", "first_name"),
        ("FIRST-NAME", "first_name"),
        ("first_name", "first_name"),
        ("Given Name", "first_name"),
        ("given_name", "first_name"),
        ("Last Name", "last_name"),
        ("LASTNAME", "last_name"),
        ("Surname", "last_name"),
        ("Family Name", "last_name"),
        ("family-name", "last_name"),
        ("Segment", "segment_code"),
        ("Segment Code", "segment_code"),
        ("SEGMENT_CODE", "segment_code"),
        ("segment-code", "segment_code"),
        ("Member Type", None),
        ("Segments", None),
    ],
)
def test_header_spellings_map_to_fields(folder: Path, spelling: str, canonical: str | None) -> None:
    got = read(write(folder, f"{spelling},Other\nValue,x\n"))
    assert got.info.columns == {spelling.strip(): canonical, "Other": None}


def test_header_of_unknown_columns_voids_naming_the_headers_found(
    folder: Path, ws: Sandbox
) -> None:
    path = write(folder, "Kontakt;Vorname;Nachname\nada@example.org;Ada;Lovelace\n")
    report = check(ws, path)
    assert report["status"] == "void"
    assert "missing column: email" in report["reason"]
    assert "'Kontakt', 'Vorname', 'Nachname'" in report["reason"]


def test_duplicate_headers_are_made_unique_and_every_column_kept(folder: Path) -> None:
    path = write(folder, "email,phone,phone,,Phone,phone\nada@example.org,1,2,3,4,5\n")
    got = read(path)
    assert got.info.header == ("email", "phone", "phone_2", "column_4", "Phone", "phone_3")
    assert got.info.extra_columns == got.info.header[1:]
    assert got.records[0].extra == ("1", "2", "3", "4", "5")


@pytest.mark.parametrize("header", ["Email,E-Mail Address", "email,email"])
def test_two_columns_meaning_email_use_the_first_and_say_so(
    folder: Path, ws: Sandbox, header: str
) -> None:
    path = write(folder, f"{header},name\nada@example.org,ada@home.example,Ada\n")
    got = read(path)
    first, second = got.info.header[:2]
    assert got.info.columns == {first: "email", second: None, "name": None}
    assert got.records[0].email == "ada@example.org"
    assert got.records[0].extra == ("ada@home.example", "Ada")
    (note,) = check(ws, path)["notes"]
    assert repr(first) in note and repr(second) in note and "email" in note


def test_trailing_delimiter_on_every_line_adds_no_column(folder: Path, ws: Sandbox) -> None:
    text = f"{HEADER},\r\nada@example.org,Ada,Lovelace,GOLD,\r\nbob@example.org,Bob,Ray,,oops\r\n"
    path = write(folder, text)
    got = read(path)
    assert got.info.header == tuple(HEADER.split(","))
    assert got.info.extra_columns == ()
    assert [r.email for r in got.records] == ["ada@example.org"]
    assert got.invalid == [Invalid(3, "has 5 fields, the header has 4")]
    assert check(ws, path)["columns"] == dict.fromkeys(HEADER.split(","), None) | {
        "email": "email",
        "first_name": "first_name",
        "last_name": "last_name",
        "segment_code": "segment_code",
    }


@pytest.mark.parametrize("content", [b"", b"\r\n\r\n", codecs.BOM_UTF8, b",,,\n,,\n"])
def test_empty_file_voids(folder: Path, ws: Sandbox, content: bytes) -> None:
    path = write(folder, content)
    assert "list.csv: the file is empty (no header line)" in void_reason(path)
    assert check(ws, path)["status"] == "void"


def test_header_only_file_voids_with_no_records(folder: Path, ws: Sandbox) -> None:
    path = write(folder, f"{HEADER}\r\n,,,\r\n")
    assert read(path).records_read == 0
    report = check(ws, path)
    assert (report["status"], report["records"]) == ("void", 0)
    assert "no records" in report["reason"]


def test_opt_out_column_reads_the_dialects_words(folder: Path) -> None:
    crm = Dialect(name="crm", aliases={**DEFAULT_ALIASES, "opt_out": ("Unsubscribed",)})
    text = f"{HEADER},Unsubscribed\n" + "".join(
        f"p{i}@example.org,P,Q,GOLD,{word}\n" for i, word in enumerate(["Yes", " no ", "", "maybe"])
    )
    got = read(write(folder, text), crm)
    assert [r.opt_out for r in got.records] == [True, False, None]
    assert got.invalid == [
        Invalid(
            5, "opt-out value 'maybe' is not one of the words read as opted out or as subscribed"
        )
    ]


def test_dialect_that_gives_one_header_two_meanings_is_refused() -> None:
    with pytest.raises(ValueError, match="'name' cannot mean both first_name and last_name"):
        Dialect(name="bad", aliases={"first_name": ("Name",), "last_name": ("name",)})


def test_cp1252_export_reaches_the_subscriber_list_with_every_column(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    text = (
        "E-Mail;Vorname;Surname;Segment Code;Member Type;Phone;Phone\r\n"
        "  Rene@Example.ORG ;René;Müller;GOLD;“Fellow”;1;2\r\n"
    )
    ws.upload(text.encode("cp1252"), count=1)
    assert [run.status for run in ws.sync_all()] == ["applied"]
    rene = ws.subscribers("active")["rene@example.org"]
    assert (rene["first_name"], rene["last_name"], rene["segment_code"]) == (
        "René",
        "Müller",
        "GOLD",
    )
    assert rene["fields"] == {
        "Member Type": "“Fellow”",
        "Phone": "1",
        "Phone_2": "2",
    }


# Streaming --------------------------------------------------------------------------------


def test_large_file_streams_in_batches_with_flat_memory(folder: Path) -> None:
    rows = "".join(f"p{i}@example.org,First{i},Last{i},GOLD,{'n' * 80}\r\n" for i in range(100_000))
    path = write(folder, f"{HEADER},note\r\n{rows}")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        with CsvReader().open(path, path.name, DEFAULT) as source:
            batches = 0
            for records, _ in source.batches(1000):
                assert len(records) == 1000
                batches += 1
            peak = tracemalloc.get_traced_memory()[1]
            assert (batches, source.records_read, source.bytes_read) == (100, 100_000, size)
    finally:
        tracemalloc.stop()
    assert peak < size / 3, f"peak {peak} bytes for a file of {size}"


@pytest.mark.parametrize(
    ("header", "fields"),
    [
        ("E-Mail-Adresse;Vorname;Nachname", ("email", "first_name", "last_name")),
        ("Courriel;Prénom;Nom", ("email", "first_name", "last_name")),
        ("E-mail;Voornaam;Achternaam", ("email", "first_name", "last_name")),
        ("Correo electrónico;Nombre;Apellidos", ("email", "first_name", "last_name")),
    ],
)
def test_european_exports_map_their_own_words(tmp_path, header: str, fields: tuple) -> None:
    from listferry.dialect import Dialect

    mapped = Dialect(name="d").map_header(header.split(";"))
    assert tuple(mapped.get(i) for i in range(3)) == fields


def test_more_columns_can_opt_out_with_their_own_words(ws, tmp_path) -> None:
    from listferry.dialect import Dialect
    from listferry_plugins.csv_reader import CsvReader

    dialect = Dialect(
        name="ams",
        aliases={"email": ("Email",), "opt_out": ("Subscribed",)},
        opt_out_true=frozenset({"no"}),
        opt_out_false=frozenset({"yes", ""}),
        also_opt_out={"Email delivery disabled": {"Yes", "true"}},
    )
    path = tmp_path / "members.csv"
    path.write_text(
        "Email,Subscribed,Email delivery disabled\n"
        "a@example.org,yes,no\n"
        "b@example.org,yes,YES\n"
        "c@example.org,no,\n"
        "d@example.org,,true\n"
        "e@example.org,,maybe\n"
    )
    with CsvReader().open(path, path.name, dialect) as source:
        (records, invalid), *_ = list(source.batches())
    assert invalid == []
    assert [(r.email, r.opt_out) for r in records] == [
        ("a@example.org", False),
        ("b@example.org", True),
        ("c@example.org", True),
        ("d@example.org", True),
        ("e@example.org", None),  # any other word in such a column changes nothing
    ]
