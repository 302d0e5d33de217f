"""What the names of the files in a tenant's home say, written once.

A name is a list file (it matches the tenant's pattern, as it is or without its packing:
``.pgp``, then ``.gz`` or ``.zip``), the count file of one (``<stem>_count.txt``), a
result report (``<stem>.result.txt``), an upload still under way (hidden, or with a
client's temporary ending) or none of these. Case does not count, as for the pattern:
``EXPORT_COUNT.TXT`` is the count file of ``EXPORT.CSV``. The select stage, ``status``,
``check``, the transports, ``push`` and the export all ask here.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

COUNT_SUFFIX = "_count.txt"
REPORT_SUFFIX = ".result.txt"
#: Name endings of uploads still under way, as clients name them (FileZilla, WinSCP,
#: browsers ...): never listed, never read.
PARTIAL_SUFFIXES = (".part", ".partial", ".filepart", ".tmp", ".crdownload")
#: Name endings of lists read through a decompressor, never unpacked to disk.
COMPRESSED_SUFFIXES = (".gz", ".zip")
#: Name endings of OpenPGP-encrypted lists.
ENCRYPTED_SUFFIXES = (".pgp", ".gpg", ".asc")

#: What :func:`kind_of` answers.
LIST, COUNT, REPORT, UNDER_WAY, OTHER = "list", "count", "report", "under way", "other"


def is_encrypted(name: str) -> bool:
    return name.lower().endswith(ENCRYPTED_SUFFIXES)


def decrypted_name(name: str) -> str:
    """``list.csv.pgp`` -> ``list.csv``."""
    return name[:-4] if is_encrypted(name) else name


def unpacked_name(name: str) -> str:
    """``list.csv.gz.pgp`` -> ``list.csv``: the name the list has inside its packing
    (OpenPGP encryption, then compression)."""
    name = decrypted_name(name)
    lowered = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def count_name(list_name: str) -> str:
    """``subscriber_list.csv`` (or ``.csv.gz``, ``.csv.zip``) -> ``subscriber_list_count.txt``."""
    name = unpacked_name(list_name)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return stem + COUNT_SUFFIX


def find_count(list_name: str, names: Iterable[str]) -> str | None:
    """The name among ``names`` of ``list_name``'s count file, case ignored (the spelling
    :func:`count_name` gives first), or ``None``."""
    wanted = count_name(list_name)
    folded = wanted.casefold()
    found = None
    for name in names:
        if name == wanted:
            return name
        if found is None and name.casefold() == folded:
            found = name
    return found


def is_count(name: str) -> bool:
    """A count file's name (``<stem>_count.txt``, any case)."""
    return name.casefold().endswith(COUNT_SUFFIX)


def is_report(name: str) -> bool:
    """A result report's name (``<stem>.result.txt``, any case)."""
    return name.casefold().endswith(REPORT_SUFFIX)


def report_name(list_name: str | None) -> str:
    """``subscriber_list.csv`` -> ``subscriber_list.result.txt``."""
    stem = (list_name or "list").rsplit(".", 1)[0]
    return stem + REPORT_SUFFIX


def is_under_way(name: str) -> bool:
    """A hidden name, or a client's temporary one: an upload that is not complete."""
    return name.startswith(".") or name.endswith(PARTIAL_SUFFIXES)


def matches(name: str, pattern: str) -> bool:
    """``name`` matches the tenant's ``pattern`` (case-insensitively), as it is or, for a
    packed list, without its packing: ``*.csv`` takes ``list.csv.gz`` and ``list.csv.zip``."""
    folded = pattern.casefold()
    return fnmatchcase(name.casefold(), folded) or fnmatchcase(
        unpacked_name(name).casefold(), folded
    )


def kind_of(name: str, pattern: str) -> str:
    """What a file at the top of a home is, for a tenant whose list ``pattern`` this is:
    :data:`LIST`, :data:`COUNT`, :data:`REPORT`, :data:`UNDER_WAY` or :data:`OTHER`."""
    if is_under_way(name):
        return UNDER_WAY
    if is_report(name):
        return REPORT
    if is_count(name):
        return COUNT
    return LIST if matches(name, pattern) else OTHER
