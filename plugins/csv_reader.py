"""The CSV reader: the format almost every CRM exports.

Encoding: the dialect's, else UTF-16 or UTF-8 when a BOM says so, else UTF-8 when
the whole file decodes as UTF-8, else cp1252. Delimiter: the dialect's, else the one
among ``,`` ``;`` tab ``|`` that splits the first rows most consistently. CRLF or LF;
quoted fields may hold delimiters, newlines and doubled quotes.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

from listferry import Void, hookimpl
from listferry.dialect import Dialect
from listferry.records import FileInfo, Invalid, Record

DELIMITERS = (",", ";", "\t", "|")
SAMPLE_CHARS = 64 * 1024
CHUNK = 1 << 20
FIELD_LIMIT = 1 << 20
BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

csv.field_size_limit(FIELD_LIMIT)


def detect_encoding(path: Path) -> str:
    """UTF-16/UTF-8 by BOM, UTF-8 when every byte decodes as UTF-8, else cp1252."""
    with path.open("rb") as f:
        head = f.read(4)
        for bom, encoding in BOMS:
            if head.startswith(bom):
                return encoding
        f.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := f.read(CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252"
    return "utf-8"


def sniff_delimiter(sample: str, quotechar: str) -> str:
    """The candidate that gives the header most columns and the rows the same count."""
    lines = sample.splitlines(keepends=True)
    if len(sample) >= SAMPLE_CHARS and len(lines) > 1:
        lines = lines[:-1]  # the last line of a cut sample may be partial
    text = "".join(lines)
    best, best_score = ",", (0.0, 1)
    for delimiter in DELIMITERS:
        try:
            rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter,
                                          quotechar=quotechar) if r][:50]  # fmt: skip
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        body = rows[1:] or rows
        score = (sum(len(r) == width for r in body) / len(body), width)
        if score > best_score:
            best, best_score = delimiter, score
    return best


class _CountingReader(io.RawIOBase):
    """A binary file that remembers how many bytes were read from it."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._f.readinto(buffer)
        self.count += n or 0
        return n


class CsvSource:
    """One open CSV list file. Reads the header on open; records in :meth:`batches`."""

    def __init__(self, path: Path, name: str, dialect: Dialect) -> None:
        self.name = name
        self.dialect = dialect
        self.records_read = 0
        self._pending: list[list[str] | None] | None = None
        encoding = dialect.encoding or detect_encoding(path)
        self._raw = path.open("rb")
        self._counter = _CountingReader(self._raw)
        self._text = io.TextIOWrapper(
            io.BufferedReader(self._counter, CHUNK), encoding=encoding, newline=""
        )
        try:
            delimiter = dialect.delimiter or sniff_delimiter(
                self._sample(path, encoding), dialect.quotechar
            )
            self._rows = csv.reader(self._text, delimiter=delimiter, quotechar=dialect.quotechar)
            header = self._header()
        except BaseException:
            self.close()
            raise
        self.info = self._file_info(path, header, encoding, delimiter)

    def _sample(self, path: Path, encoding: str) -> str:
        with path.open(encoding=encoding, errors="replace", newline="") as f:
            return f.read(SAMPLE_CHARS)

    def _next_row(self) -> list[str] | None:
        if self._pending is not None:
            row, self._pending = self._pending[0], None
            return row
        try:
            return next(self._rows)
        except StopIteration:
            return None
        except UnicodeDecodeError as exc:
            raise Void(
                f"{self.name} line {self._rows.line_num + 1}: bytes that are not "
                f"{self._text.encoding} text ({exc.reason}); save the file as UTF-8"
            ) from None
        except csv.Error as exc:
            raise Void(
                f"{self.name} line {self._rows.line_num}: not readable as CSV: {exc}"
            ) from None

    def _header(self) -> list[str]:
        row = self._next_row()
        while row is not None and not any(cell.strip() for cell in row):
            row = self._next_row()
        if row is None:
            raise Void(f"{self.name}: the file is empty (no header line)")
        self._header_line = self._rows.line_num
        names: list[str] = []
        for index, cell in enumerate(row, start=1):
            name = cell.strip().lstrip("\ufeff") or f"column_{index}"
            unique, n = name, 2
            while unique in names:
                unique, n = f"{name}_{n}", n + 1
            names.append(unique)
        return names

    def _file_info(self, path: Path, header: list[str], encoding: str, delimiter: str) -> FileInfo:
        mapped = self.dialect.map_header(header)
        columns = {name: mapped.get(i) for i, name in enumerate(header)}
        taken: dict[str, int] = {}
        notes = []
        for index, canonical in sorted(mapped.items()):
            if canonical in taken:
                first = header[taken[canonical]]
                notes.append(
                    f"columns {first!r} and {header[index]!r} both mean {canonical}; "
                    f"using {first!r}"
                )
                columns[header[index]] = None
            else:
                taken[canonical] = index
        self._where = taken
        self._extra_index = [i for i, name in enumerate(header) if columns[name] is None]
        return FileInfo(
            path=path,
            name=self.name,
            dialect=self.dialect,
            header=tuple(header),
            columns=columns,
            extra_columns=tuple(header[i] for i in self._extra_index),
            encoding=encoding.replace("-sig", ""),
            delimiter=delimiter,
            notes=tuple(notes),
        )

    @property
    def bytes_read(self) -> int:
        return self._counter.count

    def batches(self, size: int = 5000) -> Iterator[tuple[list[Record], list[Invalid]]]:
        width = len(self.info.header)
        where = self._where
        email_at = where.get("email")
        cell = {
            field: (itemgetter(where[field]) if field in where else None)
            for field in ("first_name", "last_name", "segment_code", "opt_out")
        }
        first, last, segment, opt_out = (cell[f] for f in cell)
        extra_index = self._extra_index
        if len(extra_index) == 1:
            one = extra_index[0]

            def extra(row: list[str]) -> tuple[str, ...]:
                return (row[one],)
        elif extra_index:
            extra = itemgetter(*extra_index)
        else:

            def extra(row: list[str]) -> tuple[str, ...]:
                return ()

        dialect = self.dialect
        records: list[Record] = []
        invalid: list[Invalid] = []
        line = self._header_line
        while True:
            row = self._next_row()
            if row is None:
                break
            start, line = line + 1, self._rows.line_num
            if len(row) != width:
                if len(row) > width and not any(c.strip() for c in row[width:]):
                    row = row[:width]
                elif not any(c.strip() for c in row):
                    continue
                else:
                    self.records_read += 1
                    invalid.append(Invalid(start, self._width_problem(row, width, start, line)))
                    continue
            elif not any(c.strip() for c in row):
                continue
            self.records_read += 1
            opted: bool | None = None
            if opt_out is not None:
                word = opt_out(row)
                opted = dialect.opt_out_value(word)
                if opted is None:
                    invalid.append(Invalid(start, f"opt-out value {word.strip()!r} is not one of "
                                                  f"the dialect's words"))  # fmt: skip
                    continue
                if not word.strip():
                    opted = None
            records.append(
                Record(
                    start,
                    row[email_at].strip().lower() if email_at is not None else "",
                    (first(row).strip() or None) if first else None,
                    (last(row).strip() or None) if last else None,
                    (segment(row).strip() or None) if segment else None,
                    opted,
                    extra(row),
                )
            )
            if len(records) + len(invalid) >= size:
                yield records, invalid
                records, invalid = [], []
        if records or invalid:
            yield records, invalid

    def _width_problem(self, row: list[str], width: int, start: int, end: int) -> str:
        if end > start and self._peek() is None:
            raise Void(
                f"{self.name} line {start}: a quote opened on this line is never closed "
                f"(the rest of the file, to line {end}, would be one field)"
            )
        span = f" (lines {start}-{end}: check the quotes)" if end > start else ""
        return f"has {len(row)} fields, the header has {width}{span}"

    def _peek(self) -> list[str] | None:
        """The next row without consuming it (the following ``_next_row`` returns it)."""
        if self._pending is None:
            self._pending = [self._next_row()]
        return self._pending[0]

    def close(self) -> None:
        self._text.close()
        self._raw.close()

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CsvReader:
    """Reads CSV list files in any dialect that names ``csv`` as its reader."""

    name = "csv"

    def open(self, path: Path, name: str, dialect: Dialect) -> CsvSource:
        return CsvSource(path, name, dialect)


@hookimpl
def register_readers(register: Any) -> None:
    register(CsvReader())
