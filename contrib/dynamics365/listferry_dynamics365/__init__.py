"""Microsoft Dynamics 365 Sales / Customer Engagement: contact lists in, Import Data files out.

Reads (dialect ``dynamics365``): a contact view exported with *Export to Excel* (a static
worksheet, or an Advanced Find view) and saved from Excel as CSV, UTF-8 with a BOM
(*CSV UTF-8*) or the Windows code page (*CSV (Comma delimited)*), either found out from
the file. The headers are the columns' display names: ``Email``, ``First Name``,
``Last Name``; the opt-out is ``Do not allow Bulk Emails`` (``Bulk Email`` on the contact
form) with the option labels ``Do Not Allow`` and ``Allow``; any other word makes the row
invalid. Every other column is kept in ``fields`` under its header, the hidden record id
``(Do Not Modify) Contact`` among them.

Writes (template ``dynamics365-import``): a CSV for the Import Data wizard (*Import from
CSV*) into Contacts: UTF-8 with a BOM, comma-delimited, fields quoted with ``"`` where
needed, CRLF, an unquoted header of display names so the wizard maps every column by
itself. ``Contact`` carries the record id (the wizard updates the contact with that id),
``Email`` the address (for an alternate key on Email instead), ``Do not allow Bulk Emails``
the option labels, and the engagement goes to custom columns the customer creates (see
``docs/packs/dynamics365.md``). Dates are ``MM/DD/YYYY``, as an importing user with the
English (United States) date format reads them; ``dynamics365-import-dmy`` writes
``DD/MM/YYYY`` for users whose date format puts the day first.
"""

from __future__ import annotations

from typing import Any

from listferry import DEFAULT_ALIASES, Dialect, Template, hookimpl

#: The hidden column that Export to Excel writes with each contact's id (a GUID).
RECORD_ID = "(Do Not Modify) Contact"

DYNAMICS365 = Dialect(
    name="dynamics365",
    template="dynamics365-import",
    description="Dynamics 365 contacts: Export to Excel view saved as CSV (display-name headers)",
    aliases={
        **DEFAULT_ALIASES,
        "email": (*DEFAULT_ALIASES["email"], "primary email", "email address 1"),
        "opt_out": ("do not allow bulk emails", "bulk email"),
    },
    opt_out_true=frozenset({"do not allow"}),
    opt_out_false=frozenset({"allow", ""}),
)

#: The return file's columns: display names of contact columns and of the custom columns.
COLUMNS = (
    "Contact",
    "Email",
    "First Name",
    "Last Name",
    "Do not allow Bulk Emails",
    "Email Opt-Out Date",
    "Email Open Count",
    "Email Click Count",
    "Last Email Open",
    "Last Email Click",
    "Email Topics",
)

#: The export fields behind ``COLUMNS``, in the same order.
FIELDS = (
    f"fields.{RECORD_ID}",
    "email",
    "first_name",
    "last_name",
    "opted_out",
    "opted_out_at",
    "open_count",
    "click_count",
    "last_open",
    "last_click",
    "topics",
)


def import_template(date: str, description: str) -> Template:
    """The Import Data wizard's CSV, with dates in strftime ``date``."""
    values = ", ".join(f"row[{name!r}]" for name in FIELDS)
    source = (
        ",".join(COLUMNS)
        + "\n{% for row in rows %}\n{{ ["
        + values
        + "] | csv_row(true='Do Not Allow', false='Allow', join=', ', date='"
        + date
        + "') }}\n{% endfor %}\n"
    )
    return Template(
        source,
        suffix=".csv",
        newline="\r\n",
        fields=FIELDS,
        description=description,
        encoding="utf-8-sig",  # a byte-order mark, so the wizard reads accented names as UTF-8
        match_on=(f"fields.{RECORD_ID}",),  # without its id the wizard would make a new contact
    )


@hookimpl
def register_dialects(register: Any) -> None:
    register(DYNAMICS365)


@hookimpl
def register_templates(register: Any) -> None:
    register(
        "dynamics365-import",
        import_template(
            "%m/%d/%Y", "Dynamics 365 Import Data wizard CSV (contacts), dates MM/DD/YYYY"
        ),
    )
    register(
        "dynamics365-import-dmy",
        import_template(
            "%d/%m/%Y", "Dynamics 365 Import Data wizard CSV (contacts), dates DD/MM/YYYY"
        ),
    )
