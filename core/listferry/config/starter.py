"""The config ``listferry init`` (and ``listferry demo``) write: commented, to be edited.

Each key it shows is written from the key's declaration (:mod:`listferry.config.keys`):
its default, or an example its check takes, and its short comment, so neither can
drift from the key it describes.
"""

from __future__ import annotations

import json
from typing import Any

from listferry.config.keys import Key, keys_of
from listferry.config.notify import EmailSettings
from listferry.config.settings import ListferrySettings, Tenant

#: A comment starts at this column at least; the comments of adjacent lines line up.
COMMENT_COLUMN = 18

#: A line of the file: its text and the comment beside it, if any.
Line = tuple[str, str | None]


def _toml(value: Any) -> str:
    """A string, a list of strings, a number or a boolean as TOML writes it (as JSON)."""
    return json.dumps(value, ensure_ascii=False)


def default(key: Key) -> Line:
    """``key = default  # its comment``."""
    return f"{key.name} = {_toml(key.default)}", key.comment


def example(key: Key, value: Any) -> Line:
    """``# key = value``: a key to set, commented out; ``value`` must be one it takes."""
    problem = key.check(value)
    if problem:
        raise ValueError(f"starter config: {key.name} {problem}")
    return f"# {key.name} = {_toml(value)}", None


def lay_out(lines: list[Line]) -> list[str]:
    """The lines, each comment at :data:`COMMENT_COLUMN` or beyond, lined up with the
    comments of the lines next to it."""
    out: list[str] = []
    run: list[Line] = []
    for line in [*lines, ("", None)]:
        if line[1] is not None:
            run.append(line)
            continue
        column = max([COMMENT_COLUMN, *(len(text) + 2 for text, _ in run)])
        out += [f"{text:<{column}}# {comment}" for text, comment in run]
        run = []
        out.append(line[0])
    return out[:-1]


def starter_config() -> str:
    """The starter config's text."""
    listferry, tenant, email = keys_of(ListferrySettings), keys_of(Tenant), keys_of(EmailSettings)
    blocks: list[list[Line]] = [
        [("# listferry configuration: see docs/operator.md for every key.", None)],
        [("[listferry]", None), default(listferry["state"]), default(listferry["homes"])],
        [
            ("[defaults]", "settings every tenant gets unless its own table says otherwise"),
            default(tenant["dialect"]),
            default(tenant["strategy"]),
            default(tenant["count_file"]),
            default(tenant["schedule"]),
            default(tenant["timezone"]),
        ],
        [
            ("# Who hears of voided and failed runs (docs/operations.md):", None),
            ("# [notify.email]", None),
            example(email["smtp_host"], "smtp.example.net"),
            example(email["username"], "listferry"),
            example(email["password_env"], "LISTFERRY_SMTP_PASSWORD"),
            example(email["from"], "listferry@example.net"),
            example(email["to"], ["newsletter-ops@example.net"]),
        ],
        [
            ("# Add tenants with `listferry tenant add NAME`, or by hand:", None),
            ("# [tenants.acme]", None),
            example(tenant["strategy"], "incremental"),
        ],
    ]
    return "\n\n".join("\n".join(lay_out(block)) for block in blocks) + "\n"


STARTER_CONFIG = starter_config()
