"""Password hashes for tenant logins: salted scrypt, never the password itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

#: scrypt's cost for new hashes (OWASP's N=2^17, r=8, p=1): 128 MiB and about a third of a
#: second of a CPU per check. Hashes made with less are upgraded at their next good login.
N, R, P = 2**17, 8, 1
#: The most memory one check may take; a stored hash asking for more never matches.
MAX_MEMORY = 2**28
#: The fewest characters a new password may have; hashes made before keep working.
MIN_PASSWORD_LENGTH = 12


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def password_problem(password: str) -> str | None:
    """Why ``password`` may not be a tenant's new password, or ``None``."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return (
            f"a password needs at least {MIN_PASSWORD_LENGTH} characters "
            f"(this one has {len(password)})"
        )
    return None


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` for ``password``, with a fresh random salt."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=N, r=R, p=P, maxmem=MAX_MEMORY, dklen=32
    )
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with less than today's cost (:data:`N`, :data:`R`, :data:`P`)."""
    try:
        _, n, r, p, _, _ = stored.split("$")
        return int(n) * int(r) * int(p) < N * R * P
    except ValueError:
        return False


def password_hash_problem(stored: str) -> str | None:
    """Why ``stored`` is not a hash as :func:`hash_password` writes it, or ``None``; never
    says what it holds (it may be a password written in by mistake)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        fine = scheme == "scrypt" and int(n) > 1 and int(n) & (int(n) - 1) == 0
        fine = fine and int(r) > 0 and int(p) > 0
        fine = fine and bool(base64.b64decode(salt, validate=True))
        fine = fine and bool(base64.b64decode(digest, validate=True))
    except (ValueError, TypeError):
        fine = False
    if fine:
        return None
    return (
        "must be a password hash as `listferry tenant password NAME --password-stdin` "
        "writes it (scrypt$...), never a plain password"
    )


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the ``stored`` hash; false for any malformed hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=MAX_MEMORY,
            dklen=len(expected),
        )
    except (ValueError, TypeError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)
