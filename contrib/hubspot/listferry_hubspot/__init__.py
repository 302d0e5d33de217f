"""listferry pack for HubSpot: its contacts export in, a contact import file out.

Reads (dialect ``hubspot``) the CSV that HubSpot writes when a contacts view or a
contact list is exported with English property labels as headers: ``Record ID``,
``First Name``, ``Last Name``, ``Email`` and, once added to the view, ``Unsubscribed
from all email`` (``true``/``Yes`` opted out; ``false``/``No`` or empty not). Every other
column (``Record ID``, ``Marketing contact status``, ``Create Date`` ...) is kept in
``fields`` under its label. UTF-8 with or without a byte-order mark is read as such; a
file an editor saved as cp1252 is read as cp1252.

Writes (template ``hubspot-import``) a CSV for HubSpot's contact import: UTF-8, comma,
CRLF, a header of property labels so the importer maps each column by itself, matched
on ``Record ID`` (then ``Email``). Engagement goes to custom contact properties the
customer creates once (see docs/packs/hubspot.md): a single checkbox written
``true``/``false``, numbers, date pickers written ``YYYY-MM-DD`` (pick the year-month-day
date format in the import) and topics as text joined with ``;``.
"""

from __future__ import annotations

from typing import Any

from listferry import Dialect, Template, hookimpl

#: HubSpot's own contact properties, by the label its export writes as the header.
RECORD_ID = "Record ID"
OPT_OUT = "Unsubscribed from all email"

HUBSPOT = Dialect(
    name="hubspot",
    template="hubspot-import",
    description="HubSpot contacts export (view or list, CSV, English property labels)",
    delimiter=",",
    aliases={
        "email": ("Email",),
        "first_name": ("First Name",),
        "last_name": ("Last Name",),
        "segment_code": ("Segment",),
        "opt_out": (OPT_OUT,),
    },
    # The checkbox's internal values and its labels; most contacts leave it empty.
    opt_out_true=frozenset({"true", "yes"}),
    opt_out_false=frozenset({"false", "no", ""}),
)

#: The return file's columns: HubSpot's identifiers, then the listferry properties, each
#: header the label of a custom property so the importer maps it without help.
COLUMNS = (
    RECORD_ID,
    "Email",
    "Listferry opted out",
    "Listferry opted out date",
    "Listferry open count",
    "Listferry click count",
    "Listferry last open date",
    "Listferry last click date",
    "Listferry topics",
)

#: One record per contact, the header written as it is (no label needs quoting).
ROWS = """
{% for row in rows %}
{{ [row["fields.Record ID"], row.email, row.opted_out, row.opted_out_at, row.open_count,
    row.click_count, row.last_open, row.last_click, row.topics]
   | csv_row(true="true", false="false", join=";", date="%Y-%m-%d") }}
{% endfor %}
"""

IMPORT_FILE = Template(
    source=",".join(COLUMNS) + ROWS,
    suffix=".csv",
    newline="\r\n",
    fields=(
        "email",
        f"fields.{RECORD_ID}",
        "opted_out",
        "opted_out_at",
        "open_count",
        "click_count",
        "last_open",
        "last_click",
        "topics",
    ),
    description="HubSpot contact import: Record ID, Email and the Listferry properties",
)


@hookimpl
def register_dialects(register: Any) -> None:
    register(HUBSPOT)


@hookimpl
def register_templates(register: Any) -> None:
    register("hubspot-import", IMPORT_FILE)
