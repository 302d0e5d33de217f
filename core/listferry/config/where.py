"""Where a config error is, in the one wording every config error uses:
``FILE line N: [table] key problem``, and ``unknown key 'x' (did you mean 'y'?)``."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path

from listferry.errors import ConfigError


def line_of(text: str, table: str, key: str | None = None) -> int | None:
    """The line of ``key`` in ``[table]`` (or of the table header), counting from 1."""
    header = re.compile(
        r"^\s*\[\s*" + r"\s*\.\s*".join(map(re.escape, table.split("."))) + r"\s*\]"
    )
    in_table = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("["):
            in_table = bool(header.match(line))
            if in_table and key is None:
                return number
            continue
        if in_table and key and re.match(rf"^\s*\"?{re.escape(key)}\"?\s*=", line):
            return number
    return None


def place(path: Path, line: int | None) -> str:
    """``FILE line N``, or ``FILE`` when the line is not known."""
    return f"{path} line {line}" if line else str(path)


def without_place(message: str, path: Path) -> str:
    """``message`` without the ``FILE line N: `` that :func:`place` put first."""
    return re.sub(rf"^{re.escape(str(path))}( line \d+)?: ", "", message)


def where(path: Path, text: str, table: str, key: str | None = None) -> str:
    """``FILE line N: [table] key``: where a config error is, for its message."""
    return f"{place(path, line_of(text, table, key))}: [{table}]" + (f" {key}" if key else "")


def key_error(path: Path, text: str, table: str, key: str, problem: str) -> ConfigError:
    """``FILE line N: [table] key problem``."""
    return ConfigError(f"{where(path, text, table, key)} {problem}")


def not_a_table(path: Path, table: str, line: int | None = None) -> ConfigError:
    """``FILE line N: table must be a table ([table])``."""
    return ConfigError(f"{place(path, line)}: {table} must be a table ([{table}])")


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """``did you mean 'x'?`` for the known name closest to ``name``, if one is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]!r}?" if close else None


def unknown_key(path: Path, text: str, table: str, name: str, known: Iterable[str]) -> ConfigError:
    """``FILE line N: [table] unknown key 'x' (did you mean 'y'?)``, or the known keys."""
    known = list(known)
    hint = did_you_mean(name, known) or f"known: {', '.join(known)}"
    return ConfigError(
        f"{place(path, line_of(text, table, name))}: [{table}] unknown key {name!r} ({hint})"
    )
