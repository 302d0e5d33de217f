"""Times as listferry writes and reads them: ISO 8601, UTC, to the second, with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime

#: The one format of every time listferry stores, prints and exports.
ISO = "%Y-%m-%dT%H:%M:%SZ"


def iso(moment: datetime | float) -> str:
    """``moment`` (an aware datetime, or seconds since the epoch) as ISO 8601 UTC."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime(ISO)


def utcnow() -> str:
    """The current time as ISO 8601 UTC."""
    return iso(datetime.now(UTC))


def parse_iso(text: str | None) -> datetime | None:
    """An ISO 8601 time (``Z`` or an offset; naive is taken as UTC) as an aware UTC
    datetime; ``None`` for none. A text that is not a time raises ``ValueError``."""
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
