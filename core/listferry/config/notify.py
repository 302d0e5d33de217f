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
from listferry.config.keys import REQUIRED, attributes, checked, key_table, keys_of, setting
from listferry.config.where import not_a_table, where
from listferry.errors import ConfigError, secret_from_env

SECURITY = ("starttls", "tls", "none")


@dataclass(frozen=True, kw_only=True)
class EmailSettings:
    """``[notify.email]``: where and how to send mail."""

    smtp_host: str = setting(REQUIRED, checks.non_empty_string, "The SMTP server.")
    smtp_port: int = setting(587, checks.port, "The SMTP server's port.")
    security: str = setting(
        "starttls",
        checks.one_of(*SECURITY),
        "`starttls`, `tls` (implicit TLS) or `none`; certificates are verified (against "
        "`ca_file` if given).",
    )
    username: str | None = setting(None, checks.non_empty_string, "The login.")
    password_env: str | None = setting(
        None, checks.env_name, "The environment variable holding the login's password."
    )
    sender: str = setting(REQUIRED, checks.header_address, "The sender.", toml="from")
    to: tuple[str, ...] = setting(REQUIRED, checks.header_addresses, "The operators' addresses.")
    ca_file: str | None = setting(
        None,
        checks.non_empty_string,
        "A CA bundle for the server's certificate, instead of the system's.",
        path=True,
    )
    tenant_contacts: bool = setting(
        True, checks.boolean, "Also mail a voided run to the tenant's `contact_email`."
    )
    timeout: float = setting(
        30.0, checks.seconds_above_zero, "Seconds before a stalled server counts as down."
    )

    def password(self) -> str | None:
        return secret_from_env(self.password_env, "[notify.email] password_env")


@dataclass(frozen=True, kw_only=True)
class WebhookSettings:
    """``[notify.webhook]``: the URL runs are posted to, and how hard to try."""

    url: str = setting(
        REQUIRED,
        checks.http_url,
        "Where each run is POSTed, as the JSON `sync --json` prints for it.",
    )
    secret_env: str | None = setting(
        None,
        checks.env_name,
        "The environment variable holding the signing key: each request carries "
        "`X-Listferry-Timestamp` and `X-Listferry-Signature: sha256=<hex>`, the HMAC-SHA256 of "
        "`<timestamp>.<body>`.",
    )
    attempts: int = setting(
        5,
        checks.whole_number(1, 20),
        "How many times a run is posted before it is given up: connection errors, timeouts, "
        "408, 429 and 5xx are tried again.",
    )
    backoff: float = setting(
        2.0,
        checks.seconds_above_zero,
        "Seconds before the second attempt, doubled after each.",
    )
    timeout: float = setting(
        10.0, checks.seconds_above_zero, "Seconds before a stalled receiver counts as down."
    )
    ca_file: str | None = setting(
        None,
        checks.non_empty_string,
        "A CA bundle for the receiver's certificate, instead of the system's.",
        path=True,
    )

    def secret(self) -> bytes | None:
        value = secret_from_env(self.secret_env, "[notify.webhook] secret_env")
        return None if value is None else value.encode("utf-8")


@dataclass(frozen=True)
class NotifySettings:
    """``[notify]``: which outcomes are told, the digest, and the two channels."""

    on: tuple[str, ...] = setting(
        ["voided", "failed"],
        checks.run_outcomes,
        "The run outcomes that send a mail and a webhook.",
    )
    digest_at: str | None = setting(
        None,
        checks.schedule,
        "When the schedule mails the daily digest (a time of day or cron expression). "
        "`listferry digest` prints it any time.",
    )
    digest_timezone: str = setting("UTC", checks.time_zone, "The zone of `digest_at`.")
    email: EmailSettings | None = None
    webhook: WebhookSettings | None = None


NOTIFY_KEYS: dict[str, tuple[Any, Check]] = key_table(keys_of(NotifySettings))
EMAIL_KEYS: dict[str, tuple[Any, Check]] = key_table(keys_of(EmailSettings))
WEBHOOK_KEYS: dict[str, tuple[Any, Check]] = key_table(keys_of(WebhookSettings))
#: The sub-tables of ``[notify]``: name -> the dataclass of its keys.
CHANNELS: dict[str, type] = {"email": EmailSettings, "webhook": WebhookSettings}


def parse_notify(text: str, path: Path, data: Any) -> NotifySettings:
    """Check the ``[notify]`` table and its ``email`` and ``webhook`` sub-tables."""
    if data is None:
        return NotifySettings()
    if not isinstance(data, dict):
        raise not_a_table(path, "notify")
    own = {k: v for k, v in data.items() if k not in CHANNELS}
    given = checked(text, path, "notify", own, keys_of(NotifySettings))
    channels: dict[str, Any] = {}
    for name, cls in CHANNELS.items():
        table = data.get(name)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise not_a_table(path, f"notify.{name}")
        keys = keys_of(cls)
        values = checked(text, path, f"notify.{name}", table, keys)
        for key in keys.values():
            if key.required and key.name not in values:
                raise ConfigError(f"{where(path, text, f'notify.{name}')} needs {key.name}")
            if key.path and values.get(key.name):
                values[key.name] = str((path.parent / values[key.name]).resolve())
        channels[name] = cls(**attributes(keys.values(), values))
    return NotifySettings(**attributes(keys_of(NotifySettings).values(), given), **channels)
