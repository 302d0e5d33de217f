"""Words about things, shown to people: a URL without its secrets, how a process ended."""

from __future__ import annotations

import signal
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """``url`` as it may be shown: without a password, a query or a fragment (tokens sit
    there). A path that is not a URL is given back as it is."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url.split("://", 1)[0] + "://(a URL that does not parse)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if port:
        host = f"{host}:{port}"
    if parts.username:
        host = f"{parts.username}@{host}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def how_ended(returncode: int | None) -> str:
    """How a process ended, in words: ``exited with code 2``, ``was killed by SIGKILL``."""
    if returncode is None:
        return "could not be started"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"
