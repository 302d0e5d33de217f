"""The result report: a run explained in plain words, for the customer.

It goes into the customer's home, so it never holds the operator's side of a run: no
command (a run's ``hint``), no setting name, no server path. A voided run's reason is
the file's fault and is said as it is; a failed run's reason is the platform's (a
setting, a key, a disk) and stays with the operator (``sync``, ``runs``, the log): the
customer reads that the operator has been told and that the file will be tried again.
"""

from __future__ import annotations

from collections.abc import Sequence

from listferry.records import FileInfo, Invalid
from listferry.runs import RunRecord, RunStatus
from listferry.text import visible

OUTCOME_WORDS = {
    RunStatus.APPLIED: "The list was updated.",
    RunStatus.VOIDED: "Nothing was changed: the last good list stands. Fix the file and upload "
    "it again.",
    RunStatus.FAILED: "Nothing was changed: the last good list stands. The file stays in place and "
    "will be tried again.",
    RunStatus.SKIPPED: "Nothing was changed.",
}

#: What the customer reads for a failed run, in place of the operator's reason.
FAILED_REASON = (
    "the file could not be processed because of a problem on the platform's side, not in "
    "the file; the operator has been told"
)


def customer_notes(info: FileInfo) -> list[str]:
    """The reader's warnings and notes about a file as the customer's report says them:
    an opt-out column the dialect does not read in the customer's words."""
    operator = info.dialect.opt_out_warnings(info.header)
    customer = info.dialect.opt_out_warnings(info.header, for_customer=True)
    said = dict(zip(operator, customer, strict=True))
    return [said.get(warning, warning) for warning in info.warnings] + list(info.notes)


def render(
    run: RunRecord,
    invalid: Sequence[Invalid] = (),
    duplicates: Sequence[tuple[str, str]] = (),
    notes: Sequence[str] = (),
    held: bool = False,
    read: bool = True,
) -> str:
    """The report text for ``run``; samples list at most what the read stage kept.

    ``held``: the voided file stays in the home for the operator to apply with
    ``sync --force`` (a guard the operator may overrule voided it). ``read``: whether
    the file's records were read (not for a repeat, nor a file voided at its header).
    What the file brought (its name, values quoted in reasons) has its control characters
    escaped: the customer may read the report in a terminal.
    """
    words = OUTCOME_WORDS.get(run.status, "")
    reason = FAILED_REASON if run.status == RunStatus.FAILED else run.reason
    if held:
        words = (
            "Nothing was changed: the last good list stands. The file stays in place until "
            "a newer file replaces it or the operator confirms it: if the file is right, "
            "ask your operator to apply it; if not, send a corrected file."
        )
    lines = [
        f"listferry result for {run.file}",
        f"Tenant: {run.tenant}   Run: {run.run_id}   Finished: {run.finished_at}",
        f"Outcome: {run.status}" + (f": {reason}" if reason else ""),
        words,
        "",
    ]
    if not read:
        lines.append("Records received: not read")
    else:
        lines += [
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
    return "\n".join(visible(line) for line in lines) + "\n"
