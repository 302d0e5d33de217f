"""Telling people about runs: the ``[notify]`` settings, e-mail and signed webhooks.

The ``email`` and ``webhook`` plugins (``listferry_plugins.notify.email`` and
``notify_webhook``) implement ``run_finished`` with what is here; the daily digest
(:mod:`listferry.ops.digest`) sends through the same e-mail settings. Secrets (the SMTP
password, the webhook's signing key) are read from the environment variables the
config names, never from the config itself, and never appear in a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from listferry.errors import ListferryError, secret_from_env

log = logging.getLogger("listferry")

RUN_STATUSES = ("applied", "voided", "failed", "skipped", "idle")
SECURITY = ("starttls", "tls", "none")
SIGNATURE_HEADER = "X-Listferry-Signature"
TIMESTAMP_HEADER = "X-Listferry-Timestamp"


class NotifyError(ListferryError):
    """A notification could not be delivered (after its retries)."""


@dataclass(frozen=True)
class EmailSettings:
    """``[notify.email]``: where and how to send mail."""

    smtp_host: str
    to: tuple[str, ...]
    sender: str
    smtp_port: int = 587
    security: str = "starttls"
    username: str | None = None
    password_env: str | None = None
    ca_file: str | None = None
    tenant_contacts: bool = True
    timeout: float = 30.0

    def password(self) -> str | None:
        return secret_from_env(self.password_env, "[notify.email] password_env")


@dataclass(frozen=True)
class WebhookSettings:
    """``[notify.webhook]``: the URL runs are posted to, and how hard to try."""

    url: str
    secret_env: str | None = None
    attempts: int = 5
    backoff: float = 2.0
    timeout: float = 10.0
    ca_file: str | None = None

    def secret(self) -> bytes | None:
        value = secret_from_env(self.secret_env, "[notify.webhook] secret_env")
        return None if value is None else value.encode("utf-8")


@dataclass(frozen=True)
class NotifySettings:
    """``[notify]``: which outcomes are told, the digest, and the two channels."""

    on: tuple[str, ...] = ("voided", "failed")
    digest_at: str | None = None
    digest_timezone: str = "UTC"
    email: EmailSettings | None = None
    webhook: WebhookSettings | None = None


# -- messages ---------------------------------------------------------------------------


def run_subject(run: Any) -> str:
    what = f" {run.file}" if run.file else ""
    return f"listferry: {run.tenant} {run.status}{what}"


def run_text(run: Any) -> str:
    """The mail body for one run: what happened, why, and what to do."""
    lines = [f"Tenant:  {run.tenant}", f"Outcome: {run.status}"]
    if run.file:
        lines.append(f"File:    {run.file}")
    if run.run_id is not None:
        lines.append(f"Run:     {run.run_id}")
    lines.append(f"Ended:   {run.finished_at or run.started_at}")
    if run.reason:
        lines += ["", "Why:", f"  {run.reason}"]
    if run.status == "applied":
        lines += [
            "",
            f"Received {run.received}: {run.added} added, {run.updated} updated, "
            f"{run.removed} removed, {run.unsubscribed} unsubscribed, {run.unchanged} "
            f"unchanged; {run.invalid} invalid, {run.duplicates} duplicates.",
        ]
    elif run.status == "voided":
        lines += [
            "",
            "Nothing was changed: the last good list stands. Send a corrected file; the",
            "file stays in the home until it is replaced (or forced, for the shrink guard).",
        ]
    elif run.status == "failed":
        lines += ["", "Nothing was changed. The file, if any, stays pending for the next run."]
    return "\n".join(lines) + "\n"


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``timestamp + "." + body`` under ``secret``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, header: str, now: float | None = None,
           tolerance: float = 300.0) -> bool:  # fmt: skip
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
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
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
    raise NotifyError(f"webhook {_shown(settings.url)} failed after {attempt} attempt(s): {last}")


def _shown(url: str) -> str:
    """The URL without a query (a token may sit there) and without a password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# -- the [notify] table -----------------------------------------------------------------


def _statuses(value: Any) -> str | None:
    if not isinstance(value, list) or not all(v in RUN_STATUSES for v in value):
        return f"must be a list of run outcomes among {', '.join(RUN_STATUSES)}"
    return None


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


def _address(value: Any) -> str | None:
    if not isinstance(value, str) or "@" not in value or any(c in value for c in "\r\n,;<>"):
        return f"must be one e-mail address, not {value!r}"
    return None


def _addresses(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of e-mail addresses"
    for item in value:
        if problem := _address(item):
            return problem
    return None


def _port(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536
    return None if ok else "must be a port number (1-65535)"


def _positive(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return None if ok else "must be a positive number"


def _count(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 20
    return None if ok else "must be a whole number from 1 to 20"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _security(value: Any) -> str | None:
    return None if value in SECURITY else f"must be one of {', '.join(SECURITY)}"


def _url(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return "must be an http:// or https:// URL"
    return None


def _env_name(value: Any) -> str | None:
    if not isinstance(value, str) or not value.replace("_", "").isalnum():
        return "must name an environment variable (letters, digits, '_')"
    return None


def _time_of_day(value: Any) -> str | None:
    from listferry.config.schedule import Schedule, ScheduleError

    if not isinstance(value, str):
        return 'must be a time of day such as "07:00", or a cron expression'
    try:
        Schedule.parse(value)
    except ScheduleError as exc:
        return str(exc)
    return None


def _zone(value: Any) -> str | None:
    from listferry.config.schedule import ScheduleError, zone

    if not isinstance(value, str):
        return "must be an IANA time zone name"
    try:
        zone(value)
    except ScheduleError as exc:
        return str(exc)
    return None


NOTIFY_KEYS: dict[str, tuple[Any, Callable[[Any], str | None]]] = {
    "on": (["voided", "failed"], _statuses),
    "digest_at": (None, _time_of_day),
    "digest_timezone": ("UTC", _zone),
}
EMAIL_KEYS: dict[str, tuple[Any, Callable[[Any], str | None]]] = {
    "smtp_host": (None, _text),
    "smtp_port": (587, _port),
    "security": ("starttls", _security),
    "username": (None, _text),
    "password_env": (None, _env_name),
    "from": (None, _address),
    "to": (None, _addresses),
    "ca_file": (None, _text),
    "tenant_contacts": (True, _bool),
    "timeout": (30.0, _positive),
}
WEBHOOK_KEYS: dict[str, tuple[Any, Callable[[Any], str | None]]] = {
    "url": (None, _url),
    "secret_env": (None, _env_name),
    "attempts": (5, _count),
    "backoff": (2.0, _positive),
    "timeout": (10.0, _positive),
    "ca_file": (None, _text),
}


def parse_notify(text: str, path: Path, data: Any) -> NotifySettings:
    """Check the ``[notify]`` table and its ``email`` and ``webhook`` sub-tables."""
    from listferry.config.settings import _check_table, line_of
    from listferry.errors import ConfigError

    if data is None:
        return NotifySettings()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: notify must be a table ([notify])")
    own = {k: v for k, v in data.items() if k not in ("email", "webhook")}
    values = _check_table(text, path, "notify", own, NOTIFY_KEYS)
    values = {key: values.get(key, default) for key, (default, _) in NOTIFY_KEYS.items()}
    channels: dict[str, Any] = {}
    for name, keys, required in (
        ("email", EMAIL_KEYS, ("smtp_host", "from", "to")),
        ("webhook", WEBHOOK_KEYS, ("url",)),
    ):
        table = data.get(name)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: notify.{name} must be a table ([notify.{name}])")
        checked = _check_table(text, path, f"notify.{name}", table, keys)
        for key in required:
            if key not in checked:
                where = line_of(text, f"notify.{name}")
                raise ConfigError(
                    f"{path}{f' line {where}' if where else ''}: [notify.{name}] needs {key}"
                )
        checked = {key: checked.get(key, default) for key, (default, _) in keys.items()}
        if checked.get("ca_file"):
            checked["ca_file"] = str((path.parent / checked["ca_file"]).resolve())
        if name == "email":
            checked["sender"] = checked.pop("from")
            checked["to"] = tuple(checked["to"])
            channels[name] = EmailSettings(**checked)
        else:
            channels[name] = WebhookSettings(**checked)
    return NotifySettings(
        on=tuple(values["on"]),
        digest_at=values["digest_at"],
        digest_timezone=values["digest_timezone"],
        **channels,
    )
