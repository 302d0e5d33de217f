"""Return-file templates, as plugins register them: jinja2 text and how to write it out.

Rendering is :mod:`listferry.export.render`'s; this module holds only the value, so a
plugin that registers a template, and the config check that looks its name up, load no
jinja2.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Any

from listferry.errors import ListferryError

#: The line endings a template may ask for.
NEWLINES = ("\n", "\r\n", "\r")


@dataclass(frozen=True)
class Template:
    """A return-file template, as a plugin registers it.

    ``source`` is jinja2 text; ``suffix`` the file name's ending (``.csv``); ``newline``
    the line ending every line break of the source becomes (``"\\r\\n"`` for CSV).
    ``fields`` are data points the template reads by name whatever the tenant's
    ``export_fields`` say (a CRM pack's fixed columns): they are added to the rows.
    ``encoding`` is the file's: ``"utf-8-sig"`` starts it with a byte-order mark (what
    Excel-based importers look for), ``"cp1252"`` suits an importer that reads the
    Windows code page; a character the encoding cannot hold fails the export, naming it.
    ``match_on`` names the fields a CRM's importer matches its records on (its own
    record id): a subscriber with none of them filled in is left out of the file and its
    count (an importer would make a new record of it, or refuse the row), and goes in a
    later file once a list has brought its id.
    """

    source: str
    suffix: str = ".txt"
    newline: str = "\n"
    fields: tuple[str, ...] = ()
    description: str = ""
    encoding: str = "utf-8"
    match_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"template encoding {self.encoding!r} is not known") from None
        if self.newline not in NEWLINES:
            raise ValueError(f"template newline must be one of {NEWLINES!r}")
        if not self.suffix.startswith(".") or "/" in self.suffix or "\\" in self.suffix:
            raise ValueError(f"template suffix {self.suffix!r} must look like '.csv'")


class TemplateError(ListferryError):
    """A return-file template could not be compiled or rendered; nothing was delivered."""


def as_template(name: str, item: Any) -> Template:
    """What a plugin registered, as a :class:`Template` (plain source gets ``.txt``)."""
    if isinstance(item, Template):
        return item
    if isinstance(item, str):
        return Template(source=item)
    raise ListferryError(f"template {name!r} is neither jinja2 text nor a listferry.Template")
