"""Config keys declared once, on the dataclasses that hold their values.

A key is a dataclass field made with :func:`setting`: its default, its check (from
:mod:`listferry.config.checks`), its meaning (the operator guide's tables are generated
from it) and, for a key the starter config shows, its short comment. :func:`keys_of`
reads them back, so the key tables, the defaults a table fills in, the docs and the
starter config all come from the same declaration.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from listferry.config.checks import Check
from listferry.config.where import key_error, unknown_key

_KEY = "listferry_key"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a key its table must set (``[notify.email] smtp_host``).
REQUIRED: Any = _Required()


def as_attribute(value: Any) -> Any:
    """A TOML value as a dataclass holds it: a list as a tuple."""
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class Key:
    """One config key, as :func:`setting` declared it."""

    #: The key's name in TOML.
    name: str
    #: The dataclass attribute that holds its value (``from`` is held as ``sender``).
    attribute: str
    #: The value when the table does not set it, as TOML has it (a list, not a tuple);
    #: :data:`REQUIRED` when the table must set it.
    default: Any
    check: Check
    #: What the key means, for the operator guide (Markdown).
    doc: str
    #: The comment beside the key in the starter config, if it shows the key.
    comment: str | None
    #: How the operator guide shows the default, when not as the TOML value.
    shown_default: str | None
    #: The attribute's value for the key's TOML value.
    convert: Callable[[Any], Any]
    #: A folder or file name, relative to the config file's folder (unless a URL).
    path: bool

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def value(self, given: Mapping[str, Any]) -> Any:
        """The attribute's value: the key's from the checked TOML values ``given``, else
        its default."""
        return self.convert(given.get(self.name, self.default))


def setting(
    default: Any,
    check: Check,
    doc: str,
    comment: str | None = None,
    shown_default: str | None = None,
    *,
    toml: str | None = None,
    hidden: bool = False,
    convert: Callable[[Any], Any] = as_attribute,
    path: bool = False,
    worked_out: bool = False,
) -> Any:
    """A dataclass field that is a config key (see :class:`Key` for the arguments).

    ``default`` is the TOML value the key has when the table does not set it; the
    dataclass default is that value through ``convert`` (a list becomes a tuple).
    :data:`REQUIRED`, or ``worked_out`` (a value the config works out when it is read,
    such as a tenant's home), leave the dataclass without a default. ``toml`` is the
    key's name when it differs from the attribute's; a ``hidden`` key (a secret, a long
    list of keys) is left out of the dataclass's repr.
    """
    key = Key(
        name=toml or "",
        attribute="",
        default=default,
        check=check,
        doc=doc,
        comment=comment,
        shown_default=shown_default,
        convert=convert,
        path=path,
    )
    metadata = {_KEY: key}
    if default is REQUIRED or worked_out:
        return dataclasses.field(repr=not hidden, metadata=metadata)
    return dataclasses.field(default=convert(default), repr=not hidden, metadata=metadata)


@functools.cache
def keys_of(cls: type) -> Mapping[str, Key]:
    """The keys ``cls`` declares with :func:`setting`, by TOML name, in field order."""
    keys = {}
    for field in dataclasses.fields(cls):
        if _KEY in field.metadata:
            declared = field.metadata[_KEY]
            name = declared.name or field.name
            keys[name] = dataclasses.replace(declared, name=name, attribute=field.name)
    return MappingProxyType(keys)


def key_table(keys: Mapping[str, Key]) -> dict[str, tuple[Any, Check]]:
    """``key -> (default, check)``, a required key's default ``None``."""
    return {name: (None if k.required else k.default, k.check) for name, k in keys.items()}


def attributes(keys: Iterable[Key], given: Mapping[str, Any]) -> dict[str, Any]:
    """The dataclass arguments for the checked TOML values ``given``: each key's value,
    or its default, under its attribute's name."""
    return {key.attribute: key.value(given) for key in keys}


def checked(
    text: str, path: Path, table: str, values: Mapping[str, Any], keys: Mapping[str, Key]
) -> dict[str, Any]:
    """``values``, a TOML table, when each of its keys is one of ``keys`` and each key's
    check takes its value; else the first unknown key or refused value as a
    :class:`ConfigError` naming its place."""
    for name, value in values.items():
        if name not in keys:
            raise unknown_key(path, text, table, name, keys)
        problem = keys[name].check(value)
        if problem:
            raise key_error(path, text, table, name, problem)
    return dict(values)
