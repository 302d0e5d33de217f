"""iMIS (ASI): read an IQA contact export, write a return file for iDMS iImport.

Reads the CSV that an IQA query of contacts gives (Staff site, RiSE > Intelligent Query
Architect): the iMIS ID, first and last name, e-mail, member type and one
communication-preference column. Two dialects, one per kind of preference column:

- ``imis``: a communication preference as iMIS keeps it, opt-in: ``Yes``/``1``/``True``
  receives the mailing, ``No``/``0``/``False`` opted out (header ``Email Opt In``).
- ``imis-optout``: an opt-out flag (a checkbox on a panel, say): ``Yes``/``1``/``True``
  opted out (header ``Opt Out``).

Both sniff the delimiter and read UTF-8 with or without a byte-order mark, else cp1252
(a CSV saved from Excel). Every other column (``iMIS ID``, ``Status``, addresses) is kept
in ``fields``; a file without an iMIS ID column is voided, since its return file could
not be matched in iMIS.

Writes ``imis-import``: one CSV for iDMS iImport, matched on ``iMIS ID``. ``Email Opt
In`` (``Yes``/``No``) goes to the Communication Preferences source; ``EmailOptOut``,
``OptOutDate``, ``EmailOpens``, ``EmailClicks``, ``LastOpenDate``, ``LastClickDate`` and
``EmailTopics`` go to the properties of a contact panel the customer creates. UTF-8 with
a byte-order mark, comma, CRLF, RFC 4180 quoting, dates as ``YYYY-MM-DD``.
"""

from __future__ import annotations

from typing import Any

from listferry import DEFAULT_ALIASES, Dialect, Field, FileInfo, Template, fold_header, hookimpl

#: Header spellings of the contact's iMIS ID, folded (case, spaces, ``_ - .`` do not count).
ID_HEADERS = ("imisid", "id")

#: The words iDMS takes for a communication preference (help.imis.com, iDMS guide).
YES_WORDS = frozenset({"yes", "1", "true"})
NO_WORDS = frozenset({"no", "0", "false"})

COMMON_ALIASES = {
    **DEFAULT_ALIASES,
    "segment_code": ("member type", "customer type", "segment"),
}

IMIS = Dialect(
    name="imis",
    description="iMIS IQA contact export; a communication preference: Yes = opted in",
    aliases={
        **COMMON_ALIASES,
        "opt_out": ("email opt in", "opt in", "communication preference", "receive email"),
    },
    opt_out_true=NO_WORDS,
    opt_out_false=YES_WORDS | {""},
    template="imis-import",
)

IMIS_OPTOUT = Dialect(
    name="imis-optout",
    description="iMIS IQA contact export; an opt-out flag: Yes = opted out",
    aliases={
        **COMMON_ALIASES,
        "opt_out": ("opt out", "email opt out", "do not email", "exclude email"),
    },
    opt_out_true=YES_WORDS,
    opt_out_false=NO_WORDS | {""},
    template="imis-import",
)

DIALECTS = (IMIS, IMIS_OPTOUT)

#: The kept column whose folded header is an iMIS ID spelling; ``iMIS ID`` before ``ID``.
_FOLDED_KEY = "replace(replace(replace(replace(lower(key), ' ', ''), '_', ''), '-', ''), '.', '')"
IMIS_ID = Field(
    f"(SELECT value FROM json_each(s.fields) WHERE {_FOLDED_KEY} IN ('imisid', 'id') "
    f"ORDER BY {_FOLDED_KEY} = 'id' LIMIT 1)",
    description="the contact's iMIS ID: the export's 'iMIS ID' (or 'ID') column",
)

#: The return file: a header of iDMS mapping names, then one record per contact. Its
#: byte-order mark (``utf-8-sig``) lets Excel open it as UTF-8; ``Email Opt In`` is in
#: iMIS's opt-in sense.
IMPORT = """\
{{ ["iMIS ID", "Email", "Email Opt In", "EmailOptOut", "OptOutDate", "EmailOpens",
        "EmailClicks", "LastOpenDate", "LastClickDate", "EmailTopics"] | csv_row }}
{% for row in rows %}
{{ [row.imis_id, row.email, not row.opted_out, row.opted_out, row.opted_out_at,
    row.open_count, row.click_count, row.last_open, row.last_click, row.topics]
   | csv_row(true="Yes", false="No", date="%Y-%m-%d") }}
{% endfor %}
"""

IMIS_IMPORT = Template(
    IMPORT,
    suffix=".csv",
    newline="\r\n",
    encoding="utf-8-sig",
    fields=(
        "imis_id",
        "email",
        "opted_out",
        "opted_out_at",
        "open_count",
        "click_count",
        "last_open",
        "last_click",
        "topics",
    ),
    description="iDMS iImport CSV: iMIS ID, Email Opt In Yes/No, engagement panel fields",
    match_on=("imis_id",),
)


@hookimpl
def register_dialects(register: Any) -> None:
    for dialect in DIALECTS:
        register(dialect)


@hookimpl
def register_fields(register: Any) -> None:
    register("imis_id", IMIS_ID)


@hookimpl
def register_templates(register: Any) -> None:
    register("imis-import", IMIS_IMPORT)


@hookimpl
def validate_header(file: FileInfo) -> str | None:
    if file.dialect.name not in {dialect.name for dialect in DIALECTS}:
        return None
    if any(fold_header(name) in ID_HEADERS for name in file.header):
        return None
    found = ", ".join(repr(h) for h in file.header[:12])
    return (
        "missing column: the iMIS ID (header 'iMIS ID' or 'ID'), which the return file is "
        f"matched on; the file's header is {found}"
    )
