"""Transports, as the host sees them: a tenant's home, wherever it is."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol

from listferry.errors import ListferryError


class RemoteFile(NamedTuple):
    """A file at the top of a tenant's home: its name, size in bytes and mtime (epoch s)."""

    name: str
    size: int
    mtime: float


class Transport(Protocol):
    """A connection to one tenant's home, made by the factory a plugin registers.

    Names are plain file names at the top of the home; a transport refuses anything
    else. Files whose upload is still under way (hidden temporary names) are not
    listed. Every write is atomic: the data goes to a temporary name first.

    A transport need not tell a file still being written in place from a finished one:
    the host lists a home that is not a local folder twice, the tenant's
    ``stable_seconds`` apart, and takes only files that did not change in between (see
    :func:`listferry.sync.select.select`). Network faults are the transport's to retry; what
    it cannot do it raises as a :class:`listferry.ListferryError` in plain words.

    The export opens one the same way on the folder a return file goes to (the home's
    ``outbox/``, or the tenant's ``export_to``), passing that folder or URL as the home,
    and only calls :meth:`put` and :meth:`close` on it.
    """

    def list(self) -> list[RemoteFile]:
        """The completed files at the top of the home."""

    def fetch(self, name: str, dest: Path) -> RemoteFile:
        """Copy ``name`` to the local path ``dest`` whole, and say what was copied.

        A fetch that cannot copy every byte raises; the host reads ``dest`` only after a
        fetch returned.
        """

    def put(self, source: Path, name: str) -> None:
        """Store the local file ``source`` in the home as ``name``, atomically.

        A transport may also take ``progress``, a callable given the bytes sent so far
        (``listferry push`` draws a bar with it on a terminal); the built-in ``sftp``
        and ``ftp``/``ftps`` transports do.
        """

    def remove(self, name: str, expected: RemoteFile) -> bool:
        """Delete ``name`` if it is still the file ``expected``; true when deleted.

        A newer upload under the same name is left for the next run.
        """

    def close(self) -> None:
        """Release the connection."""


def plain_name(name: str) -> str:
    """Refuse anything but a plain file name: no folders, no ``..``, no hidden names.

    Every transport checks the names it is given with this, whatever its protocol.
    """
    if (
        not name
        or name in (".", "..")
        or name.startswith(".")
        or any(c in name for c in "/\\\0\r\n")
        or name != name.strip()
    ):
        raise ListferryError(f"{name!r} is not a plain file name")
    return name
