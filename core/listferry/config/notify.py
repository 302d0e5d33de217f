"""The ``[notify]`` settings: which outcomes are told, the digest, e-mail and webhook.

Secrets (the SMTP password, the webhook's signing key) are named here by the environment
variables that hold them, never held in the config itself. Sending is
:mod:`listferry.ops.notify`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from listferry.config import checks
from listferry.config.checks import Check
from listferry.config.where import where
from listferry.errors import ConfigError, secret_from_env

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

NOTIFY_KEYS: dict[str, tuple[Any, Check]] = {
    "on": (["voided", "failed"], checks.run_outcomes),
    "digest_at": (None, checks.schedule),
    "digest_timezone": ("UTC", checks.time_zone),
}
EMAIL_KEYS: dict[str, tuple[Any, Check]] = {
    "smtp_host": (None, checks.non_empty_string),
    "smtp_port": (587, checks.port),
    "security": ("starttls", checks.one_of(*SECURITY)),
    "username": (None, checks.non_empty_string),
    "password_env": (None, checks.env_name),
    "from": (None, checks.header_address),
    "to": (None, checks.header_addresses),
    "ca_file": (None, checks.non_empty_string),
    "tenant_contacts": (True, checks.boolean),
    "timeout": (30.0, checks.seconds_above_zero),
}
WEBHOOK_KEYS: dict[str, tuple[Any, Check]] = {
    "url": (None, checks.http_url),
    "secret_env": (None, checks.env_name),
    "attempts": (5, checks.whole_number(1, 20)),
    "backoff": (2.0, checks.seconds_above_zero),
    "timeout": (10.0, checks.seconds_above_zero),
    "ca_file": (None, checks.non_empty_string),
}


def parse_notify(text: str, path: Path, data: Any) -> NotifySettings:
    """Check the ``[notify]`` table and its ``email`` and ``webhook`` sub-tables."""
    from listferry.config.settings import _check_table

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
                raise ConfigError(f"{where(path, text, f'notify.{name}')} needs {key}")
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
