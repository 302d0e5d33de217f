"""Sessions, CSRF tokens and login throttling for the console.

A session is a signed cookie (HMAC-SHA256 with the site's secret, kept in
``STATE/web/secret``, mode 0600): the operator's name, the generation of its account (a
new password or role ends older sessions), a random session id and when it expires.
Nothing in it is secret and nothing can be changed without the key. The CSRF token of a
session is an HMAC of its id: forms carry it in a hidden field, scripts in the
``X-CSRF-Token`` header, and every state-changing request made with the cookie must
show it. Requests made with an API token carry no cookie and need none.

Passwords are checked with scrypt (128 MiB, a third of a CPU second each): at most
:data:`CHECKS_AT_ONCE` checks run at a time, and an address or an account that failed
:data:`FAILURES_ALLOWED` times within :data:`FAILURE_WINDOW` seconds is refused until
the window has passed, before any hash is computed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

COOKIE = "listferry_session"
#: Password checks running at once; further logins wait up to :data:`CHECK_WAIT` seconds.
CHECKS_AT_ONCE = 2
CHECK_WAIT = 10.0
#: Failed logins allowed per address (and, counted apart, per account) in the window.
FAILURES_ALLOWED = 5
FAILURE_WINDOW = 900.0
#: Addresses and accounts the throttle keeps track of at most (oldest forgotten first).
MAX_TRACKED = 10_000


def site_secret(state_dir: Path) -> bytes:
    """The key that signs sessions: made once, kept in ``STATE/web/secret`` (0600)."""
    path = state_dir / "web" / "secret"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
    secret = path.read_bytes()
    if len(secret) < 32:
        raise OSError(f"{path}: the console's secret is cut short; remove it to make a new one")
    return secret


@dataclass(frozen=True)
class Session:
    operator: str
    generation: int
    sid: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Makes and reads session cookies, and the CSRF token of each session."""

    def __init__(self, secret: bytes, hours: float) -> None:
        self._key = hashlib.sha256(b"listferry session\0" + secret).digest()
        self._csrf_key = hashlib.sha256(b"listferry csrf\0" + secret).digest()
        self.seconds = hours * 3600

    def issue(self, operator: str, generation: int) -> tuple[Session, str]:
        session = Session(
            operator, generation, secrets.token_urlsafe(16), time.time() + self.seconds
        )
        body = json.dumps(
            [session.operator, session.generation, session.sid, int(session.expires)],
            separators=(",", ":"),
        ).encode()
        payload = _b64(body)
        return session, f"{payload}.{self._sign(payload)}"

    def read(self, cookie: str | None) -> Session | None:
        """The session of ``cookie``; ``None`` for a forged, damaged or expired one."""
        if not cookie or len(cookie) > 1024 or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            operator, generation, sid, expires = json.loads(_unb64(payload))
        except (ValueError, TypeError):
            return None
        if not (isinstance(operator, str) and isinstance(generation, int)):
            return None
        if not isinstance(expires, int) or expires < time.time():
            return None
        return Session(operator, generation, str(sid), expires)

    def csrf(self, session: Session) -> str:
        return hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf(session), str(token))

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


class Throttle:
    """Failed logins by address and by account; and the few password checks at a time."""

    def __init__(
        self,
        allowed: int = FAILURES_ALLOWED,
        window: float = FAILURE_WINDOW,
        at_once: int = CHECKS_AT_ONCE,
    ) -> None:
        self.allowed, self.window = allowed, window
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._checks = threading.BoundedSemaphore(at_once)

    def wait_seconds(self, address: str, account: str) -> float:
        """How long ``address`` (or anyone, for ``account``) must wait to try again; 0
        when it may try now."""
        now = time.monotonic()
        with self._lock:
            waits = [
                self._wait(f"ip {address}", now, self.allowed),
                self._wait(f"account {account}", now, 2 * self.allowed),
            ]
        return max(waits)

    def failed(self, address: str, account: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in (f"ip {address}", f"account {account}"):
                times = self._failures.pop(key, deque())
                times.append(now)
                self._failures[key] = times  # newest last: the oldest are forgotten first
            while len(self._failures) > MAX_TRACKED:
                del self._failures[next(iter(self._failures))]

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(f"ip {address}", None)

    def _wait(self, key: str, now: float, allowed: int) -> float:
        times = self._failures.get(key)
        if not times:
            return 0.0
        while times and now - times[0] > self.window:
            times.popleft()
        if len(times) < allowed:
            return 0.0
        return self.window - (now - times[-allowed])

    @contextlib.contextmanager
    def checking(self) -> Iterator[bool]:
        """A turn to check a password: yields False when none came within the wait."""
        got = self._checks.acquire(timeout=CHECK_WAIT)
        try:
            yield got
        finally:
            if got:
                self._checks.release()
