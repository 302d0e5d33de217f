"""The ``email`` notifier: a mail for each run whose outcome ``[notify] on`` names.

To the operator's addresses (``[notify.email] to``), and, for a voided run, also to the
tenant's ``contact_email`` when ``tenant_contacts`` is on: the customer learns that
their file was refused and why, the night it happened. SMTP with STARTTLS (or implicit
TLS) and a login whose password comes from the environment.
"""

from __future__ import annotations

from typing import Any

from listferry import hookimpl
from listferry.ops.notify import run_subject, run_text, send_email


def recipients(run: Any, tenant: Any, config: Any) -> list[str]:
    """Who hears of ``run``: nobody unless mail is set up and the outcome is one to tell."""
    settings = config.notify
    if settings.email is None or run.status not in settings.on:
        return []
    to = list(settings.email.to)
    contact = getattr(tenant, "contact_email", None) if tenant is not None else None
    if run.status == "voided" and settings.email.tenant_contacts and contact and contact not in to:
        to.append(contact)
    return to


@hookimpl
def run_finished(run: Any, tenant: Any, config: Any) -> None:
    to = recipients(run, tenant, config)
    if to:
        send_email(config.notify.email, to, run_subject(run), run_text(run))
