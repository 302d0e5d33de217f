"""The values that flow through a sync run: records, the file being read, its summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from listferry.dialect import Dialect


class Record(NamedTuple):
    """One data record of a list file, already mapped to canonical fields.

    ``line`` is the physical line the record starts on (the header is line 1). Text
    fields are ``None`` when the file has no such column or the cell is empty.
    ``extra`` holds the values of the columns the dialect does not map, in the order
    of :attr:`FileInfo.extra_columns`.
    """

    line: int
    email: str
    first_name: str | None
    last_name: str | None
    segment_code: str | None
    opt_out: bool | None
    extra: tuple[str, ...]


class Invalid(NamedTuple):
    """A record that is skipped, and why (the reason names the rule)."""

    line: int
    reason: str


@dataclass(frozen=True)
class FileInfo:
    """A list file as the reader found it: what validators of the header and records see.

    ``path`` is a local copy the run owns; ``name`` is the name the customer gave it.
    ``columns`` maps each header, in file order, to its canonical field or ``None``.
    ``records`` is ``None`` until the whole file has been read. ``notes`` say what the
    reader did (a column kept aside, lines skipped); ``warnings`` what the file says that
    may not be read as meant (a column that looks like an opt-out flag the dialect does
    not read). ``check`` and the result report show both; neither voids the file.
    """

    path: Path
    name: str
    dialect: Dialect
    header: tuple[str, ...]
    columns: dict[str, str | None]
    extra_columns: tuple[str, ...]
    encoding: str
    delimiter: str
    count_file: Path | None = None
    count_policy: str = "optional"
    #: Who sets ``count_policy``, as a reason names it: "this tenant", or "the [defaults]"
    #: (plural) for ``listferry check`` without a tenant.
    count_policy_by: str = "this tenant"
    records: int | None = None
    invalid: int = 0
    notes: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())

    @property
    def canonical(self) -> frozenset[str]:
        """The canonical fields that this file has a column for."""
        return frozenset(c for c in self.columns.values() if c)
