"""Where a tenant may go, and how an upload lands.

A tenant's home is its ``/`` and nothing reaches outside it (:func:`jail`), nor is any
name with a control character in it made or used there; an upload is written under a
hidden name and takes its real name only when complete (:func:`upload_temp_name`), so
the sync never reads half a file.
"""

from __future__ import annotations

import os
import posixpath
import re
import secrets
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from listferry.config import Tenant
from listferry.serve.log import event, log

#: How deep below a home, and over how many entries in all, a walk of the home goes:
#: nothing a tenant makes in its home (folders nested thousands deep, millions of
#: files) can stop ``serve`` from starting or keep it walking.
WALK_DEPTH = 64
WALK_ENTRIES = 100_000


class OutsideHome(PermissionError):
    """A path that would leave the tenant's home, or is not a plain path at all."""


class BadName(OutsideHome):
    """A path with a control character in it (a line break, NUL, ESC, BEL...): no list,
    report or folder may be named so, and no log line may show one raw."""


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a control character (Unicode's Cc: C0, DEL and C1)."""
    return any(unicodedata.category(c) == "Cc" for c in text)


def jail(home: Path, path: str, cwd: str = "/") -> Path:
    """The real path of the client's ``path`` (relative to ``cwd``) inside ``home``.

    The home is ``/``. ``..`` stops at the home, control characters (:class:`BadName`)
    and backslashes are refused, and a symlink that leads outside the home is refused
    wherever it is in the path. The refusal's message shows the path escaped.
    """
    if has_control_character(path) or has_control_character(cwd):
        raise BadName(f"{path!r}: a name with a control character is not allowed")
    if "\\" in path or "\\" in cwd:
        raise OutsideHome(f"{path!r} is not a plain path")
    virtual = posixpath.normpath(posixpath.join("/", cwd, path))
    root = os.path.realpath(home)
    real = os.path.realpath(os.path.join(root, virtual.lstrip("/")))
    if real != root and not real.startswith(root + os.sep):
        raise OutsideHome(f"{path!r} is outside the home")
    return Path(real)


def virtual(home: Path, real: Path) -> str:
    """The client's view of ``real``: a path from ``/``, the tenant's home."""
    relative = os.path.relpath(real, os.path.realpath(home))
    return "/" if relative == "." else "/" + relative


def upload_temp_name(name: str) -> str:
    """A hidden name for an upload in progress; the sync never reads hidden files."""
    return f".{name}.{secrets.token_hex(6)}.part"


_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{12}\.part")


def is_upload_in_progress(name: str) -> bool:
    return name.startswith(".") and name.endswith(".part")


def walk_files(
    home: Path, depth: int = WALK_DEPTH, entries: int = WALK_ENTRIES
) -> Iterator[os.DirEntry[str]]:
    """The files under ``home``, found with a stack of folders, never by recursion.

    Symbolic links are never followed (nor given); folders more than ``depth`` below
    the home are not entered, and the walk ends after ``entries`` entries; each is logged
    once. A folder that cannot be read is logged and skipped.
    """
    stack = [(str(home), 0)]
    seen = 0
    deep = False
    while stack:
        folder, level = stack.pop()
        try:
            with os.scandir(folder) as listing:
                for entry in listing:
                    seen += 1
                    if seen > entries:
                        log.warning(
                            "%s: walked %d entries and stopped; the rest is not looked at",
                            home,
                            entries,
                        )
                        return
                    if entry.is_dir(follow_symlinks=False):
                        if level < depth:
                            stack.append((entry.path, level + 1))
                        elif not deep:
                            deep = True
                            log.warning(
                                "%s: folders more than %d deep are not looked at", home, depth
                            )
                    elif entry.is_file(follow_symlinks=False):
                        yield entry
        except OSError as exc:
            where = os.path.relpath(folder, home)
            log.warning("%s: cannot read the folder %r, skipped: %s", home, where, exc.strerror)


def remove_stale_uploads(tenants: dict[str, Tenant]) -> None:
    """Remove what uploads cut off by a killed server left under their temp names.

    Called before the servers start, when no upload of this process is under way: a
    temp name then holds only part of a file that no client saw completed. The walk is
    bounded (:func:`walk_files`), so a home full of folders cannot stop the start.
    """
    for tenant in tenants.values():
        if not tenant.is_local:
            continue
        home = Path(tenant.home)
        for entry in walk_files(home):
            if _TEMP_NAME.fullmatch(entry.name):
                path = Path(entry.path)
                path.unlink(missing_ok=True)
                event(
                    "upload",
                    tenant=tenant.name,
                    file=str(path.relative_to(home)),
                    result="removed",
                    reason="cut off when the server stopped",
                )
