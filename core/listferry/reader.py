"""Readers, as the host sees them: a list file in, batches of records out."""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from listferry.dialect import Dialect
from listferry.errors import Void
from listferry.records import FileInfo, Invalid, Record
from listferry.text import size_text

BATCH_SIZE = 5000


class RecordSource(Protocol):
    """An open list file. ``info`` is known once the header has been read."""

    info: FileInfo

    @property
    def bytes_read(self) -> int:
        """How far into the file the reader is, for progress bars."""

    def batches(self, size: int = BATCH_SIZE) -> Iterator[tuple[list[Record], list[Invalid]]]:
        """Yield the records in batches, each with the rows the reader itself rejected.

        The reader counts every data record it yields or rejects; when the iterator is
        exhausted, ``records_read`` holds that number.
        """

    @property
    def records_read(self) -> int:
        """Data records read so far (header excluded; one per record, not per line)."""


class ListReader(Protocol):
    """A reader for one file format, registered through ``register_readers``.

    A reader that only changes what another reader gives (leaves out a footer, say)
    names that reader as ``base`` and implements ``wrap(source, path, name, dialect)``
    instead of ``open``: the host opens the file with the base reader and hands its
    :class:`RecordSource` to ``wrap``, which returns the source to read from (a
    :class:`WrappedSource` keeps the rest as the base reader gave it).
    """

    name: str

    def open(self, path: Path, name: str, dialect: Dialect) -> AbstractContextManager[RecordSource]:
        """Open ``path`` (received as ``name``), read its header, and return the source.

        Raise :class:`listferry.Void` when the file cannot be read at all (not text in
        any encoding the dialect allows, no header, a broken quote), naming the line.
        ``info.warnings`` tell the operator and the customer what the file says that may
        not be read as meant: ``dialect.opt_out_warnings(header)`` at least.
        """


class WrappedSource:
    """A :class:`RecordSource` that gives what the one it wraps gives; a wrapping reader
    subclasses it and changes ``info`` or :meth:`batches`. Closing it closes the other."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.info: FileInfo = source.info

    @property
    def bytes_read(self) -> int:
        return self.source.bytes_read

    @property
    def records_read(self) -> int:
        return self.source.records_read

    def batches(self, size: int = BATCH_SIZE) -> Iterator[tuple[list[Record], list[Invalid]]]:
        return self.source.batches(size)

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> WrappedSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_list(readers: Any, path: Path, name: str, dialect: Dialect) -> Any:
    """``path`` (received as ``name``) opened with ``dialect``'s reader from ``readers``
    (a registry), through the reader it wraps when it names a ``base``."""
    reader = readers.get(dialect.reader)
    base = getattr(reader, "base", None)
    if base is None:
        return reader.open(path, name, dialect)
    if base == reader.name:
        raise Void(f"reader {reader.name!r} names itself as its base")
    source = open_list(readers, path, name, replace(dialect, reader=base))
    try:
        return reader.wrap(source, path, name, dialect)
    except BaseException:
        source.close()
        raise


# -- limits ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadLimits:
    """What a run lets a list cost: ``max_bytes`` of it read (a compressed list's bytes as
    they unpack), and ``check``, called as the bytes are read, which raises to stop the
    run (its deadline)."""

    max_bytes: int | None = None
    check: Callable[[], None] | None = None


NO_LIMITS = ReadLimits()
_LIMITS: ContextVar[ReadLimits | None] = ContextVar("listferry_read_limits", default=None)


@contextmanager
def read_limits(limits: ReadLimits) -> Iterator[None]:
    """Every list opened with :func:`open_list_bytes` in this block keeps to ``limits``."""
    token = _LIMITS.set(limits)
    try:
        yield
    finally:
        _LIMITS.reset(token)


def too_large(name: str, limit: int, size: int | None = None, unpacks: bool = False) -> Void:
    """The void of a list past ``max_list_size`` (``size`` bytes, when known)."""
    amount = size_text(size) if size is not None else f"more than {size_text(limit)}"
    return Void(
        f"{name} {'unpacks to' if unpacks else 'is'} {amount}; a list may be at most "
        f"{size_text(limit)} (max_list_size), so it was not taken"
    )


# -- compressed lists ------------------------------------------------------------------


class _Counting(io.RawIOBase):
    """A binary file that counts the bytes read from it (the compressed ones, for a .gz)."""

    def __init__(self, f: BinaryIO, name: str = "", limits: ReadLimits = NO_LIMITS) -> None:
        self._f = f
        self.count = 0
        self._name = name
        self._limit = limits.max_bytes
        self._check = limits.check

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._check is not None:
            self._check()
        n = self._f.readinto(buffer)  # type: ignore[attr-defined]
        self.count += n or 0
        if self._limit is not None and self.count > self._limit:
            raise too_large(self._name, self._limit)
        return n or 0

    def seekable(self) -> bool:
        return True  # a zip's directory is at its end

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()
        super().close()


class _Unpacked(io.RawIOBase):
    """The decompressed bytes; a damaged archive is a :class:`Void` naming the file."""

    def __init__(
        self, f: BinaryIO, name: str, kind: str, also: Any = None, limit: int | None = None
    ) -> None:
        self._f, self._name, self._kind, self._also = f, name, kind, also
        self._limit = limit
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._f.read(len(buffer))
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
            raise Void(f"{self._name}: the {self._kind} data is damaged: {exc}") from None
        self.count += len(data)
        if self._limit is not None and self.count > self._limit:
            raise too_large(self._name, self._limit, unpacks=True)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._f.close()
        if self._also is not None:
            self._also.close()
        super().close()


def open_list_bytes(path: Path, name: str) -> tuple[BinaryIO, _Counting]:
    """The list's bytes, and a counter of what was read of ``path`` itself.

    ``name.gz`` is decompressed as it is read; ``name.zip`` must hold one file (folders
    and macOS resource forks aside), read the same way. Anything else is read as it is.
    Both keep to the :class:`ReadLimits` of the :func:`read_limits` block they are in.
    """
    limits = _LIMITS.get() or NO_LIMITS
    raw = _Counting(path.open("rb"), name, limits)
    lowered = name.lower()
    try:
        if lowered.endswith(".gz"):
            head = raw._f.peek(2)[:2] if hasattr(raw._f, "peek") else b""
            if head and head != b"\x1f\x8b":
                raise Void(f"{name}: not a gzip file (it does not start as one)")
            stream = gzip.GzipFile(fileobj=io.BufferedReader(raw), mode="rb")
            unpacked = _Unpacked(stream, name, "gzip", limit=limits.max_bytes)
            return io.BufferedReader(unpacked), raw
        if lowered.endswith(".zip"):
            try:
                archive = zipfile.ZipFile(io.BufferedReader(raw))
            except (zipfile.BadZipFile, OSError) as exc:
                raise Void(f"{name}: not a zip file: {exc}") from None
            members = [
                m
                for m in archive.infolist()
                if not m.is_dir()
                and not m.filename.startswith("__MACOSX/")
                and not m.filename.rsplit("/", 1)[-1].startswith(".")
            ]
            if len(members) != 1:
                archive.close()
                raise Void(
                    f"{name}: a zipped list must hold exactly one file; this one holds "
                    f"{len(members)}"
                )
            if limits.max_bytes is not None and members[0].file_size > limits.max_bytes:
                archive.close()
                raise too_large(name, limits.max_bytes, members[0].file_size, unpacks=True)
            if members[0].flag_bits & 0x1:
                archive.close()
                raise Void(f"{name}: the zip is password-protected")
            try:
                member = archive.open(members[0])
            except (zipfile.BadZipFile, NotImplementedError, OSError) as exc:
                archive.close()
                raise Void(f"{name}: cannot read {members[0].filename} in the zip: {exc}") from None
            unpacked = _Unpacked(member, name, "zip", archive, limits.max_bytes)
            return io.BufferedReader(unpacked), raw
    except BaseException:
        raw.close()
        raise
    return io.BufferedReader(raw), raw
