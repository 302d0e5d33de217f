"""The ``file`` transport: a tenant home that is a folder on this machine.

Names must be plain file names at the top of the home. Hidden files (a leading dot)
are uploads still under way and are never listed. Fetching hard-links the file into
the run's work folder when it can (no copy, and a newer upload that replaces the name
leaves the run's copy untouched), and copies it otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from listferry import ListferryError, hookimpl
from listferry.names import is_under_way
from listferry.transport import Endpoint, RemoteFile, plain_name


class FileTransport:
    """A tenant home on the local file system."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.home = Path(endpoint.location)

    def _path(self, name: str) -> Path:
        return self.home / plain_name(name)

    def list(self) -> list[RemoteFile]:
        try:
            entries = list(os.scandir(self.home))
        except FileNotFoundError:
            raise ListferryError(f"the home folder {self.home} does not exist") from None
        files = []
        for entry in entries:
            if is_under_way(entry.name):
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
            files.append(RemoteFile(entry.name, stat.st_size, stat.st_mtime))
        return files

    def fetch(self, name: str, dest: Path) -> RemoteFile:
        source = self._path(name)
        before = source.stat(follow_symlinks=False)
        dest.unlink(missing_ok=True)
        try:
            os.link(source, dest, follow_symlinks=False)
            same = dest.stat().st_ino == before.st_ino
        except OSError:
            shutil.copyfile(source, dest, follow_symlinks=False)
            after = source.stat(follow_symlinks=False)
            same = (after.st_ino, after.st_size, after.st_mtime_ns) == (
                before.st_ino,
                before.st_size,
                before.st_mtime_ns,
            )
        if not same:
            dest.unlink(missing_ok=True)
            raise ListferryError(f"{name} was replaced while it was being fetched")
        return RemoteFile(name, before.st_size, before.st_mtime)

    def put(self, source: Path, name: str) -> None:
        target = self._path(name)
        fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=self.home)
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as data:
                shutil.copyfileobj(data, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def remove(self, name: str, expected: RemoteFile) -> bool:
        path = self._path(name)
        try:
            stat = path.stat(follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.st_size != expected.size or stat.st_mtime != expected.mtime:
            return False
        path.unlink()
        return True

    def close(self) -> None:
        pass


@hookimpl
def register_transports(register: Any) -> None:
    register("file", FileTransport)
