"""The servers' log: one structured line per event, on the ``listferry.server`` logger."""

from __future__ import annotations

import logging

log = logging.getLogger("listferry.server")


def event(kind: str, *, level: int = logging.INFO, **fields: object) -> None:
    """One structured log line: ``event=login protocol=sftp tenant=acme ip=… result=ok``."""

    def show(value: object) -> str:  # quoted, control characters escaped, when need be
        text = str(value)
        plain = text and text.isprintable() and not any(c in text for c in ' ="')
        return text if plain else repr(text)

    parts = [f"event={kind}"] + [f"{k}={show(v)}" for k, v in fields.items() if v is not None]
    log.log(level, " ".join(parts))
