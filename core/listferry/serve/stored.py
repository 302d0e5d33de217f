"""What the servers see of a home's files in storage (cluster mode), whatever the protocol.

A file of the home in storage is listed, stat'ed, read, removed and renamed through the
home (:class:`~listferry.serve.spool.SpooledHomes`) as a :class:`Stored` entry, whose
:meth:`Stored.stat` is what ``os.stat`` would say of a local file, so a server lists it
as it lists one. A read goes through a :class:`StoredFile`, a part at a time, never the
whole file in memory.

When storage does not answer, the operation raises :class:`StorageFault`, which is not
an ``OSError``: a server answers it as a fault that may pass (FTP ``451``, an SFTP
failure status, both saying :data:`UNAVAILABLE`), never as "no such file", and logs the
reason. :class:`Refused` (not an ``OSError`` either) is an operation the home in
storage does not do, with the reason the customer is told.
"""

from __future__ import annotations

import os
import stat
import time
import zlib
from dataclasses import dataclass, field
from typing import Protocol

#: The permissions a file or folder in storage shows (storage keeps none).
FILE_MODE, FOLDER_MODE = 0o640, 0o750
#: What a customer is told when storage did not answer (the log has the reason: the
#: storage's address and bucket are the operator's business).
UNAVAILABLE = "Storage is not available now; try again later"


class StorageFault(Exception):
    """Storage did not answer, or refused, a request for a file of the home; the message
    says why in one plain line (the place, the reason)."""


class Refused(Exception):
    """An operation on the home in storage that is not done; the message says why, for
    the customer."""


@dataclass(frozen=True)
class Stored:
    """A file or a folder of a home in storage: its path relative to the home, its size,
    time and ETag (a file), or ``folder``. A folder is there while a file is below it;
    storage keeps no time for one, so it shows the time it was listed."""

    name: str
    size: int = 0
    mtime: float = field(default_factory=time.time)
    etag: str = ""
    folder: bool = False

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def stat(self) -> os.stat_result:
        """What ``os.stat`` would give for it: a plain file or folder of this process's
        user, with :data:`FILE_MODE` or :data:`FOLDER_MODE`, and an inode number made
        from its name (FTP's ``unique`` fact)."""
        mode = stat.S_IFDIR | FOLDER_MODE if self.folder else stat.S_IFREG | FILE_MODE
        inode = zlib.crc32(self.name.encode("utf-8", "surrogateescape"))
        times = (self.mtime, self.mtime, self.mtime)
        return os.stat_result((mode, inode, 0, 1, os.getuid(), os.getgid(), self.size, *times))


class StoredFile(Protocol):
    """A file of a home in storage, open for reading (what a storehouse's ``open`` gives)."""

    size: int
    mtime: float

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``: fewer only where the file ends (none at
        or past its end). Raises :class:`~listferry.ListferryError` with one plain line
        when storage does not give them."""

    def close(self) -> None: ...


class StoredReader:
    """A :class:`StoredFile` as the servers read it: at an offset (SFTP), or on from where
    the last read ended (FTP, as a file object), a storage fault raised as
    :class:`StorageFault`."""

    def __init__(self, file: StoredFile, name: str) -> None:
        self.file = file
        self.name = name
        self.size = file.size
        self.mtime = file.mtime
        self.position = 0
        self.closed = False

    def read_at(self, offset: int, length: int) -> bytes:
        from listferry.errors import ListferryError

        try:
            return self.file.read(offset, length)
        except ListferryError as exc:
            raise StorageFault(str(exc)) from None

    def read(self, length: int) -> bytes:
        """The next ``length`` bytes at most (an FTP download reads on, 64 KB at a time;
        there is no reading the whole file at once)."""
        data = self.read_at(self.position, length)
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Where the next :meth:`read` starts (FTP's ``REST``)."""
        start = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.size}[whence]
        self.position = max(0, start + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.file.close()
