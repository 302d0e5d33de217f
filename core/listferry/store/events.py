"""Engagement events: opens, clicks and unsubscribes from the sending platform.

``load_events(store, path)`` reads a CSV or JSON-lines file (email, type, at, topic)
and stores it in one transaction; one bad line stops the load, naming the line, and
nothing of that file is stored. ``record_events(store, events)`` does the same for
events a program has in hand (a plugin's ``collect_events``, a script).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from listferry.errors import ListferryError
from listferry.store.database import Store
from listferry.times import iso, parse_iso

TYPES = ("open", "click", "unsubscribe")


def normalise(raw: Mapping[str, Any], where: str) -> tuple[str, str, str, str]:
    """One event as ``(email, type, at, topic)``: address lower-cased, time in UTC."""
    email = str(raw.get("email") or "").strip().lower()
    if "@" not in email:
        raise ListferryError(f"{where}: email {email!r} is not an e-mail address")
    kind = str(raw.get("type") or "").strip().lower()
    if kind not in TYPES:
        raise ListferryError(f"{where}: type {kind!r} is not one of {', '.join(TYPES)}")
    text = str(raw.get("at") or "").strip()
    try:
        at = parse_iso(text)
    except ValueError:
        at = None
    if at is None:
        raise ListferryError(f"{where}: at {text!r} is not an ISO 8601 time")
    topic = str(raw.get("topic") or "").strip()
    return email, kind, iso(at), topic


def read_events(path: Path) -> Iterator[tuple[str, str, str, str]]:
    """The events of a ``.jsonl``/``.json`` lines file or a CSV file with a header."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ListferryError(f"{path} line {number}: not JSON: {exc.msg}") from None
                if not isinstance(raw, dict):
                    raise ListferryError(f"{path} line {number}: expected a JSON object")
                yield normalise(raw, f"{path} line {number}")
            return
        rows = csv.DictReader(f)
        missing = {"email", "type", "at"} - {
            (h or "").strip().lower() for h in rows.fieldnames or []
        }
        if missing:
            raise ListferryError(f"{path} line 1: missing column(s) {', '.join(sorted(missing))}")
        for row in rows:
            clean = {(k or "").strip().lower(): v for k, v in row.items()}
            yield normalise(clean, f"{path} line {rows.line_num}")


class Loaded(NamedTuple):
    """What ``load_events`` did: events stored, events known already, and the file's
    events that name an address not on the list (never on it, or removed from it)."""

    stored: int
    duplicates: int
    not_on_list: int


def load_events(store: Store, path: Path) -> Loaded:
    """Store the events of ``path``; returns (stored, duplicates, not on the list)."""
    unlisted: set[str] = set()
    not_on_list = 0

    def counted() -> Iterator[tuple[str, str, str, str]]:
        # Each address is looked up before its first event is stored: storing an
        # unsubscribe puts the address in the table, unsubscribed.
        nonlocal not_on_list
        for event in read_events(path):
            email = event[0]
            if email not in unlisted:
                row = store.conn.execute(
                    "SELECT status FROM subscribers WHERE email = ?", (email,)
                ).fetchone()
                if row is None or row[0] == "removed":
                    unlisted.add(email)
            not_on_list += email in unlisted
            yield event

    try:
        stored, duplicates = store.add_events(counted())
        return Loaded(stored, duplicates, not_on_list)
    except UnicodeDecodeError as exc:
        raise ListferryError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise ListferryError(f"{path}: not readable as CSV: {exc}") from None


def record_events(
    store: Store, events: Iterable[Mapping[str, Any]], source: str = "event"
) -> tuple[int, int]:
    """Store events given as mappings with ``email``, ``type``, ``at`` and ``topic``.

    ``at`` is a ``datetime`` (UTC when naive) or ISO 8601 text; ``topic`` may be left
    out. The same event (address, type, time, topic) twice is stored once. All or
    nothing: one bad event stops it, naming it as ``source N``, and nothing is stored.
    Returns (stored, duplicates).
    """

    def checked() -> Iterator[tuple[str, str, str, str]]:
        for number, event in enumerate(events, start=1):
            where = f"{source} {number}"
            if not isinstance(event, Mapping):
                raise ListferryError(f"{where}: expected a mapping, got {type(event).__name__}")
            yield normalise(event, where)

    return store.add_events(checked())
