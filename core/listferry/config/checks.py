"""Every check a config value goes through, each named for what it accepts.

A check takes a value as TOML read it and returns ``None`` when it is good, else the
problem in words that follow the key: ``[server] ftp_port`` *must be a port number from
0 to 65535 (0: any free port)*. The tables of ``[listferry]``, ``[server]``,
``[defaults]``, ``[tenants.NAME]`` and ``[notify]`` all take their checks from here, so a
key of one kind is checked the same way in every table.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from listferry.config.passwords import password_hash_problem
from listferry.config.public_keys import public_key_problem
from listferry.dialect import fold_header
from listferry.runs import OUTCOMES

#: A check: ``None`` for a good value, else what is wrong with it.
Check = Callable[[Any], str | None]

#: The longest wait a setting may ask for: a year, in seconds (``inf`` would never end).
MAX_SECONDS = 365 * 24 * 3600


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- plain values ---------------------------------------------------------------------


def string(value: Any) -> str | None:
    """Any string without a NUL character."""
    if not isinstance(value, str):
        return "must be a str"
    return "must not hold a NUL character" if "\x00" in value else None


def non_empty_string(value: Any) -> str | None:
    """A string with more than blanks in it, without a NUL character."""
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    return string(value)


def boolean(value: Any) -> str | None:
    """``true`` or ``false``."""
    return None if isinstance(value, bool) else "must be true or false"


def one_of(*choices: str) -> Check:
    """One of ``choices``."""

    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def whole_number(low: int, high: int | None = None) -> Check:
    """A whole number from ``low`` (to ``high``, when given)."""

    def check(value: Any) -> str | None:
        if high is None:
            ok = _is_int(value) and value >= low
            return None if ok else f"must be a whole number, {low} or more"
        ok = _is_int(value) and low <= value <= high
        return None if ok else f"must be a whole number from {low} to {high}"

    return check


def share(value: Any) -> str | None:
    """A number from 0 to 1."""
    ok = _is_number(value) and 0 <= value <= 1
    return None if ok else "must be a number from 0 to 1"


def seconds(value: Any) -> str | None:
    """A number of seconds from 0 to :data:`MAX_SECONDS`."""
    ok = _is_number(value) and 0 <= value <= MAX_SECONDS
    return None if ok else f"must be a number of seconds from 0 to {MAX_SECONDS}"


def seconds_above_zero(value: Any) -> str | None:
    """A number of seconds above 0, at most :data:`MAX_SECONDS`."""
    ok = _is_number(value) and 0 < value <= MAX_SECONDS
    return None if ok else f"must be a number of seconds above 0, at most {MAX_SECONDS}"


#: Units of :func:`byte_size`: decimal (``KB`` is 1000 bytes) and binary (``KiB`` is 1024).
BYTE_UNITS = {
    "": 1,
    "B": 1,
    **{f"{p}B": 1000 ** (i + 1) for i, p in enumerate("KMGTP")},
    **{f"{p}iB": 1024 ** (i + 1) for i, p in enumerate("KMGTP")},
}
_BYTE_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B|B)?\s*", re.IGNORECASE)


def bytes_of(value: int | str) -> int:
    """The number of bytes a good :func:`byte_size` value stands for."""
    if _is_int(value):
        return int(value)
    match = _BYTE_SIZE.fullmatch(str(value))
    if match is None:
        raise ValueError(f"not a size: {value!r}")
    number, unit = match.groups()
    factor = {u.upper(): f for u, f in BYTE_UNITS.items()}[(unit or "").upper()]
    return int(float(number) * factor)


def byte_size(value: Any) -> str | None:
    """A size: a whole number of bytes, or a number and a unit (``"500 MB"``, ``"2 GiB"``)."""
    problem = 'must be a size: a whole number of bytes or a number and a unit ("500 MB", "2 GiB")'
    if _is_int(value):
        return None if value >= 0 else problem
    if isinstance(value, str) and _BYTE_SIZE.fullmatch(value):
        return None
    return problem


def octal_mask(value: Any) -> str | None:
    """A file mode mask as a string of octal digits (``"027"``), owner bits left alone."""
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{1,3}", value):
        return 'must be a string of octal digits, such as "027"'
    return None if int(value, 8) & 0o700 == 0 else "must leave the owner's bits alone (0xx)"


# -- lists ------------------------------------------------------------------------------


def string_list(value: Any) -> str | None:
    """A list of strings, empty or not."""
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return None if ok else "must be a list of strings"


def column_names(value: Any) -> str | None:
    """A list of column names, none blank and none twice (as headers are compared)."""
    if string_list(value) or not all(name.strip() for name in value):
        return "must be a list of column names"
    first: dict[str, str] = {}
    for name in value:
        if fold_header(name) in first:
            return f"names one column twice: {first[fold_header(name)]!r} and {name!r}"
        first[fold_header(name)] = name
    return None


def non_empty_words(value: Any) -> str | None:
    """A list of one or more words, none blank."""
    if string_list(value) or not value or not all(word.strip() for word in value):
        return "must be a list of one or more words (an empty cell cannot mean opted out)"
    return None


def ip_networks(value: Any) -> str | None:
    """A list of IP addresses and CIDR networks."""
    if string_list(value):
        return "must be a list of strings"
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"has {item!r}, which is not an IP address or CIDR network"
    return None


def ipv4_or_empty(value: Any) -> str | None:
    """An IPv4 address, or empty."""
    if not isinstance(value, str):
        return "must be a string"
    if value:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return f"is {value!r}, which is not an IPv4 address (FTP's passive reply names one)"
    return None


def run_outcomes(value: Any) -> str | None:
    """A list of run outcomes (``applied``, ``voided`` ...)."""
    if not isinstance(value, list) or not all(v in OUTCOMES for v in value):
        return f"must be a list of run outcomes among {', '.join(OUTCOMES)}"
    return None


# -- network ----------------------------------------------------------------------------


def port(value: Any) -> str | None:
    """A port to connect to: 1 to 65535."""
    ok = _is_int(value) and 0 < value < 65536
    return None if ok else "must be a port number (1-65535)"


def port_or_any(value: Any) -> str | None:
    """A port to listen on: 1 to 65535, or 0 for any free port."""
    ok = _is_int(value) and 0 <= value <= 65535
    return None if ok else "must be a port number from 0 to 65535 (0: any free port)"


def port_any_or_off(value: Any) -> str | None:
    """A port to listen on, ``0`` for any free port, or ``"off"``."""
    if value == "off" or (_is_int(value) and 0 <= value <= 65535):
        return None
    return 'must be a port number from 0 to 65535 (0: any free port), or "off"'


def port_range_or_empty(value: Any) -> str | None:
    """A range of ports from 1024 up, ``"60000-60099"``, or ``""`` for any."""
    match = re.fullmatch(r"(\d+)-(\d+)", value) if isinstance(value, str) else None
    if value == "" or (match and 1024 <= int(match[1]) <= int(match[2]) <= 65535):
        return None
    return 'must be a range of ports like "60000-60099" (1024 and up), or "" for any'


def http_url(value: Any) -> str | None:
    """An ``http://`` or ``https://`` URL."""
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return "must be an http:// or https:// URL"
    return None


def env_name(value: Any) -> str | None:
    """The name of an environment variable: letters, digits and ``_``."""
    if not isinstance(value, str) or not value.replace("_", "").isalnum():
        return "must name an environment variable (letters, digits, '_')"
    return None


# -- e-mail -----------------------------------------------------------------------------


def email_address(value: Any) -> str | None:
    """One address ``name@domain.tld``, without blanks, commas, semicolons or brackets."""
    ok = isinstance(value, str) and re.fullmatch(r"[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+", value)
    return None if ok else "must be one e-mail address"


def header_address(value: Any) -> str | None:
    """One address a mail header can carry: an ``@``, and no line break, comma,
    semicolon or angle bracket that would make it several."""
    if not isinstance(value, str) or "@" not in value or any(c in value for c in "\r\n,;<>"):
        return f"must be one e-mail address, not {value!r}"
    return None


def header_addresses(value: Any) -> str | None:
    """A list of one or more :func:`header_address` addresses."""
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of e-mail addresses"
    for item in value:
        if problem := header_address(item):
            return problem
    return None


# -- logins -----------------------------------------------------------------------------


def password_hash(value: Any) -> str | None:
    """A salted password hash as ``listferry tenant password`` writes it."""
    return string(value) or password_hash_problem(value)


def ssh_public_keys(value: Any) -> str | None:
    """A list of OpenSSH public key lines."""
    if string_list(value):
        return "must be a list of OpenSSH public key lines"
    for number, line in enumerate(value, start=1):
        problem = public_key_problem(line)
        if problem:
            return f"item {number} is {problem}"
    return None


# -- files ------------------------------------------------------------------------------


def file_pattern(value: Any) -> str | None:
    """A shell-style file name pattern that is not blank and names no folder."""
    problem = string(value)
    if problem:
        return problem
    if not value.strip():
        return 'must not be empty: the tenant would never take a file (the default is "*.csv")'
    if "/" in value or "\\" in value:
        return (
            'must be a file name pattern such as "*.csv": a sync looks only at the top of the home'
        )
    return None


def export_stem(pattern: str, date: str, tenant: str) -> str:
    """A return file's name without suffix: ``pattern`` with ``{date}`` and ``{tenant}``.

    Raises ``ValueError`` saying why when it cannot make a plain file name.
    """
    try:
        stem = pattern.format_map({"date": date, "tenant": tenant})
    except (KeyError, ValueError, IndexError, AttributeError) as exc:
        raise ValueError(f"can use only {{date}} and {{tenant}} ({exc})") from None
    if not stem or stem.startswith(".") or any(c in stem for c in "/\\\0") or stem != stem.strip():
        raise ValueError("does not make a plain file name")
    return stem


def export_name(value: Any) -> str | None:
    """A return file name pattern that makes a plain file name (:func:`export_stem`)."""
    if not isinstance(value, str) or "\x00" in value:
        return "must be a string"
    try:
        export_stem(value, "20261130", "tenant")
    except ValueError as exc:
        return str(exc)
    return None


# -- time -------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+)\s*([mhd])$")
_UNIT = {"m": 60, "h": 3600, "d": 86400}


def duration_seconds(value: str) -> int:
    """``"36h"``, ``"3d"``, ``"90m"`` in seconds."""
    match = _DURATION.match(value.strip())
    if not match:
        raise ValueError(value)
    return int(match[1]) * _UNIT[match[2]]


def duration_or_empty(value: Any) -> str | None:
    """A duration such as ``"36h"``, ``"3d"`` or ``"90m"``, at most a year; or ``""``."""
    if value == "":
        return None
    try:
        seconds = duration_seconds(value) if isinstance(value, str) else 0
    except ValueError:
        seconds = 0
    if not 0 < seconds <= MAX_SECONDS:
        return 'must be a duration such as "36h", "3d" or "90m" (at most a year), or ""'
    return None


def _never_due(value: str) -> str | None:
    """What makes ``value`` no schedule that is ever due, worded ``schedule '...' ...``."""
    from listferry.config.schedule import Schedule, ScheduleError

    try:
        Schedule.parse(value).next_after(datetime.now(UTC))
    except ScheduleError as exc:
        return str(exc)
    return None


def schedule(value: Any) -> str | None:
    """A time of day or a cron expression that is due some time."""
    if not isinstance(value, str):
        return 'must be a time of day such as "07:00", or a cron expression'
    return _never_due(value)


def schedule_or_empty(value: Any) -> str | None:
    """A :func:`schedule`, or ``""`` for none."""
    if value == "":
        return None
    if not isinstance(value, str):
        return 'must be a time of day ("02:00"), a cron expression ("30 2 * * 1-5") or ""'
    problem = _never_due(value)
    return problem.removeprefix("schedule ") if problem else None  # it follows the key


def time_zone(value: Any) -> str | None:
    """An IANA time zone name this machine knows."""
    from listferry.config.schedule import ScheduleError, zone

    if not isinstance(value, str):
        return 'must be an IANA time zone name such as "Europe/Berlin"'
    try:
        zone(value)
    except ScheduleError as exc:
        return str(exc)
    return None
