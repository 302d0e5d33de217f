"""The CSV reader: the format almost every CRM exports.

Encoding: a BOM decides (UTF-8 or UTF-16), else the dialect's, else UTF-8 when the file
holds UTF-8 text beyond ASCII anywhere (or only ASCII), else cp1252; bytes the encoding
cannot decode void the file, naming the line and the byte. So a UTF-8 file with one line
pasted in from cp1252 is voided at that line, wherever it is, rather than read whole as
cp1252 (every "Änne" stored as "Ã„nne"), or read with that line dropped.
Delimiter: the dialect's, else the one an Excel ``sep=;`` first line names (that line is
skipped), else the one among ``,`` ``;`` tab ``|`` that splits the first rows most
consistently. CRLF, LF or CR; quoted fields may hold delimiters, newlines and
doubled quotes. Line numbers are physical lines (the header is line 1); a record that
spans lines has the line it starts on.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterator
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

from listferry import Void, hookimpl
from listferry.dialect import Dialect
from listferry.reader import open_list_bytes
from listferry.records import FileInfo, Invalid, Record

DELIMITERS = (",", ";", "\t", "|")
#: Excel's first line ``sep=;`` names the delimiter; it is not the header.
SEP_LINE = re.compile(r"sep=([^\r\n\"])(?:\r\n|\r|\n)", re.IGNORECASE)
SAMPLE_CHARS = 64 * 1024
CHUNK = 1 << 20
TEXT_CHUNK = 64 * 1024
FIELD_LIMIT = 1 << 20
LINE_LIMIT = 4 * FIELD_LIMIT
BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
#: Bytes the encoding cannot decode stand in the text as U+DC00 + the byte: no strict
#: decoder yields a lone surrogate.
BAD_BYTES = re.compile("[\udc00-\udcff]")
#: Characters beyond ASCII that a UTF-8 decoder read as UTF-8 (not escaped bad bytes).
UTF8_TEXT = re.compile("[^\x00-\x7f\udc80-\udcff]")
TEXT_FIELDS = ("first_name", "last_name", "segment_code")

csv.field_size_limit(FIELD_LIMIT)
codecs.register_error(
    "listferry-mark",
    lambda exc: ("".join(chr(0xDC00 + b) for b in exc.object[exc.start : exc.end]), exc.end),
)


def detect_encoding(
    path: Path, declared: str | None = None, opener: Callable[[], BinaryIO] | None = None
) -> str:
    """A BOM's encoding, else ``declared``, else UTF-16 when the first character holds a
    NUL byte, else UTF-8 when the bytes are ASCII or hold UTF-8 beyond ASCII anywhere
    (a byte that is not UTF-8 then voids, naming its line), else cp1252.
    ``opener`` gives the bytes (a compressed list's, decompressed) instead of ``path``;
    they are read a chunk at a time, up to the first UTF-8 character beyond ASCII.
    """
    opener = opener or (lambda: path.open("rb"))
    with opener() as f:
        head = f.read(4)
    for bom, encoding in BOMS:
        if head.startswith(bom):
            return encoding
    if declared:
        return declared
    if len(head) > 1 and (head[0] == 0) != (head[1] == 0):
        return "utf-16-be" if head[0] == 0 else "utf-16-le"
    with opener() as f:
        decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        bad = False
        while True:
            chunk = f.read(CHUNK)
            text = decoder.decode(chunk, final=not chunk)
            if not text.isascii():
                if UTF8_TEXT.search(text):
                    return "utf-8"
                bad = True
            if not chunk:
                return "cp1252" if bad else "utf-8"


def sniff_delimiter(sample: str, quotechar: str) -> str:
    """The candidate that gives the header most columns and the rows the same count."""
    lines = sample.splitlines(keepends=True)
    if len(sample) >= SAMPLE_CHARS and len(lines) > 1:
        lines = lines[:-1]  # the last line of a cut sample may be partial
    text = "".join(lines)
    best, best_score = ",", (0.0, 1)
    for delimiter in DELIMITERS:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quotechar)
        rows = [r for r in reader if r][:50]
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        body = rows[1:] or rows
        score = (sum(len(r) == width for r in body) / len(body), width)
        if score > best_score:
            best, best_score = delimiter, score
    return best


class _Lines:
    """The physical lines of a text file, a chunk at a time; undecodable or endless lines void it.

    Each chunk is checked whole, so a clean file costs no Python per line; ``csv.reader``
    counts the lines it takes (``line_num``).
    """

    def __init__(self, text: io.TextIOWrapper, name: str, found_utf8: bool = False) -> None:
        self._text = text
        self._name = name
        self._found_utf8 = found_utf8  # the file is UTF-8 by what it holds, not declared
        self._given = 0
        self.at_end = False

    def __iter__(self) -> Iterator[str]:
        rest = ""
        while chunk := self._text.read(TEXT_CHUNK):
            text = rest + chunk
            lines = io.StringIO(text, newline="").readlines()
            rest = lines.pop()  # it may go on in the next chunk
            yield from self._checked(lines, BAD_BYTES.search(text) is not None)
            if len(rest) > LINE_LIMIT:
                self._void(0, f"longer than {LINE_LIMIT} characters")
        if rest:
            yield from self._checked([rest], BAD_BYTES.search(rest) is not None)
        self.at_end = True

    def _checked(self, lines: list[str], bad: bool) -> Iterator[str]:
        if bad or max(map(len, lines), default=0) > LINE_LIMIT:
            for index, line in enumerate(lines):
                if found := BAD_BYTES.search(line):
                    yield from lines[:index]
                    self._void(index, self._not_text(ord(found[0]) - 0xDC00))
                if len(line) > LINE_LIMIT:
                    yield from lines[:index]
                    self._void(index, f"longer than {LINE_LIMIT} characters")
        yield from lines
        self._given += len(lines)

    def _not_text(self, byte: int) -> str:
        encoding = self._text.encoding.replace("-sig", "")
        said = f"bytes that are not {encoding} text (byte 0x{byte:02X})"
        if self._found_utf8:
            return f"{said}, though the file is UTF-8 elsewhere; save the whole file as UTF-8"
        return f"{said}; save the file as UTF-8"

    def _void(self, index: int, problem: str) -> None:
        raise Void(f"{self._name} line {self._given + index + 1}: {problem}")


class CsvSource:
    """One open CSV list file. Reads the header on open; records in :meth:`batches`."""

    def __init__(self, path: Path, name: str, dialect: Dialect) -> None:
        self.name = name
        self.dialect = dialect
        self.records_read = 0
        self._opener = partial(open_list_bytes, path, name)
        encoding = detect_encoding(path, dialect.encoding, lambda: self._opener()[0])
        self._raw, self._counter = self._opener()
        self._text = io.TextIOWrapper(
            self._raw,
            encoding=encoding,
            errors="listferry-mark",
            newline="",
        )
        try:
            sample = self._sample(path, encoding)
            sep_line = SEP_LINE.match(sample)
            delimiter = dialect.delimiter or (
                sep_line[1] if sep_line else sniff_delimiter(sample, dialect.quotechar)
            )
            found_utf8 = encoding.startswith("utf-8") and not dialect.encoding
            self._lines = _Lines(self._text, name, found_utf8)
            self._csv = csv.reader(
                self._lines, delimiter=delimiter, quotechar=dialect.quotechar, strict=True
            )
            self._rows = self._read_rows()
            if sep_line:
                next(self._rows, None)
            cells = self._header()
        except BaseException:
            self.close()
            raise
        self.info = self._file_info(path, cells, encoding, delimiter)

    def _sample(self, path: Path, encoding: str) -> str:
        raw, _ = self._opener()
        with io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="") as f:
            return f.read(SAMPLE_CHARS)

    def _read_rows(self) -> Iterator[tuple[int, list[str] | str]]:
        """Each row that is not wholly blank, with its first line; a text says why it is bad."""
        reader = self._csv
        end = 0
        while True:
            try:
                for row in reader:
                    start, end = end + 1, reader.line_num
                    if "".join(row).strip():
                        yield start, row
                return
            except csv.Error as exc:
                start, end = end + 1, reader.line_num
                if self._lines.at_end:
                    raise Void(
                        f"{self.name} line {start}: a quote opened in this record is never "
                        f"closed (the rest of the file, to line {end}, would be one field)"
                    ) from None
                if "field limit" in str(exc):
                    raise Void(
                        f"{self.name} line {start}: a field is longer than {FIELD_LIMIT} "
                        f"characters (check the quotes)"
                    ) from None
                yield start, f"is not readable as CSV ({exc}); check the quotes"

    def _header(self) -> list[str]:
        start, cells = next(self._rows, (0, None))
        if cells is None:
            raise Void(f"{self.name}: the file is empty (no header line)")
        if isinstance(cells, str):
            raise Void(f"{self.name} line {start}: the header {cells}")
        # A NUL in a header is noise, and no column name SQLite can take
        cells = [cell.replace("\x00", "").strip().lstrip("\ufeff").strip() for cell in cells]
        while cells and not cells[-1]:
            cells.pop()  # a delimiter at the end of every line adds no column
        if not cells:
            raise Void(f"{self.name} line {start}: the header names no column")
        return cells

    def _file_info(self, path: Path, cells: list[str], encoding: str, delimiter: str) -> FileInfo:
        header: list[str] = []
        seen: set[str] = set()
        tried: dict[str, int] = {}  # a name's suffixes below this one are taken
        for index, cell in enumerate(cells, start=1):
            name = cell or f"column_{index}"
            unique, n = name, tried.get(name, 2)
            while unique in seen:
                unique, n = f"{name}_{n}", n + 1
            tried[name] = n
            seen.add(unique)
            header.append(unique)
        mapped = self.dialect.map_header(cells)
        columns: dict[str, str | None] = {name: None for name in header}
        taken: dict[str, int] = {}
        notes = []
        for index, canonical in sorted(mapped.items()):
            if canonical in taken:
                first = header[taken[canonical]]
                notes.append(
                    f"columns {first!r} and {header[index]!r} both mean {canonical}; "
                    f"using {first!r}, keeping {header[index]!r} as an extra column"
                )
            else:
                taken[canonical] = index
                columns[header[index]] = canonical
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
            warnings=tuple(self.dialect.opt_out_warnings(header)),
        )

    @property
    def bytes_read(self) -> int:
        return self._counter.count

    def batches(self, size: int = 5000) -> Iterator[tuple[list[Record], list[Invalid]]]:
        width = len(self.info.header)
        where = self._where
        # The record's cells in one C call, the extra columns last; a missing column reads
        # the empty cell appended to every row (at ``width``).
        mapped = [where.get(f, width) for f in ("email", *TEXT_FIELDS)]
        cells = itemgetter(*mapped, *self._extra_index)
        opt_out = itemgetter(where["opt_out"]) if "opt_out" in where else None
        dialect = self.dialect
        also = dialect.also_opt_out_columns(self.info.header) if dialect.also_opt_out else []
        make = partial(tuple.__new__, Record)  # as Record._make, without a Python call
        records: list[Record] = []
        invalid: list[Invalid] = []
        for start, row in self._rows:
            if len(records) + len(invalid) == size:
                self.records_read += size
                yield records, invalid
                records, invalid = [], []
            if isinstance(row, str):
                invalid.append(Invalid(start, row))
                continue
            if len(row) != width:
                if len(row) > width and not "".join(row[width:]).strip():
                    del row[width:]  # delimiters at the end of the line
                else:
                    invalid.append(Invalid(start, self._width_problem(len(row), width, start)))
                    continue
            opted: bool | None = None
            if opt_out is not None:
                word = opt_out(row)
                opted = dialect.opt_out_value(word)
                if opted is None:
                    reason = (
                        f"opt-out value {word.strip()!r} is not one of the words read as "
                        "opted out or as subscribed"
                    )
                    invalid.append(Invalid(start, reason))
                    continue
                if not word.strip():
                    opted = None
            for index, words in also:
                if row[index].strip().casefold() in words:
                    opted = True
            row.append("")
            got = cells(row)
            values = (
                start,
                got[0].strip().lower(),
                got[1].strip() or None,
                got[2].strip() or None,
                got[3].strip() or None,
                opted,
                got[4:],
            )
            records.append(make(values))
        self.records_read += len(records) + len(invalid)
        if records or invalid:
            yield records, invalid

    def _width_problem(self, fields: int, width: int, start: int) -> str:
        end = self._csv.line_num
        span = f" (lines {start}-{end}: check the quotes)" if end > start else ""
        return f"has {fields} fields, the header has {width}{span}"

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
