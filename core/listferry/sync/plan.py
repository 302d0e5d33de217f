"""The plan stage: a strategy's decisions, applied to the staged file and the store in SQL.

It only reads the store. The plan is left in ``temp.plan`` (email, action, in_file)
for the apply stage, and summed up in a :class:`listferry.strategy.Plan`. Rows the
plan keeps as they are (most of a daily list) are counted, not written to it.
"""

from __future__ import annotations

import sqlite3
from functools import partial

from listferry.config import Tenant
from listferry.errors import ListferryError, Void
from listferry.plugins import Host
from listferry.strategy import Action, Plan, Strategy, all_situations, guarded
from listferry.sync.stage import Staged, void_if

COUNT_OF = {
    (Action.ADD, 1): "added",
    (Action.UPDATE, 1): "updated",
    (Action.REMOVE, 0): "removed",
    (Action.REMOVE, 1): "removed",
    (Action.UNSUBSCRIBE, 1): "unsubscribed",
    (Action.KEEP, 1): "unchanged",
    (Action.IGNORE, 1): "ignored",
}


def decisions(strategy: Strategy) -> list[tuple[int, str, int, int | None, str]]:
    """The strategy's answer for every situation, after the rules of meaning."""
    rows = []
    for situation in all_situations():
        answer = strategy.decide(situation)
        try:
            action = Action(answer)
        except ValueError:
            raise ListferryError(
                f"strategy {strategy.name!r} answered {answer!r} for {situation}; "
                f"expected one of {', '.join(a.value for a in Action)}"
            ) from None
        action = guarded(situation, action)
        rows.append(
            (
                int(situation.in_file),
                situation.status or "new",
                int(situation.changed),
                None if situation.opt_out is None else int(situation.opt_out),
                action.value,
            )
        )
    return rows


def changed_sql(staged: Staged) -> str:
    """SQL that is 1 when the staged row ``i`` would change the stored row ``s``.

    Extra columns are merged into the stored ``fields``, so they change it only when
    one of them is new or holds a different value.
    """
    tests = [
        "json_patch(s.fields, i.fields) IS NOT s.fields"
        if column == "fields"
        else f"s.{column} IS NOT i.{column}"
        for column in staged.present
    ]
    return " OR ".join(tests) if tests else "0"


def make_plan(
    conn: sqlite3.Connection, strategy: Strategy, staged: Staged, active_before: int
) -> Plan:
    """Classify every staged row and every stored subscriber; return the counts."""
    table = decisions(strategy)
    conn.execute("DROP TABLE IF EXISTS temp.decisions")
    conn.execute("DROP TABLE IF EXISTS temp.plan")
    conn.execute(
        "CREATE TEMP TABLE decisions (in_file INTEGER, status TEXT, changed INTEGER, "
        "opt_out INTEGER, action TEXT)"
    )
    conn.executemany("INSERT INTO temp.decisions VALUES (?, ?, ?, ?, ?)", table)
    conn.execute("BEGIN")
    try:
        conn.execute(
            "CREATE TEMP TABLE plan AS "
            "SELECT i.email AS email, d.action AS action, 1 AS in_file "
            "FROM temp.incoming i LEFT JOIN main.subscribers s ON s.email = i.email "
            "JOIN temp.decisions d ON d.in_file = 1 AND d.status = coalesce(s.status, 'new') "
            f"AND d.changed = (CASE WHEN s.email IS NULL THEN 0 ELSE ({changed_sql(staged)}) END) "
            "AND d.opt_out IS i.opt_out WHERE d.action != 'keep'"
        )
        if any(row[0] == 0 and row[4] != Action.KEEP for row in table):
            conn.execute(
                "INSERT INTO temp.plan SELECT s.email, d.action, 0 FROM main.subscribers s "
                "JOIN temp.decisions d ON d.in_file = 0 AND d.status = s.status "
                "AND d.action != 'keep' "
                "WHERE NOT EXISTS (SELECT 1 FROM temp.incoming i WHERE i.email = s.email)"
            )
        conn.execute("CREATE INDEX temp.plan_action ON plan (action, email)")
        counts = conn.execute(
            "SELECT action, in_file, count(*) FROM temp.plan GROUP BY action, in_file"
        ).fetchall()
        in_file = conn.execute("SELECT count(*) FROM temp.incoming").fetchone()[0]
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    totals = {name: 0 for name in COUNT_OF.values()}
    for action, from_file, n in counts:
        name = COUNT_OF.get((Action(action), from_file))
        if name:
            totals[name] += n
        in_file -= n if from_file else 0
    totals["unchanged"] = in_file
    return Plan(
        strategy=strategy.name,
        received=staged.received,
        invalid=staged.invalid,
        duplicates=staged.duplicates,
        active_before=active_before,
        **totals,
    )


class Overrulable(Void):
    """A void that ``sync --force`` would lift: the file stays in the home for it."""


def checked_plan(
    host: Host,
    tenant: Tenant,
    conn: sqlite3.Connection,
    staged: Staged,
    active: int,
    force: bool = False,
) -> Plan:
    """The tenant's strategy's plan for the staged file, in ``temp.plan``, once every
    ``check_plan`` guard passed; :class:`Overrulable` when only a guard ``force`` lifts
    stops it."""
    strategy = host.strategies.get(tenant.strategy)
    plan = make_plan(conn, strategy, staged, active)
    check = partial(host.hook.check_plan, plan=plan, tenant=tenant)
    reasons = check(force=force)
    overrulable = any(reasons) and not force and not any(check(force=True))
    void_if(reasons, Overrulable if overrulable else Void)
    return plan


def overrule_hint(tenant: Tenant, replay_of: int | None = None) -> str:
    """The operator's command that applies a file a guard held back."""
    if replay_of is not None:
        return f"to apply it anyway: listferry replay {tenant.name} {replay_of} --force"
    return f"to apply it anyway: listferry sync {tenant.name} --force"
