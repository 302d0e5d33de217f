"""Transports, as the host sees them: a tenant's home, wherever it is."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit

from listferry.errors import ConfigError, ListferryError, secret_from_env
from listferry.registry import Registry


@dataclass(frozen=True)
class Endpoint:
    """Where a transport reaches, and how: what a transport factory is given.

    ``location`` is a folder on this machine or a URL (``sftp://user@host:port/path``);
    the rest matters for a customer's server: the password (or the environment variable
    that holds it), an SSH key, the known-hosts file, how TLS certificates are trusted,
    retries and the stall timeout. ``state_dir`` is the tenant's private folder (its
    default known-hosts file lives there). ``words`` names the settings in messages the
    way the caller's user sets them (``listferry push`` has options, a tenant has keys);
    ``None`` for a tenant's keys. ``endpoint_url`` is the S3-compatible server's URL
    for an ``s3://`` home (``http://127.0.0.1:8333``); ``None`` is AWS's own.
    """

    location: str
    password: str | None = field(default=None, repr=False)
    password_env: str | None = None
    key_file: Path | None = None
    known_hosts: Path | None = None
    tls_verify: bool = True
    ca_file: Path | None = None
    retries: int = 3
    timeout: float | None = 30
    state_dir: Path | None = None
    words: Mapping[str, str] | None = field(default=None, repr=False, compare=False)
    endpoint_url: str | None = None

    @property
    def scheme(self) -> str:
        """``file`` for a folder, else the URL's scheme, lower-cased."""
        if "://" not in self.location:
            return "file"
        return urlsplit(self.location).scheme.lower()

    def secret(self) -> str | None:
        """The password: given, else the one the named environment variable holds."""
        if self.password:
            return self.password
        return secret_from_env(self.password_env, "remote_password_env")


def open_transport(transports: Registry[TransportFactory], endpoint: Endpoint) -> Transport:
    """A connection to ``endpoint`` through the transport registered for its scheme;
    a scheme no plugin serves is a :class:`ConfigError`."""
    if endpoint.scheme not in transports:
        known = ", ".join(transports.names())
        raise ConfigError(f"no transport for {endpoint.scheme}:// (known: {known})")
    return transports.get(endpoint.scheme)(endpoint)


class RemoteFile(NamedTuple):
    """A file at the top of a tenant's home: its name, size in bytes and mtime (epoch s)."""

    name: str
    size: int
    mtime: float


class Transport(Protocol):
    """A connection to one tenant's home, made by the factory a plugin registers.

    Names are plain file names at the top of the home; a transport refuses anything
    else. Files whose upload is still under way (hidden temporary names) are not
    listed. Every write is atomic: the data goes to a temporary name first.

    A transport need not tell a file still being written in place from a finished one:
    the host lists a home that is not a local folder twice, the tenant's
    ``stable_seconds`` apart, and takes only files that did not change in between (see
    :func:`listferry.sync.select.select`). A transport whose files appear only whole
    (object storage: an object is visible once its upload completed) says so with a
    class attribute ``atomic = True``, and its homes are listed once. Network faults are
    the transport's to retry; what it cannot do it raises as a
    :class:`listferry.ListferryError` in plain words.

    The export opens one the same way on the folder a return file goes to (the home's
    ``outbox/``, or the tenant's ``export_to``), passing that folder or URL as the home,
    and only calls :meth:`put` and :meth:`close` on it.
    """

    def list(self) -> list[RemoteFile]:
        """The completed files at the top of the home."""

    def fetch(self, name: str, dest: Path) -> RemoteFile:
        """Copy ``name`` to the local path ``dest`` whole, and say what was copied.

        A fetch that cannot copy every byte raises; the host reads ``dest`` only after a
        fetch returned.
        """

    def put(self, source: Path, name: str) -> None:
        """Store the local file ``source`` in the home as ``name``, atomically.

        A transport may also take ``progress``, a callable given the bytes sent so far
        (``listferry push`` draws a bar with it on a terminal); the built-in ``sftp``
        and ``ftp``/``ftps`` transports do.
        """

    def remove(self, name: str, expected: RemoteFile) -> bool:
        """Delete ``name`` if it is still the file ``expected``; true when deleted.

        A newer upload under the same name is left for the next run.
        """

    def close(self) -> None:
        """Release the connection."""


def plain_name(name: str) -> str:
    """Refuse anything but a plain file name: no folders, no ``..``, no hidden names.

    Every transport checks the names it is given with this, whatever its protocol.
    """
    if (
        not name
        or name in (".", "..")
        or name.startswith(".")
        or any(c in name for c in "/\\\0\r\n")
        or name != name.strip()
    ):
        raise ListferryError(f"{name!r} is not a plain file name")
    return name


#: What ``register_transports`` registers: a factory from an endpoint to a transport.
TransportFactory = Callable[[Endpoint], Transport]
