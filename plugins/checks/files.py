"""File checks: required columns, empty files, and the count file beside the list.

The count file ``<stem>_count.txt`` holds one whole number: the data records of
``<stem>.csv``, header excluded, a quoted field with a newline still one record.
"""

from __future__ import annotations

from pathlib import Path

from listferry import hookimpl
from listferry.names import count_name
from listferry.records import FileInfo

#: The most a count file is read of: a number, a BOM and line breaks fit many times over.
COUNT_FILE_BYTES = 4096


def read_count(path: Path) -> int | str:
    """The number in a count file, or the reason it is not one whole number."""
    with path.open("rb") as f:
        data = f.read(COUNT_FILE_BYTES + 1)
    if len(data) > COUNT_FILE_BYTES:
        return f"count file {path.name} is not a number: it is longer than {COUNT_FILE_BYTES} bytes"
    try:
        text = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        return f"count file {path.name} is not text"
    if not text.isdecimal() or not text.isascii():
        shown = text if len(text) <= 40 else text[:40] + "..."
        return f"count file {path.name} must hold one whole number, it holds {shown!r}"
    return int(text)


@hookimpl
def validate_header(file: FileInfo) -> str | None:
    missing = [field for field in file.dialect.required if field not in file.canonical]
    if missing:
        wanted = "; ".join(
            f"{field} (headers: {', '.join(file.dialect.aliases.get(field, (field,)))})"
            for field in missing
        )
        found = ", ".join(repr(h) for h in file.header[:12])
        return f"missing column: {wanted}; the file's header is {found}"
    return None


@hookimpl
def validate_file(file: FileInfo) -> str | None:
    """The count file, once the records are read: a file voided for its count file is
    still counted, so the run and its report say how many records it has."""
    count: int | str | None = None
    if file.count_policy != "off" and file.count_file is not None:
        count = read_count(file.count_file)
    elif file.count_policy == "required":
        by = file.count_policy_by
        needs = "requires" if by == "this tenant" else "require"  # "the [defaults] require"
        return f"count file {count_name(file.name)} is missing, and {by} {needs} one"
    if isinstance(count, str):
        return count
    if not file.records:
        return "no records: the file has a header line only"
    if count is not None and count != file.records:
        return f"record count mismatch: count file says {count}, file has {file.records} records"
    return None
