"""The ``[web]`` table: where the operator's console listens and how it keeps sessions.

The console (``listferry web``, or inside ``serve`` with ``enabled = true``) is for the
platform's operators, never for customers: it binds to 127.0.0.1 unless told otherwise.
Its accounts are not in this file; ``listferry operator add`` keeps them, hashed, in the
console's own database in the state folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from listferry.config import checks
from listferry.config.keys import attributes, checked, keys_of, setting
from listferry.config.where import not_a_table


def _hours(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 720
    return None if ok else "must be a number of hours above 0, at most 720 (30 days)"


@dataclass(frozen=True)
class WebSettings:
    """``[web]``: the operator's console and its JSON API."""

    enabled: bool = setting(
        False,
        checks.boolean,
        "Run the console inside `listferry serve` too (`listferry web` runs it alone).",
    )
    host: str = setting(
        "127.0.0.1",
        checks.non_empty_string,
        "The address the console listens on. Keep it on loopback and put a TLS proxy in "
        "front to reach it from elsewhere.",
    )
    port: int = setting(8780, checks.port, "The console's TCP port.")
    secure_cookies: bool = setting(
        False,
        checks.boolean,
        "Mark the session cookie `Secure` (sent over HTTPS only): set it when the console "
        "is reached through a TLS proxy. Without it the cookie is `Secure` only when the "
        "console itself sees an https:// request.",
    )
    session_hours: float = setting(
        12.0,
        lambda value: _hours(value),
        "Hours a console login lasts; after that the operator logs in again.",
    )
    page_size: int = setting(50, checks.whole_number(5, 1000), "Runs per page on a tenant's page.")


def parse_web(text: str, path: Path, data: Any) -> WebSettings:
    """Check the ``[web]`` table."""
    if data is None:
        return WebSettings()
    if not isinstance(data, dict):
        raise not_a_table(path, "web")
    given = checked(text, path, "web", data, keys_of(WebSettings))
    return WebSettings(**attributes(keys_of(WebSettings).values(), given))
