"""The result report: a run explained in plain words, for the customer and the operator."""

from __future__ import annotations

from collections.abc import Sequence

from listferry.records import Invalid
from listferry.runs import RunRecord

OUTCOME_WORDS = {
    "applied": "The list was updated.",
    "voided": "Nothing was changed: the last good list stands. Fix the file and upload it again.",
    "failed": "Nothing was changed: the last good list stands. The file stays in place and "
    "will be tried again.",
    "skipped": "Nothing was changed.",
}


def render(
    run: RunRecord,
    invalid: Sequence[Invalid] = (),
    duplicates: Sequence[tuple[str, str]] = (),
    notes: Sequence[str] = (),
    held: bool = False,
) -> str:
    """The report text for ``run``; samples list at most what the read stage kept.

    ``held``: the voided file stays in the home for the operator to apply with
    ``sync --force`` (a guard the operator may overrule voided it).
    """
    words = OUTCOME_WORDS.get(run.status, "")
    if held:
        words = (
            "Nothing was changed: the last good list stands. The file stays in place until "
            "a newer file replaces it or the operator confirms it: if the file is right, "
            "ask your operator to apply it; if not, send a corrected file."
        )
    lines = [
        f"listferry result for {run.file}",
        f"Tenant: {run.tenant}   Run: {run.run_id}   Finished: {run.finished_at}",
        f"Outcome: {run.status}" + (f": {run.reason}" if run.reason else ""),
        words,
        "",
        f"Records received: {run.received}",
        f"  added {run.added}, updated {run.updated}, removed {run.removed}, "
        f"unsubscribed {run.unsubscribed}, unchanged {run.unchanged}, ignored {run.ignored}",
        f"  invalid {run.invalid}, duplicates {run.duplicates}",
    ]
    if invalid:
        more = run.invalid - len(invalid)
        lines += ["", "Invalid records (skipped):"]
        lines += [f"  line {item.line}: {item.reason}" for item in invalid]
        if more > 0:
            lines.append(f"  ... and {more} more")
    if duplicates:
        lines += ["", "Addresses that appear more than once (the last row wins):"]
        lines += [f"  {email}: lines {where}" for email, where in duplicates]
    if notes:
        lines += ["", "Notes:"] + [f"  {note}" for note in notes]
    if run.sha256:
        lines += ["", f"File SHA-256: {run.sha256}"]
    return "\n".join(lines) + "\n"
