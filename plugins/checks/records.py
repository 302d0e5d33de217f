"""Record checks, a batch at a time: every row must carry a valid e-mail address."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from listferry import hookimpl
from listferry.records import Invalid, Record

# A practical address check: what mail systems accept, not all that RFC 5322 allows.
EMAIL = re.compile(
    r"(?!\.)(?!.*\.\.)[\w!#$%&'*+/=?^`{|}~.-]{1,64}(?<!\.)"
    r"@(?=.{1,253}$)(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_][^\W_]{1,62}"
)


#: The everyday address in lower-case ASCII, cheaper to match: all it takes, ``EMAIL`` does
#: too, given no ``..`` and at most 254 characters. Only the other rows meet ``EMAIL``.
PLAIN = re.compile(
    r"[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)


def invalid_emails(records: list[Record]) -> Iterator[Invalid]:
    plain, match = PLAIN.fullmatch, EMAIL.fullmatch
    suspects = [r for r in records if not plain(r.email) or ".." in r.email or len(r.email) > 254]
    for record in suspects:
        email = record.email
        if not email:
            yield Invalid(record.line, "empty e-mail address")
        elif not match(email):
            yield Invalid(record.line, f"{email!r} is not a valid e-mail address")


@hookimpl
def validate_records(records: list[Record], file: Any) -> list[Invalid]:
    return list(invalid_emails(records))
