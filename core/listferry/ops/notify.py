"""Telling people about runs: the e-mail and the signed webhook ``[notify]`` asks for.

The ``email`` and ``webhook`` plugins (:mod:`listferry_plugins.notify`) implement
``run_finished`` with what is here; the daily digest (:mod:`listferry.ops.digest`) sends
through the same e-mail settings. Secrets are read from the environment variables the
config names and never appear in a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from listferry.config.notify import EmailSettings, WebhookSettings
from listferry.errors import ListferryError
from listferry.runs import RunRecord, RunStatus
from listferry.text import json_text, redact_url, visible

log = logging.getLogger("listferry")

SIGNATURE_HEADER = "X-Listferry-Signature"
TIMESTAMP_HEADER = "X-Listferry-Timestamp"


class NotifyError(ListferryError):
    """A notification could not be delivered (after its retries)."""


# -- messages ---------------------------------------------------------------------------


def run_subject(run: RunRecord) -> str:
    """The mail's subject: one line, whatever the file's name holds."""
    what = f" {run.file}" if run.file else ""
    return visible(f"listferry: {run.tenant} {run.status}{what}")


def run_text(run: RunRecord) -> str:
    """The mail body for one run: what happened, why, and what to do; the file's name and
    the reason with their control characters escaped."""
    lines = [f"Tenant:  {run.tenant}", f"Outcome: {run.status}"]
    if run.file:
        lines.append(f"File:    {run.file}")
    if run.run_id is not None:
        lines.append(f"Run:     {run.run_id}")
    lines.append(f"Ended:   {run.finished_at or run.started_at}")
    if run.reason:
        lines += ["", "Why:", f"  {run.reason}"]
    if run.status == RunStatus.APPLIED:
        lines += [
            "",
            f"Received {run.received}: {run.added} added, {run.updated} updated, "
            f"{run.removed} removed, {run.unsubscribed} unsubscribed, {run.unchanged} "
            f"unchanged; {run.invalid} invalid, {run.duplicates} duplicates.",
        ]
    elif run.status == RunStatus.VOIDED:
        lines += [
            "",
            "Nothing was changed: the last good list stands. Send a corrected file; the",
            "file stays in the home until it is replaced (or forced, for the shrink guard).",
        ]
    elif run.status == RunStatus.FAILED:
        lines += ["", "Nothing was changed. The file, if any, stays pending for the next run."]
    return "\n".join(map(visible, lines)) + "\n"


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``timestamp + "." + body`` under ``secret``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: bytes,
    timestamp: str,
    body: bytes,
    header: str,
    now: float | None = None,
    tolerance: float = 300.0,
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent."""
    if not hmac.compare_digest(signature(secret, timestamp, body), header):
        return False
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    return abs((time.time() if now is None else now) - sent) <= tolerance


# -- sending ----------------------------------------------------------------------------


def send_email(settings: EmailSettings, recipients: Sequence[str], subject: str, body: str) -> None:
    """Send one plain-text mail; a failure is a :class:`NotifyError` without secrets."""
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    context = ssl.create_default_context(cafile=settings.ca_file)
    try:
        if settings.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.smtp_host, settings.smtp_port, timeout=settings.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.timeout)
        with smtp:
            if settings.security == "starttls":
                smtp.starttls(context=context)
            password = settings.password()
            if settings.username and password is not None:
                smtp.login(settings.username, password)
            smtp.send_message(message, to_addrs=list(recipients))
    except (OSError, smtplib.SMTPException) as exc:
        raise NotifyError(
            f"mail to {', '.join(recipients)} via {settings.smtp_host}:{settings.smtp_port} "
            f"failed: {type(exc).__name__}: {_plain(exc)}"
        ) from None


def _plain(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {exc.smtp_error.decode('utf-8', 'replace')}"
    return str(exc) or type(exc).__name__


def post_json(
    settings: WebhookSettings, payload: dict[str, Any], sleep: Callable[[float], None] = time.sleep
) -> int:
    """POST ``payload`` as JSON, signed; retried with doubling waits. The final status."""
    body = json_text(payload, separators=(",", ":")).encode("utf-8")
    secret = settings.secret()
    context = ssl.create_default_context(cafile=settings.ca_file)
    last = ""
    for attempt in range(1, settings.attempts + 1):
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "listferry",
            TIMESTAMP_HEADER: timestamp,
        }
        if secret is not None:
            headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
        request = urllib.request.Request(settings.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout, context=context) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                break  # the receiver refuses this request; sending it again will not help
        except (OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if attempt < settings.attempts:
            sleep(settings.backoff * 2 ** (attempt - 1))
    raise NotifyError(
        f"webhook {redact_url(settings.url)} failed after {attempt} attempt(s): {last}"
    )
