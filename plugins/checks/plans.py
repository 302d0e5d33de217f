"""Plan checks: too many invalid rows, or a full replacement that shrinks the list too far."""

from __future__ import annotations

from listferry import hookimpl
from listferry.config import Tenant
from listferry.strategy import Plan


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}"


@hookimpl
def check_plan(plan: Plan, tenant: Tenant, force: bool) -> str | None:
    if plan.received and plan.invalid / plan.received > tenant.max_invalid_share:
        return (
            f"too many invalid records: {plan.invalid} of {plan.received} "
            f"({_share(plan.invalid, plan.received)}), the limit is "
            f"{tenant.max_invalid_share:.0%}"
        )
    if (
        not force
        and plan.active_before
        and plan.removed / plan.active_before > tenant.max_shrink_share
    ):
        return (
            f"shrink guard: the file would remove {plan.removed} of {plan.active_before} "
            f"active subscribers ({_share(plan.removed, plan.active_before)}), more than the "
            f"limit of {tenant.max_shrink_share:.0%}"
        )
    return None
