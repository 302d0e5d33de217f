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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

COOKIE = "listferry_session"
#: Password checks running at once (as many more may wait their turn).
CHECKS_AT_ONCE = 2
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


def same(one: str, other: str) -> bool:
    """Whether two strings are equal, in constant time; any text at all (a cookie is
    whatever the client sends)."""
    return hmac.compare_digest(one.encode("utf-8", "replace"), other.encode("utf-8", "replace"))


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
        if not same(signature, self._sign(payload)):
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
        return bool(token) and same(self.csrf(session), str(token))

    def login_token(self, nonce: str) -> str:
        """What the login form must carry beside the ``nonce`` its cookie holds: a
        cookie set by another site on this host (another port) brings no such token."""
        return hmac.new(self._csrf_key, b"login\0" + nonce.encode(), hashlib.sha256).hexdigest()

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


class Throttle:
    """Failed logins by address and by account, and the password checks running.

    :meth:`begin` counts an attempt as a failure *before* its password is checked (and
    :meth:`succeeded` takes it back), so attempts sent all at once count as they arrive,
    not as their checks end. An account's own limit holds only for addresses that have
    failed before: anyone can fail logins to an admin's name, but not lock the admin out
    of an address it logs in from without failing. Checks run on :data:`CHECKS_AT_ONCE`
    threads of their own, never on the threads that answer pages; when that many more
    wait, a login is refused at once (busy) instead of queueing.
    """

    def __init__(
        self,
        allowed: int = FAILURES_ALLOWED,
        window: float = FAILURE_WINDOW,
        at_once: int = CHECKS_AT_ONCE,
    ) -> None:
        self.allowed, self.window = allowed, window
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._checks = ThreadPoolExecutor(at_once, thread_name_prefix="console-login")
        self._most = 2 * at_once
        self._running = 0

    def begin(self, address: str, account: str) -> tuple[float, float]:
        """``(0, token)``: the attempt may go on and counts as failed until
        :meth:`succeeded` is given ``token``; or ``(seconds to wait, 0)``."""
        now = time.monotonic()
        by_ip, by_account = f"ip {address}", f"account {account}"
        with self._lock:
            wait = self._wait(by_ip, now, self.allowed)
            if self._failures.get(by_ip):  # the account's limit, for an address that failed
                wait = max(wait, self._wait(by_account, now, 2 * self.allowed))
            if wait > 0:
                return wait, 0.0
            for key in (by_ip, by_account):
                times = self._failures.pop(key, deque())
                times.append(now)
                self._failures[key] = times  # newest last: the oldest are forgotten first
            while len(self._failures) > MAX_TRACKED:
                del self._failures[next(iter(self._failures))]
            return 0.0, now

    def succeeded(self, address: str, account: str, token: float) -> None:
        """The attempt ``token`` was a good login: it is no failure."""
        with self._lock:
            for key in (f"ip {address}", f"account {account}"):
                times = self._failures.get(key)
                if times and token in times:
                    times.remove(token)

    def _wait(self, key: str, now: float, allowed: int) -> float:
        times = self._failures.get(key)
        if not times:
            return 0.0
        while times and now - times[0] > self.window:
            times.popleft()
        if len(times) < allowed:
            return 0.0
        return self.window - (now - times[-allowed])

    def check(self, check: Callable[[], T]) -> Future[T] | None:
        """``check`` on a password-check thread; None when too many wait already."""
        with self._lock:
            if self._running >= self._most:
                return None
            self._running += 1
        future = self._checks.submit(check)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: object) -> None:
        with self._lock:
            self._running -= 1
