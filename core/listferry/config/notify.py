"""The ``[notify]`` settings: which outcomes are told, the digest, e-mail and webhook.

Secrets (the SMTP password, the webhook's signing key) are named here by the environment
variables that hold them, never held in the config itself. Sending is
:mod:`listferry.ops.notify`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from listferry.errors import secret_from_env
from listferry.runs import OUTCOMES

SECURITY = ("starttls", "tls", "none")


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


# -- the [notify] table -----------------------------------------------------------------


def _statuses(value: Any) -> str | None:
    if not isinstance(value, list) or not all(v in OUTCOMES for v in value):
        return f"must be a list of run outcomes among {', '.join(OUTCOMES)}"
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
