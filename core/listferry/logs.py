"""Log lines on stderr: one human line per event, or one JSON object per line.

``listferry --log-format json`` (or ``LISTFERRY_LOG_FORMAT=json``) writes every log
line and the final error of a command as JSON: ``time`` (UTC, ISO 8601), ``level``,
``logger``, ``message``, and the fields a caller passed in ``extra`` (``tenant``,
``run_id``, ``status`` ...), for log shippers that index fields.

Either way no control character reaches the log raw: a text line shows it escaped
(:func:`listferry.text.visible`), so a file name cannot forge a second line or steer the
terminal; JSON escapes it and keeps the true value.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from listferry.text import json_text, visible

FORMATS = ("text", "json")

#: The attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        data: dict[str, Any] = {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            data["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return json_text(data, default=str)


class TextFormatter(logging.Formatter):
    """``listferry: message``, the message's control characters escaped; a traceback keeps
    its line breaks."""

    def __init__(self) -> None:
        super().__init__("listferry: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return "\n".join(visible(line) for line in super().formatException(ei).split("\n"))


def setup_logging(verbose: bool, log_format: str) -> None:
    """Send listferry's log lines to stderr in ``log_format``, INFO and up when ``verbose``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_listferry", False):
            root.removeHandler(old)
    handler._listferry = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def error_line(message: str, log_format: str) -> str:
    """A command's final error, as the log format writes it."""
    if log_format != "json":
        return f"Error: {visible(message)}"
    record = logging.LogRecord("listferry", logging.ERROR, "", 0, message, (), None)
    return JsonFormatter().format(record)
