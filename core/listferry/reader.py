"""Readers, as the host sees them: a list file in, batches of records out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from listferry.dialect import Dialect
from listferry.records import FileInfo, Invalid, Record

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
    """A reader for one file format, registered through ``register_readers``."""

    name: str

    def open(self, path: Path, name: str, dialect: Dialect) -> AbstractContextManager[RecordSource]:
        """Open ``path`` (received as ``name``), read its header, and return the source.

        Raise :class:`listferry.Void` when the file cannot be read at all (not text in
        any encoding the dialect allows, no header, a broken quote), naming the line.
        """
