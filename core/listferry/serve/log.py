"""The servers' log: one structured line per event, on the ``listferry.server`` logger."""

from __future__ import annotations

import logging

from listferry.text import visible

log = logging.getLogger("listferry.server")


def shown(value: object) -> str:
    """A field's value in a log line: control characters escaped (once: a reason that
    holds an escaped name is not escaped again), quoted when it has a space, ``=`` or a
    quote, or is empty."""
    text = visible(value)
    if text and text.isprintable() and not any(c in text for c in " =\"'"):
        return text
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "'" + text.replace("'", "\\'") + "'"


def event(kind: str, *, level: int = logging.INFO, **fields: object) -> None:
    """One structured log line: ``event=login protocol=sftp tenant=acme ip=… result=ok``."""
    parts = [f"event={kind}"] + [f"{k}={shown(v)}" for k, v in fields.items() if v is not None]
    log.log(level, " ".join(parts))
