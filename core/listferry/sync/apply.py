"""The apply stage: the only stage that writes the list, in one transaction.

Everything the plan says, and the run record that says it was applied, commit
together. A run killed before the commit leaves the store exactly as it was.

The plan was made before this transaction began, so every write checks the status it
changes: an opt-out recorded in between (``listferry events load``) is never undone.
"""

from __future__ import annotations

from collections.abc import Callable

from listferry.runs import RunRecord, RunStatus
from listferry.store.database import Store
from listferry.sync.stage import TEXT_COLUMNS, Staged


def _set(column: str, source: str) -> str:
    """``column = value`` from ``source``; extra columns are merged into ``fields``."""
    if column == "fields":
        return f"fields = json_patch(subscribers.fields, {source}.fields)"
    return f"{column} = {source}.{column}"


def _upsert(staged: Staged, action: str, status: str) -> str:
    """Insert the staged rows with ``action``, or set their present columns and status.

    Nobody who unsubscribed is put back on the list, whatever the plan said.
    """
    columns = (*TEXT_COLUMNS, "fields")
    values = ", ".join("coalesce(i.fields, '{}')" if c == "fields" else f"i.{c}" for c in columns)
    sets = "".join(_set(c, "excluded") + ", " for c in staged.present)
    return (
        f"INSERT INTO subscribers (email, {', '.join(columns)}, status, created_at, "
        "updated_at, status_changed_at) "
        f"SELECT i.email, {values}, '{status}', :now, :now, :now "
        "FROM temp.incoming i JOIN temp.plan p ON p.email = i.email "
        f"WHERE p.action = '{action}' "
        f"ON CONFLICT (email) DO UPDATE SET {sets}updated_at = :now, "
        f"status_changed_at = CASE WHEN status = '{status}' THEN status_changed_at "
        f"ELSE :now END, status = '{status}' WHERE subscribers.status != 'unsubscribed'"
    )


def apply(
    store: Store,
    staged: Staged,
    run: RunRecord,
    now: str,
    before_commit: Callable[[], None] | None = None,
) -> None:
    """Apply ``temp.plan`` to the subscribers and record ``run`` as applied, atomically.

    ``before_commit`` runs last inside the transaction; if it raises, nothing is applied.
    """
    params = {"now": now, "run": run.run_id}
    with store.transaction() as conn:
        conn.execute(_upsert(staged, "add", "active"), params)
        if staged.present:
            sets = ", ".join(_set(c, "i") for c in staged.present)
            conn.execute(
                f"UPDATE subscribers SET {sets}, updated_at = :now FROM ("
                "SELECT i.* FROM temp.incoming i JOIN temp.plan p ON p.email = i.email "
                "WHERE p.action = 'update') AS i WHERE subscribers.email = i.email",
                params,
            )
        conn.execute(
            "UPDATE subscribers SET status = 'removed', status_changed_at = :now, "
            "updated_at = :now WHERE +status = 'active' AND email IN "  # by email, not status
            "(SELECT email FROM temp.plan WHERE action = 'remove')",
            params,
        )
        conn.execute(_upsert(staged, "unsubscribe", "unsubscribed"), params)
        conn.execute(
            "INSERT INTO optouts (email, at, source, run_id) "
            "SELECT email, :now, 'file', :run FROM temp.plan WHERE action = 'unsubscribe' "
            "ON CONFLICT (email) DO NOTHING",
            params,
        )
        run.end(RunStatus.APPLIED)
        if before_commit:
            before_commit()
        store.save_run(run)
