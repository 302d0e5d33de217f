"""Changes to the config file's tenant tables that keep its comments and layout (tomlkit).

A comment block directly above a table's header (no blank line between) belongs to that
table; the comments at the end of a table, after its last key, lead into whatever comes
next. So a new key goes after the table's last key, before those comments; a list
changed by adding and taking out items keeps the lines of the items that stay; a removed
table takes the block above its header along and leaves its closing comments in place;
a new table goes after the last tenant, above the comments that led on from it.

Each change is made twice: on the tomlkit document, and on the plain data the file must
mean afterwards. :func:`render` compares the two, so a layout tomlkit cannot edit
faithfully (a tenant spread over dotted keys, say) is refused instead of written wrong.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Array, Comment, InlineTable, Item, Null, Table, Whitespace

from listferry.config.settings import load_config
from listferry.errors import ConfigError

#: Passed as a value to :meth:`TenantTables.set`: remove the key from the tenant's table.
UNSET = object()


def _refused(path: Path) -> ConfigError:
    return ConfigError(
        f"{path}: the tenants are written in a form this command cannot change "
        "safely (dotted keys, inline tables); edit the file by hand"
    )


def _refusing_what_tomlkit_refuses(method: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(method)
    def edit(self: TenantTables, *args: Any) -> None:
        try:
            method(self, *args)
        except (TOMLKitError, ValueError):  # a layout tomlkit will not change
            raise _refused(self.path) from None

    return edit


class TenantTables:
    """The config's text, open for changes to ``[tenants.NAME]`` tables."""

    def __init__(self, text: str, path: Path) -> None:
        self.path = path
        try:
            self.doc = tomlkit.parse(text)
        except TOMLKitError:
            raise _refused(path) from None
        self.data = tomllib.loads(text)  # what the file must mean once changed

    @_refusing_what_tomlkit_refuses
    def set(self, name: str, values: dict[str, Any]) -> None:
        """Set each key of tenant ``name`` to its value, or remove it (``UNSET``)."""
        table = self.doc["tenants"][name]
        plain = self.data["tenants"][name]
        inline = table.as_string() if isinstance(table, InlineTable) else None
        for key, value in values.items():
            if value is UNSET:
                if key in plain:
                    del table[key]
                    del plain[key]
            elif key in table and isinstance(table[key], Array) and _edit_list(table[key], value):
                plain[key] = value
            elif key in table or not isinstance(table, Table):
                table[key] = value
                plain[key] = value
            else:
                _append_key(table, key, value)
                plain[key] = value
        if inline is not None:
            self.doc["tenants"][name] = _tidy(table, inline)

    @_refusing_what_tomlkit_refuses
    def add(self, name: str, values: dict[str, Any]) -> None:
        """Add ``[tenants.NAME]`` with ``values`` after the last tenant (or at the end)."""
        new = tomlkit.table()
        for key, value in values.items():
            new.add(key, value)
        self.data.setdefault("tenants", {})[name] = values
        tenants = self.doc.get("tenants")
        if tenants is None:
            self.doc.add("tenants", tomlkit.table(is_super_table=True))
            self.doc["tenants"].append(name, new)
            return
        last = _last_table(tenants) if isinstance(tenants, Table) else None
        if last is None:
            tenants[name] = new  # tenants written some other way: tomlkit's own placing
            return
        body = last.value.body
        start = _closing(body)
        closing = body[start:]
        del body[start:]  # keyless items only: no key's index moves
        new.trivia.indent = "\n"
        tenants.append(name, new)
        new.value.body.extend(closing)

    @_refusing_what_tomlkit_refuses
    def remove(self, name: str) -> None:
        """Remove tenant ``name``'s table and the comment block directly above it."""
        del self.data["tenants"][name]
        found = _find(self.doc, ("tenants", name))
        if found is None:
            del self.doc["tenants"][name]
            return
        container, index, item = found
        for above, at in _comments_above(self.doc, item):
            above.body[at] = (None, Null())
        closing = ""
        if isinstance(item, Table):
            body = item.value.body
            closing = "".join(i.as_string() for _, i in body[_closing(body) :])
            closing = "\n".join(_drop_leading_blank_lines(closing.split("\n")))
        key = container.body[index][0]
        container.remove(key)
        if closing:
            container.body[index] = (None, Whitespace(closing))

    def render(self) -> str:
        """The changed text; refused when it would not mean exactly what was asked."""
        text = self.doc.as_string()
        try:
            meant = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            meant = None
        if meant is None or _no_empty_tenants(meant) != _no_empty_tenants(self.data):
            raise _refused(self.path)
        return text


def _no_empty_tenants(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without an empty ``tenants`` table: whether ``[tenants]`` is written alone
    or not at all means the same."""
    return {k: v for k, v in data.items() if k != "tenants" or v}


def _closing(body: list[tuple[Any, Item]]) -> int:
    """Where a table's closing lines (keyless: comments, blank lines) start in ``body``."""
    end = len(body)
    while end and body[end - 1][0] is None:
        end -= 1
    return end


def _drop_leading_blank_lines(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    return lines


def _edit_list(array: Array, new: Any) -> bool:
    """Make ``array`` hold ``new`` by taking items out and adding them at its end, so the
    lines and comments of the items that stay are kept; False when that cannot do it."""
    old = array.unwrap()
    if not isinstance(new, list) or len(set(map(repr, old))) < len(old):
        return False
    kept = [item for item in old if item in new]
    if new[: len(kept)] != kept:
        return False
    for index in reversed(range(len(old))):
        if old[index] not in new:
            del array[index]
    for item in new[len(kept) :]:
        array.append(item)
    return True


def _tidy(table: InlineTable, before: str) -> InlineTable:
    """``table`` laid out as it was written before it changed: ``{ a = 1, b = 2 }``, or
    ``{a=1, b=2}``, one space after each comma, not the stray spaces tomlkit leaves where
    keys were added or taken out. Each value keeps the form it was written in."""
    pad = " " if before.startswith("{ ") else ""
    equals = " = " if " = " in before or "=" not in before else "="
    items = [
        f"{key.as_string().strip()}{equals}{item.as_string().strip()}"
        for key, item in table.value.body
        if key is not None
    ]
    text = f"{{{pad}{', '.join(items)}{pad}}}" if items else "{}"
    return tomlkit.parse(f"t = {text}")["t"]


def _append_key(table: Table, key: str, value: Any) -> None:
    """Add ``key`` after the table's last key, above its closing comments."""
    body = table.value.body
    start = _closing(body)
    closing = body[start:]
    del body[start:]  # keyless items only: no key's index moves
    table.add(key, value)
    body.extend(closing)


def _last_table(tenants: Table) -> Table | None:
    """The last ``[tenants.NAME]`` table, when every tenant is a table of its own."""
    last = None
    for key, item in tenants.value.body:
        if key is None:
            continue
        if not isinstance(item, Table) or key.is_dotted():
            return None
        last = item
    return last


def _walk(container: Container, path: tuple[str, ...] = ()) -> Iterator[tuple]:
    """Every item in the order it is written: ``(container, index, path, item)``."""
    for index, (key, item) in enumerate(container.body):
        here = (*path, key.key) if key is not None else path
        yield container, index, here, item
        if isinstance(item, Table):
            yield from _walk(item.value, here)


def _find(doc: Container, path: tuple[str, ...]) -> tuple[Container, int, Item] | None:
    """Where the table (or inline table) at ``path`` is written, when it is in one piece."""
    found = [
        (container, index, item)
        for container, index, here, item in _walk(doc)
        if here == path and isinstance(item, Table | InlineTable)
    ]
    if len(found) != 1:
        return None
    container, index, _ = found[0]
    return None if container.body[index][0].is_dotted() else found[0]


def _comments_above(doc: Container, target: Item) -> list[tuple[Container, int]]:
    """The comment lines written directly above ``target`` (no blank line between)."""
    if isinstance(target, Table) and "\n" in target.trivia.indent:
        return []
    before: list[tuple[Container, int, Item]] = []
    for container, index, _, item in _walk(doc):
        if item is target:
            break
        before.append((container, index, item))
    found = []
    for container, index, item in reversed(before):
        if isinstance(item, Null) or (isinstance(item, Table) and item.is_super_table()):
            continue  # writes nothing
        if not isinstance(item, Comment):
            break
        found.append((container, index))
    return found


def toml_value(value: Any) -> str:
    """A TOML literal for the strings, numbers and string lists a tenant table holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


@contextlib.contextmanager
def config_locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the config file, so that two changes never interleave.

    The file is replaced on each change, so the lock is taken again when the file that
    was locked is no longer the one at ``path``.
    """
    while True:
        try:
            f = path.open("rb")
        except FileNotFoundError:
            load_config(path)  # says "no such config file" the way every command does
            raise
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                same = os.fstat(f.fileno()).st_ino == path.stat().st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield
                return


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old file or the new one.

    The new file keeps the old one's mode (and owner, where this process may set it).
    """
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, old.st_mode & 0o777 if old else 0o600)
        if old is not None:
            with contextlib.suppress(PermissionError):  # not root: the file stays this user's
                os.chown(temp, old.st_uid, old.st_gid)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
