"""Update strategies, as plugins see them: a decision per situation, and the plan it makes.

A strategy does not loop over records. It answers :meth:`Strategy.decide` for each of
the few dozen situations a subscriber can be in; the host turns the answers into one
set-based query over the staged file and the store, so a plan for millions of rows
costs no Python per row.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from itertools import product
from typing import NamedTuple, Protocol

STATUSES = ("active", "unsubscribed", "removed")


class Action(enum.StrEnum):
    """What happens to one subscriber."""

    ADD = "add"
    """Put on the active list with the file's values (new, or back after a removal)."""
    UPDATE = "update"
    """Take the file's values; the status stays as it is."""
    REMOVE = "remove"
    """Mark ``removed``: off the list, history kept."""
    UNSUBSCRIBE = "unsubscribe"
    """Mark ``unsubscribed`` (the CRM says this person opted out)."""
    KEEP = "keep"
    """Leave as it is; counted ``unchanged`` when the row is in the file."""
    IGNORE = "ignore"
    """A row of the file the strategy does not take (counted ``ignored``)."""


class Situation(NamedTuple):
    """Where one e-mail address stands, seen from the file and from the store.

    ``status`` is the store's status, or ``None`` for an address the store has never
    seen. ``changed`` is true when the file's values differ from the stored ones.
    ``opt_out`` is the file's opt-out cell (``None`` when the file has no such column
    or the cell is empty). For addresses that are in the store but not in the file,
    ``in_file`` is false, ``changed`` is false and ``opt_out`` is ``None``.
    """

    in_file: bool
    status: str | None
    changed: bool
    opt_out: bool | None


class Strategy(Protocol):
    """An update strategy, registered through ``register_strategies``."""

    name: str
    description: str

    def decide(self, situation: Situation) -> Action:
        """Return the action for every subscriber in ``situation``."""


def all_situations() -> list[Situation]:
    """Every situation a subscriber can be in; a strategy is defined by its answers."""
    situations = [Situation(True, None, False, o) for o in (None, False, True)]
    situations += [
        Situation(True, status, changed, opt_out)
        for status, changed, opt_out in product(STATUSES, (False, True), (None, False, True))
    ]
    situations += [Situation(False, status, False, None) for status in STATUSES]
    return situations


def guarded(situation: Situation, action: Action) -> Action:
    """Apply the rules of meaning to a strategy's answer; the host always does this.

    Nobody who unsubscribed is put back on the list; an address we never had cannot be
    updated or removed; an address absent from the file can only be kept or removed.
    """
    status = situation.status
    if not situation.in_file:
        return action if action is Action.REMOVE and status == "active" else Action.KEEP
    if status is None:
        return action if action in (Action.ADD, Action.UNSUBSCRIBE) else Action.IGNORE
    if action is Action.ADD and status in ("active", "unsubscribed"):
        action = Action.UPDATE
    if action is Action.UNSUBSCRIBE and status == "unsubscribed":
        action = Action.UPDATE  # already off the list: only its values may change
    if action is Action.UPDATE and not situation.changed:
        action = Action.KEEP
    if action is Action.REMOVE and status != "active":
        action = Action.KEEP
    return action


@dataclass(frozen=True)
class Plan:
    """What a run would do to the store, in counts. The rows themselves stay in SQLite.

    ``received`` counts the file's data records, ``invalid`` those skipped by record
    checks, ``duplicates`` the earlier records of an address that appears more than
    once (the last one wins). ``active_before`` is the size of the list before the run.
    """

    strategy: str
    received: int = 0
    invalid: int = 0
    duplicates: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unsubscribed: int = 0
    unchanged: int = 0
    ignored: int = 0
    active_before: int = 0

    def counts(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "strategy"}
