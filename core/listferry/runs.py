"""A run record: what one sync attempt did, in the shape the CLI and the store share."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field

from listferry.text import visible
from listferry.times import utcnow


class RunStatus(enum.StrEnum):
    """What a run ended as (``running`` until it ends). Each is its own string, so JSON,
    the store and a comparison with ``"applied"`` see the word."""

    RUNNING = "running"
    APPLIED = "applied"
    VOIDED = "voided"
    FAILED = "failed"
    SKIPPED = "skipped"
    IDLE = "idle"


#: The statuses a run can end as.
OUTCOMES = tuple(status for status in RunStatus if status is not RunStatus.RUNNING)
#: The outcomes that need someone to look: nothing was applied, and why is in ``reason``.
PROBLEMS = (RunStatus.VOIDED, RunStatus.FAILED)


@dataclass
class RunRecord:
    """One sync attempt for one tenant. ``status`` is ``running`` until it ends.

    ``reason`` is for everyone, the customer's result report included; ``hint`` is for
    the operator alone (the command that would overrule a guard, say).
    """

    tenant: str
    run_id: int | None = None
    status: str = RunStatus.RUNNING
    file: str | None = None
    strategy: str | None = None
    reason: str | None = None
    received: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unsubscribed: int = 0
    unchanged: int = 0
    ignored: int = 0
    invalid: int = 0
    duplicates: int = 0
    started_at: str = field(default_factory=utcnow)
    finished_at: str | None = None
    sha256: str | None = None
    archive: str | None = None
    hint: str | None = None
    #: For a replay: the run whose archived file it applied again.
    replay_of: int | None = None
    report: str | None = field(default=None, repr=False)
    #: A digest of what decided how the file was read and planned (dialect, strategy).
    settings_digest: str | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        """The run as ``sync --json`` and ``runs --json`` print it (no report text)."""
        data = asdict(self)
        data.pop("report")
        data.pop("settings_digest")
        return data

    def describe(self) -> str:
        """The run in one line, as ``sync`` and ``runs`` print it for the operator; the
        file's name and the reason with their control characters escaped."""
        head = f"{self.tenant}: {self.status}"
        if self.file:
            head += f" {self.file}"
        if self.run_id:
            head += f" (run {self.run_id})"
        if self.replay_of:
            head += f" (replay of run {self.replay_of})"
        if self.status == "applied":
            head += (
                f": {self.received} received, {self.added} added, {self.updated} updated, "
                f"{self.removed} removed, {self.unsubscribed} unsubscribed, "
                f"{self.unchanged} unchanged, {self.invalid} invalid"
            )
            extra = {"ignored": self.ignored, "duplicates": self.duplicates}
            head += "".join(f", {n} {word}" for word, n in extra.items() if n)
        elif self.reason:
            head += f": {self.reason}"
        if self.hint:
            head += f" ({self.hint})"
        return visible(head)

    def end(self, status: str, reason: str | None = None) -> RunRecord:
        self.status = status
        self.reason = reason
        self.finished_at = utcnow()
        return self
