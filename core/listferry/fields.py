"""Return-file fields: the data points a return file can hold.

A :class:`Field` is an SQL expression that the export computes for every subscriber at
once, in the one query that reads the rows (never one query per subscriber), and the
kind of Python value a row holds for it. A :class:`FieldFamily` makes fields on demand
for names under a prefix, such as ``fields.<Column Name>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from listferry.errors import ListferryError
from listferry.registry import Registry
from listferry.times import parse_iso

#: ISO 8601 UTC to the second, as listferry stores times: read as it is.
CANONICAL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")

#: What a row holds for each kind: str, int or float, bool, a UTC datetime, a list of str.
KINDS = ("text", "number", "bool", "date", "list")


def to_datetime(value: Any) -> datetime | None:
    """ISO 8601 text from SQL as an aware UTC datetime (UTC when it names no zone)."""
    if value is None or value == "":
        return None
    if value.__class__ is str and CANONICAL.fullmatch(value):
        return datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    return parse_iso(str(value))


def same(value: Any) -> Any:
    """The SQL value as it is (numbers)."""
    return value


def _text(value: Any) -> str | None:
    return value if value is None or value.__class__ is str else str(value)


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _list(value: Any) -> list[Any]:
    return [] if value is None else list(json.loads(value))


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "text": _text,
    "number": same,
    "bool": _bool,
    "date": to_datetime,
    "list": _list,
}


@dataclass(frozen=True)
class Field:
    """One data point, computed in SQL for every exported subscriber in one query.

    ``sql`` is an expression over the export query, where ``s`` is the subscriber's row
    of the ``subscribers`` table. ``joins`` are the ``LEFT JOIN ... ON ... = s.email``
    clauses the expression reads from (an aggregate over ``events`` grouped by e-mail,
    say); a join written the same way by several fields is made once, so fields that
    share an aggregate share one join. Give a join's alias a name your plugin owns.

    ``kind`` says what the SQL gives and what a row then holds: ``text`` (str),
    ``number`` (int or float), ``bool`` (SQL 0/1 as ``False``/``True``), ``date`` (ISO 8601
    text as an aware UTC ``datetime``), ``list`` (a JSON array as a list). ``None`` (SQL
    ``NULL``) stays ``None``. ``convert``, when given, replaces the kind's conversion and
    is called once per row with the SQL value: keep it cheap.
    """

    sql: str
    kind: str = "text"
    description: str = ""
    joins: tuple[str, ...] = ()
    convert: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def converter(self) -> Callable[[Any], Any]:
        """The function that turns this field's SQL value into the row's value."""
        return self.convert or CONVERTERS[self.kind]


@dataclass(frozen=True)
class FieldFamily:
    """Fields named ``<prefix>.<anything>``, registered under the name ``<prefix>.*``.

    ``make(rest)`` returns the :class:`Field` for the part of the name after the prefix
    (``make("CRM Id")`` for ``fields.CRM Id``); it must accept any text, quoting it for
    SQL itself.
    """

    make: Callable[[str], Field]
    description: str = ""


def sql_text(value: str) -> str:
    """``value`` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def resolve_field(registry: Registry[Any], name: str) -> Field:
    """The field called ``name``: registered by that name, or made by a family's prefix."""
    family = next(
        (known for known in registry if known.endswith(".*") and name.startswith(known[:-1])),
        None,
    )
    if name in registry and family is None:
        item, owner = registry.get(name), registry.owner(name)
    elif family is not None and len(name) > len(family) - 1 and name != family:
        made = registry.get(family)
        owner = registry.owner(family)
        if not isinstance(made, FieldFamily):
            raise ListferryError(
                f"field {family!r} from plugin {owner!r} is not a listferry.fields.FieldFamily"
            )
        item = made.make(name[len(family) - 1 :])
    else:
        hint = f"; {family} stands for {family[:-1]}<name>" if family else ""
        raise ListferryError(
            f"unknown field {name!r} (known: {', '.join(registry) or 'none'}{hint})"
        )
    if not isinstance(item, Field):
        raise ListferryError(
            f"field {name!r} from plugin {owner!r} is not a listferry.fields.Field"
        )
    return item


def resolve_fields(registry: Registry[Any], names: Iterable[str]) -> dict[str, Field]:
    """The fields called ``names``, in order, each once."""
    return {name: resolve_field(registry, name) for name in names}
