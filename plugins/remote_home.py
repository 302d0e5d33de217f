"""What the ``ftp``, ``ftps`` and ``sftp`` transports share: a home on a customer's server.

:class:`RemoteHome` is the home URL and the tenant's ``remote_*`` settings, checked, with
the password resolved and kept out of every message. :func:`retrying` runs one
operation, and after a network fault (refused, reset, a stall past ``remote_timeout``, a
transfer cut short) drops the connection, waits and tries again, ``remote_retries``
times, before it gives up with a :class:`listferry.ListferryError` in plain words.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from listferry import ListferryError
from listferry.names import is_under_way
from listferry.transport import Endpoint, plain_name

log = logging.getLogger("listferry")

T = TypeVar("T")

DEFAULT_PORTS = {"ftp": 21, "ftps": 21, "sftp": 22}


class Incomplete(OSError):
    """A transfer ended early: fewer bytes arrived than the file holds."""

    def __init__(self, got: int, expected: int) -> None:
        super().__init__(f"the transfer was cut short ({got} of {expected} bytes)")


class Refused(ListferryError):
    """The server answered, and said no (login, host key, certificate): never retried."""


#: What a message tells the reader to do, in the words of a tenant's config. A caller with
#: other settings (``listferry push`` has options) gives its endpoint other ``words``.
CONFIG_WORDS: Mapping[str, str] = MappingProxyType(
    {
        "password_in_url": "put it in remote_password_env (or remote_password) instead",
        "credentials": "set remote_key_file, remote_password_env or remote_password",
        "password": "set remote_password_env or remote_password",
        "key_file": "remote_key_file",
        "passphrase": "give its passphrase in remote_password_env or remote_password",
        "known_hosts": "",  # the tenant's known_hosts file is named already
        "ca_file": "the ca_file",
        "untrusted": "set ca_file to the certificate of the CA that signed it (or to the "
        "server's own, if self-signed), or tls_verify = false to skip the check",
    }
)


@dataclass(frozen=True)
class RemoteHome:
    """A home on another server, and how to reach it. ``where`` is safe to show.

    ``words`` finishes messages that tell the reader what to set (:data:`CONFIG_WORDS`).
    """

    scheme: str
    host: str
    port: int
    user: str
    folder: str
    password: str | None = field(default=None, repr=False)
    key_file: Path | None = None
    known_hosts: Path | None = None
    tls_verify: bool = True
    ca_file: Path | None = None
    retries: int = 3
    timeout: float | None = 30
    words: Mapping[str, str] = field(
        default_factory=lambda: CONFIG_WORDS, repr=False, compare=False
    )

    @property
    def where(self) -> str:
        """The URL without any secret, for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        folder = self.folder
        path = folder if folder.startswith("/") or not folder else "/~/" + folder
        return f"{self.scheme}://{self.user}@{host}:{self.port}{path}"

    def path(self, name: str) -> str:
        """``name`` in the home's folder, as the server sees it."""
        return f"{self.folder.rstrip('/')}/{name}" if self.folder else name

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint) -> RemoteHome:
        """Parse the endpoint's ``scheme://user@host:port/path`` and take its settings."""
        words = endpoint.words or CONFIG_WORDS
        url = urlsplit(endpoint.location)
        scheme = url.scheme.lower()
        shown = f"{scheme}://{url.hostname or ''}"
        if scheme not in DEFAULT_PORTS:
            raise ListferryError(f"{shown}: not an ftp://, ftps:// or sftp:// URL")
        if url.password is not None:
            raise ListferryError(
                f"{shown}: the home URL holds a password; {words['password_in_url']}"
            )
        if not url.hostname or not url.username:
            raise ListferryError(
                f"{shown}: the home URL must name the user and the host, "
                f"like {scheme}://user@host:port/folder"
            )
        if url.query or url.fragment:
            raise ListferryError(f"{shown}: the home URL may not have a query or a fragment")
        try:
            port = url.port or DEFAULT_PORTS[scheme]
        except ValueError:
            raise ListferryError(f"{shown}: the port is not a number from 1 to 65535") from None
        path = unquote(url.path)
        if path in ("", "/", "/~", "/~/"):
            folder = ""
        elif path.startswith("/~/"):
            folder = path[3:]
        else:
            folder = path
        return cls(
            scheme=scheme,
            host=url.hostname,
            port=port,
            user=unquote(url.username),
            folder=folder.rstrip("/") or folder,
            password=endpoint.secret(),
            key_file=endpoint.key_file,
            known_hosts=endpoint.known_hosts,
            tls_verify=endpoint.tls_verify,
            ca_file=endpoint.ca_file,
            retries=endpoint.retries,
            timeout=endpoint.timeout,
            words=words,
        )


def listed(name: str) -> bool:
    """Whether a name at the top of a home is a completed file a listing shows."""
    return not is_under_way(name)


def upload_name(name: str) -> str:
    """A hidden name for an upload under way; never listed, renamed when complete.

    Not ``.part``: listferry's own servers keep ``.*.part`` names for the uploads they
    are receiving and serve no file by such a name.
    """
    return f".{name}.{secrets.token_hex(6)}.uploading"


def describe(exc: BaseException, timeout: float | None) -> str:
    """A network fault in plain words."""
    if isinstance(exc, TimeoutError):
        return f"timed out: no answer from the server for {timeout:g} s" if timeout else "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "the connection was cut"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    if isinstance(exc, socket.gaierror):
        return "the host name was not found"
    if isinstance(exc, OSError) and exc.strerror:
        return (
            exc.strerror[0].lower()
            + exc.strerror[1:]
            + (f": {exc.filename}" if exc.filename else "")
        )
    text = str(exc).strip().rstrip(":").strip() or type(exc).__name__
    if any(words in text.lower() for words in ("connection dropped", "socket is closed")):
        return "the connection was cut"
    return text[0].lower() + text[1:]


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0, 1, ...): 0.25, 0.5, 1, ... 30."""
    return min(0.25 * 2**attempt, 30.0)


def retrying(
    home: RemoteHome,
    doing: str,
    action: Callable[[], T],
    reset: Callable[[], None],
    is_fault: Callable[[BaseException], bool],
    refusals: tuple[type[BaseException], ...] = (OSError,),
) -> T:
    """Run ``action``; after a fault, ``reset`` the connection and retry with backoff.

    Errors of the kinds in ``refusals`` that are not faults (the server said no: a
    missing file, no permission) become a :class:`ListferryError` at once. Giving up, it
    says what went wrong first: a later try often meets only what that left behind (each
    try's fault is logged as it is retried).
    """
    first: str | None = None
    for attempt in range(home.retries + 1):
        try:
            return action()
        except Exception as exc:
            if not is_fault(exc):
                if isinstance(exc, refusals) and not isinstance(exc, ListferryError):
                    raise ListferryError(
                        f"{home.where}: could not {doing}: {describe(exc, home.timeout)}"
                    ) from None
                raise
            reset()
            cause = describe(exc, home.timeout)
            first = first or cause
            if attempt == home.retries:
                tries = f"{attempt + 1} tries" if attempt else "1 try"
                raise ListferryError(
                    f"{home.where}: could not {doing}: {first} (gave up after {tries})"
                ) from None
            wait = backoff(attempt)
            log.warning(
                "%s: %s: %s; retrying in %.2g s (%d of %d)",
                home.where,
                doing,
                cause,
                wait,
                attempt + 1,
                home.retries,
            )
            time.sleep(wait)
    raise AssertionError("unreachable")


#: Socket errors that say the network, not the file, is at fault.
NETWORK_ERRNOS = frozenset(
    {
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ENOTCONN,
        errno.ETIMEDOUT,
        errno.ENETRESET,
    }
)


def network_fault(exc: BaseException) -> bool:
    """Faults of the network every protocol shares; protocol errors are the caller's."""
    if isinstance(exc, ListferryError | FileNotFoundError | PermissionError):
        return False
    if isinstance(exc, ConnectionError | TimeoutError | EOFError | Incomplete | socket.gaierror):
        return True
    return isinstance(exc, OSError) and exc.errno in NETWORK_ERRNOS


class RemoteTransport:
    """What the ftp and sftp transports share: the retried calls, removal of a file only
    when it is still the one listed, and clean-up of a cut upload's temporary file.

    A subclass gives ``_client()`` (the open connection, made with :meth:`_connect`),
    ``_open()`` (connect and log in), ``_drop()`` (forget the connection),
    ``_do(doing, action)`` (run ``action(client)`` with retries), ``_lookup(client,
    name)`` (the file as listed now, or None), ``_delete(client, name)`` and
    ``_delete_temp(client, temp)`` (quiet when the temp is already gone).
    """

    def __init__(self, home: RemoteHome) -> None:
        self.home = home
        self._leftovers: set[str] = set()

    def _connect(self) -> None:
        """Open the connection; one that fails half-way is dropped, not kept."""
        try:
            self._open()
        except BaseException:
            self._drop()
            raise

    def fetch(self, name: str, dest: Path) -> Any:
        """Copy ``name`` to ``dest`` whole: under a hidden name first, checked for its
        size and for not having been replaced meanwhile, then renamed."""
        plain_name(name)
        return self._do(f"fetch {name}", lambda client: self._fetch(client, name, dest))

    def _fetch(self, client: Any, name: str, dest: Path) -> Any:
        before = self._lookup(client, name)
        if before is None:
            raise ListferryError(f"{self.home.where}: {name} is no longer there")
        part = dest.with_name(f".{dest.name}.part")
        try:
            with part.open("wb") as out:
                got = self._download(client, name, before.size, out)
            if got != before.size:
                raise Incomplete(got, before.size)
            if self._lookup(client, name) != before:
                raise ListferryError(f"{name} was replaced while it was being fetched")
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)
        return before

    def put(self, source: Path, name: str, progress: Callable[[int], None] | None = None) -> None:
        """Upload under a temporary name, then rename; ``progress`` hears the bytes sent."""
        plain_name(name)
        try:
            self._do(f"upload {name}", lambda client: self._put(client, source, name, progress))
        finally:
            self._clean_up()

    def remove(self, name: str, expected: Any) -> bool:
        plain_name(name)
        return self._do(f"remove {name}", lambda client: self._remove(client, name, expected))

    def _remove(self, client: Any, name: str, expected: Any) -> bool:
        current = self._lookup(client, name)
        if current is None or (current.size, current.mtime) != (expected.size, expected.mtime):
            return False
        self._delete(client, name)
        return True

    def _remove_leftovers(self, client: Any) -> None:
        for temp in list(self._leftovers):
            self._delete_temp(client, temp)
            self._leftovers.discard(temp)

    def _clean_up(self) -> None:
        """After a failed upload, one last try to take its partial file away."""
        if not self._leftovers:
            return
        try:
            self._remove_leftovers(self._client())
        except Exception:  # best effort: a hidden temp file is never taken for a list
            self._drop()

    # provided by each protocol
    def _client(self) -> Any:
        raise NotImplementedError

    def _open(self) -> None:
        raise NotImplementedError

    def _drop(self) -> None:
        raise NotImplementedError

    def _do(self, doing: str, action: Callable[[Any], T]) -> T:
        raise NotImplementedError

    def _lookup(self, client: Any, name: str) -> Any:
        raise NotImplementedError

    def _delete(self, client: Any, name: str) -> None:
        raise NotImplementedError

    def _delete_temp(self, client: Any, temp: str) -> None:
        raise NotImplementedError
