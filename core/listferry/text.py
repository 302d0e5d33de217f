"""Words about things, shown to people: text a terminal cannot be steered by, a URL
without its secrets, how a process ended."""

from __future__ import annotations

import json
import signal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: What :func:`visible` escapes: C0, DEL and C1 controls (a terminal's escape sequences,
#: line breaks that forge a log line, NUL, BEL), the Unicode line and paragraph
#: separators, and the bidirectional embeddings, overrides and isolates that make a
#: name read backwards. Each becomes its escape as Python writes it: ``\x1b``, ``\n``,
#: ``\u202e``.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES |= {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_ESCAPES |= {
    c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
}
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in _ESCAPES if c >= 0x7F}


def visible(text: object) -> str:
    r"""``text`` with every control character escaped, for a terminal, a log line, a report
    or a mail: a name holding ESC ] 0 ; x BEL shows as ``a\x1b]0;x\x07.csv``.

    The one escaping of what a customer controls (file names, paths, user names, CSV
    values quoted in a reason, error text) wherever listferry shows it. A backslash is
    left as it is, so escaping twice is escaping once: a message built from an escaped
    name and escaped again where it is shown reads the same.
    """
    return str(text).translate(_ESCAPES)


def json_text(data: Any, **options: Any) -> str:
    r"""``data`` as JSON (UTF-8 kept) with no control character left raw: the value is the
    true one, DEL, C1 and bidirectional controls written as ``\u`` escapes (``json.dumps``
    escapes C0 itself)."""
    return json.dumps(data, ensure_ascii=False, **options).translate(_JSON_ESCAPES)


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


def size_text(size: int) -> str:
    """``size`` bytes as an operator would write them: the largest unit that holds it
    whole, decimal or binary (``10 GB``, ``2 GiB``, ``300 KB``), else one decimal of a
    binary unit (``66.9 MiB``); under 1 KB, ``100 bytes``."""
    units = [(f"{p}B", 1000 ** (i + 1)) for i, p in enumerate("KMGT")]
    units += [(f"{p}iB", 1024 ** (i + 1)) for i, p in enumerate("KMGT")]
    whole = [(factor, unit) for unit, factor in units if size >= factor and size % factor == 0]
    if whole:
        factor, unit = max(whole)
        return f"{size // factor} {unit}"
    if size < 1000:
        return f"{size} bytes"
    value, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"
