"""The built-in update strategies: full, incremental, add-only, update-only, opt-out.

In every strategy a row whose opt-out column says yes unsubscribes that address, and
(by the host's rules) nobody who unsubscribed is ever put back on the list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from listferry import hookimpl
from listferry.strategy import Action, Situation


@dataclass(frozen=True)
class Full:
    name: str = "full"
    description: str = "The file is the whole list: add, update, and remove who is absent"

    def decide(self, s: Situation) -> Action:
        if not s.in_file:
            return Action.REMOVE
        if s.opt_out:
            return Action.UNSUBSCRIBE
        return Action.ADD if s.status in (None, "removed") else Action.UPDATE


@dataclass(frozen=True)
class Incremental:
    name: str = "incremental"
    description: str = "Add new addresses and update known ones; nobody is removed"

    def decide(self, s: Situation) -> Action:
        if not s.in_file:
            return Action.KEEP
        if s.opt_out:
            return Action.UNSUBSCRIBE
        return Action.ADD if s.status in (None, "removed") else Action.UPDATE


@dataclass(frozen=True)
class AddOnly:
    name: str = "add-only"
    description: str = "Add new addresses; rows for known ones are ignored"

    def decide(self, s: Situation) -> Action:
        if not s.in_file:
            return Action.KEEP
        if s.opt_out:
            return Action.UNSUBSCRIBE
        return Action.ADD if s.status in (None, "removed") else Action.IGNORE


@dataclass(frozen=True)
class UpdateOnly:
    name: str = "update-only"
    description: str = "Update known addresses; rows for new ones are ignored"

    def decide(self, s: Situation) -> Action:
        if not s.in_file:
            return Action.KEEP
        if s.opt_out:
            return Action.UNSUBSCRIBE
        return Action.IGNORE if s.status is None else Action.UPDATE


@dataclass(frozen=True)
class OptOut:
    name: str = "opt-out"
    description: str = "The file lists removals: every address in it is unsubscribed"

    def decide(self, s: Situation) -> Action:
        return Action.UNSUBSCRIBE if s.in_file else Action.KEEP


@hookimpl
def register_strategies(register: Any) -> None:
    for strategy in (Full(), Incremental(), AddOnly(), UpdateOnly(), OptOut()):
        register(strategy)
