"""WildApricot: its contact export in, a file for its contact import out.

Reads the CSV that WildApricot writes from Contacts > List > Export (dialect
``wildapricot``): ``Email`` is the address, ``First name`` and ``Last name`` the names,
``Membership level`` the segment, and ``Subscribed to emails`` the contact's consent,
read the other way round: ``No`` is an opt-out, ``Yes`` or empty is not. Every other
column, ``User ID`` first, is kept in ``fields`` under its header.

Writes ``wildapricot-import``: a CSV that Contacts > Import takes as it is. WildApricot
matches each row to its contact by ``User ID`` (then ``Email``), sets ``Subscribed to
emails`` to ``No`` for an opt-out and leaves it alone otherwise (an empty cell changes
nothing), and fills six contact fields the customer creates for engagement. UTF-8 with a
byte-order mark, commas, CRLF, dates as ``YYYY-MM-DD`` (UTC).
"""

from __future__ import annotations

from typing import Any

from listferry import DEFAULT_ALIASES, Dialect, Template, hookimpl

#: The engagement columns of the return file: contact fields the customer creates in
#: WildApricot (Contacts > Settings > Contact fields) under exactly these names.
ENGAGEMENT_FIELDS = (
    "Listferry opted out on",
    "Listferry opens",
    "Listferry clicks",
    "Listferry last open",
    "Listferry last click",
    "Listferry topics",
)

WILDAPRICOT = Dialect(
    name="wildapricot",
    template="wildapricot-import",
    description="WildApricot contact export (Contacts > List > Export, CSV)",
    delimiter=",",
    aliases={
        **DEFAULT_ALIASES,
        "segment_code": ("membership level",),
        "opt_out": ("subscribed to emails",),
    },
    # The column says whether the contact is subscribed: "No" is the opt-out. An empty
    # cell is the default, which WildApricot treats as subscribed.
    opt_out_true=frozenset({"no", "false", "0"}),
    opt_out_false=frozenset({"yes", "true", "1", ""}),
    required=("email", "opt_out"),
)

#: The return file's header: WildApricot's own field names, then the engagement fields.
HEADER = ("User ID", "Email", "Subscribed to emails", *ENGAGEMENT_FIELDS)

IMPORT = (
    ",".join(HEADER)
    + """
{% for row in rows %}
{{ [row["fields.User ID"], row.email, row.opted_out, row.opted_out_at, row.open_count,
    row.click_count, row.last_open, row.last_click, row.topics]
   | csv_row(true="No", false="", date="%Y-%m-%d", join="; ") }}
{% endfor %}
"""
)


@hookimpl
def register_dialects(register: Any) -> None:
    register(WILDAPRICOT)


@hookimpl
def register_templates(register: Any) -> None:
    register(
        "wildapricot-import",
        Template(
            IMPORT,
            suffix=".csv",
            newline="\r\n",
            encoding="utf-8-sig",
            fields=(
                "fields.User ID",
                "email",
                "opted_out",
                "opted_out_at",
                "open_count",
                "click_count",
                "last_open",
                "last_click",
                "topics",
            ),
            description="CSV for WildApricot's contact import: User ID, opt-outs, engagement",
        ),
    )
