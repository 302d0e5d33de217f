"""``listferry serve`` in cluster mode: homes in storage, syncs into the queue.

The servers (:mod:`listferry.serve`) know neither storage nor the queue: they are given
a :class:`~listferry.serve.spool.SpooledHomes` over :class:`HomesInStorage` (uploads put
into storage; the home's files listed, read, removed and renamed there), and a
``queue(tenant)`` callable (:class:`SyncQueue`), both made here.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from listferry.cluster.storage import Storage, StoredObject
from listferry.config import TENANT_NAME, Config
from listferry.errors import ListferryError
from listferry.serve.jail import OutsideHome, has_control_character, is_upload_in_progress
from listferry.serve.spool import SpooledHomes
from listferry.serve.stored import Stored

#: Below the node's state folder: the tenants' spools (``spool/NAME/``).
SPOOL = Path("server", "spool")


def servable(name: str) -> bool:
    """Whether ``name`` (relative to a home) is one a client can name and the servers
    serve: plain parts (no empty one, no ``.`` or ``..``), no control character or
    backslash, no upload under way in it."""
    parts = name.split("/")
    return (
        all(part not in ("", ".", "..") and not is_upload_in_progress(part) for part in parts)
        and "\\" not in name
        and not has_control_character(name)
    )


class HomesInStorage:
    """The tenants' homes as folders of the cluster's storage, ``homes/NAME/``.

    Every key is made by :meth:`key`, which takes only a tenant's name and a servable
    name below its home: whatever a client sends, nothing outside ``homes/NAME/`` is
    read, written, listed or removed.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def key(self, tenant: str, name: str = "") -> str:
        """``homes/TENANT/NAME``; ``name`` empty: the home itself. Raises
        :class:`~listferry.serve.jail.OutsideHome` for anything but a tenant's name and
        a :func:`servable` name."""
        if not TENANT_NAME.fullmatch(tenant):
            raise OutsideHome(f"{tenant!r} is not a tenant's name")
        if name and not servable(name):
            raise OutsideHome(f"{name!r} is not a name in the home")
        return f"homes/{tenant}/{name}" if name else f"homes/{tenant}"

    def put(self, tenant: str, source: Path, name: str) -> None:
        self.storage.write(source, self.key(tenant, name))

    def usage(self, tenant: str) -> tuple[int, int]:
        found = self.storage.list(self.key(tenant))
        return len(found), sum(item.size for item in found)

    def listing(self, tenant: str, folder: str) -> list[Stored]:
        home = self.key(tenant) + "/"
        objects, folders = self.storage.folder(self.key(tenant, folder))
        found = [_stored(item, home) for item in objects]
        found += [Stored(key.removeprefix(home), folder=True) for key in folders]
        return [entry for entry in found if servable(entry.name)]

    def find(self, tenant: str, name: str) -> Stored | None:
        key = self.key(tenant, name)
        found = self.storage.head(key)
        if found is not None:
            return _stored(found, self.key(tenant) + "/")
        return Stored(name, folder=True) if self.storage.holds(key) else None

    def open(self, tenant: str, name: str) -> ObjectReader | None:
        found = self.storage.head(self.key(tenant, name))
        return ObjectReader(self.storage, found) if found is not None else None

    def remove(self, tenant: str, found: Stored) -> bool:
        return self.storage.delete(self.key(tenant, found.name), if_match=found.etag or None)

    def rename(self, tenant: str, found: Stored, name: str) -> None:
        old = self.key(tenant, found.name)
        self.storage.copy(old, self.key(tenant, name), etag=found.etag or None)
        self.storage.delete(old, if_match=found.etag or None)


def _stored(item: StoredObject, home: str) -> Stored:
    return Stored(item.key.removeprefix(home), item.size, item.mtime, item.etag)


class ObjectReader:
    """An object of storage open for reading at any offset, never whole in memory.

    A read streams from one ranged GET; reads that go on where the last one ended (as an
    FTP download's and OpenSSH's are) read on from it, a read a little further on skips
    ahead in it, any other opens another GET there. Every GET asks for the version first
    looked at (``If-Match`` its ETag): a file replaced meanwhile is never read half old,
    half new; the read fails, saying so. A stream that breaks off (the storage closed a
    connection left idle) is opened again once, at the offset asked.
    """

    #: How far ahead of the stream a read may start and still be read on to, not reopened.
    SKIP = 1 << 20

    def __init__(self, storage: Storage, found: StoredObject) -> None:
        self.storage = storage
        self.found = found
        self.size = found.size
        self.mtime = found.mtime
        self._body: Any = None
        self._at = 0  # where the open stream is

    def read(self, offset: int, length: int) -> bytes:
        length = min(length, self.size - offset)
        if length <= 0:
            return b""
        try:
            return self._read(offset, length)
        except ListferryError:
            self.close()
            raise
        except Exception:  # the stream broke off: open it again, once
            self.close()
        try:
            return self._read(offset, length)
        except ListferryError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            why = " ".join(str(exc).split()) or type(exc).__name__
            raise ListferryError(
                f"{self.storage.url_of(self.found.key)}: the download broke off: {why}"
            ) from None

    def _read(self, offset: int, length: int) -> bytes:
        if self._body is None or not self._at <= offset <= self._at + self.SKIP:
            self.close()
            self._body = self.storage.stream(self.found.key, offset, self.found.etag or None)
            self._at = offset
        while self._at < offset:
            skipped = self._body.read(min(offset - self._at, 1 << 16))
            if not skipped:
                raise EOFError("the stream ended early")
            self._at += len(skipped)
        parts = []
        wanted = length
        while wanted:
            part = self._body.read(wanted)
            if not part:
                raise EOFError("the stream ended early")
            parts.append(part)
            wanted -= len(part)
            self._at += len(part)
        return b"".join(parts)

    def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            with suppress(Exception):  # a stream already broken off
                body.close()


class SyncQueue:
    """``queue(tenant)``: queue the tenant's sync for any worker; a tenant queued twice
    runs once. The connection to the database opens at the first use, and again after
    one that failed. Every fault is one :class:`~listferry.ListferryError` line."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._app: Any = None
        self._lock = threading.Lock()

    def __call__(self, tenant: str) -> str:
        from listferry.cluster.queue import build_app, queue_sync

        with self._lock:
            try:
                if self._app is None:
                    app = build_app(self.config)
                    app.open()
                    self._app = app
                job, new = queue_sync(self._app, tenant)
            except ListferryError:
                self.close()
                raise
            except Exception as exc:
                self.close()
                text = " ".join(str(exc).split()) or type(exc).__name__
                raise ListferryError(
                    f"the cluster's database did not take the job: {text}"
                ) from None
        return f"{job}" if new else f"{job} (already queued)"

    def close(self) -> None:
        app, self._app = self._app, None
        if app is not None:
            with suppress(Exception):  # closing a pool whose database went away
                app.close()


def cluster_homes(config: Config) -> SpooledHomes:
    """The spools of this node over the tenants' homes in the cluster's storage."""
    assert config.storage is not None
    settings = config.storage
    storage = Storage(settings.url, settings.endpoint_url, settings.region)
    return SpooledHomes(config.state_dir / SPOOL, HomesInStorage(storage))


#: The servers' own keys every serve node shares, in storage: the SSH host key, and the
#: TLS private key with its certificate chain in one object (a pair never half replaced).
SSH_HOST_KEY = "server/ssh_host_ed25519_key"
TLS_PAIR = "server/tls.pem"


def share_server_keys(config: Config) -> list[str]:
    """Have this node serve with the cluster's SSH host key and TLS certificate, so a
    customer sees the same ones whichever node answers; what was done, a line each.

    Only keys the node's ``[server]`` does not name are shared (an operator's own files,
    such as a CA's certificate, are used as they are, and must be the same on every
    node): those in storage are written over this node's; those not yet in storage are
    put there from this node (made first when missing). Two nodes doing so at once
    both end with the one stored first. When storage does not answer, a node serves
    with the keys it took from storage before (``state/server/shared-keys.json`` has
    their digests); one that never did refuses to start rather than show customers
    another host key.
    """
    from listferry.serve.keys import check_tls_pair, ensure_server_keys, public_host_key

    assert config.storage is not None
    server = config.server
    own = config.state_dir / "server"
    settings = config.storage
    storage = Storage(settings.url, settings.endpoint_url, settings.region)
    ensure_server_keys(server)
    marks = own / "shared-keys.json"
    taken = _read_marks(marks)
    said = []

    def host_key(stored: bytes) -> Callable[[], None]:
        public = public_host_key(stored, storage.url_of(SSH_HOST_KEY))

        def write() -> None:
            _write_private(server.ssh_host_key, stored)
            server.ssh_host_key.with_name(server.ssh_host_key.name + ".pub").write_bytes(public)

        return write

    def pair(stored: bytes) -> Callable[[], None]:
        key, chain = _split_pair(stored, storage.url_of(TLS_PAIR))
        check_tls_pair(key, chain, storage.url_of(TLS_PAIR))

        def write() -> None:
            _write_private(server.tls_key, key)
            _write_private(server.tls_cert, chain)

        return write

    shared = []
    if server.ssh_host_key == own / "ssh_host_ed25519_key":
        local = server.ssh_host_key.read_bytes()
        shared.append(("SSH host key", SSH_HOST_KEY, local, host_key, "ssh_host_key"))
    if server.tls_cert == own / "tls-cert.pem" and server.tls_key == own / "tls-key.pem":
        local = server.tls_key.read_bytes() + server.tls_cert.read_bytes()
        shared.append(("TLS certificate", TLS_PAIR, local, pair, "tls_cert and tls_key"))
    writes = []  # every key checked before any is written: a bad one replaces none
    for what, key, local, check, setting in shared:
        try:
            stored, how = _share(storage, key, local)
        except ListferryError as exc:
            if taken.get(key) != _digest(local):
                raise ListferryError(
                    f"{what}: {exc}; this node has not taken the cluster's from storage before "
                    f"and would serve another: start serve once storage answers, or set "
                    f"[server] {setting} to the cluster's files"
                ) from None
            said.append(f"{what}: {exc}; serving the one taken from storage before")
            continue
        if stored != local:
            writes.append(check(stored))
        taken[key] = _digest(stored)
        said.append(f"{what}: {how} {storage.url_of(key)}")
    for write in writes:
        write()
    if shared:
        marks.write_text(json.dumps(taken, indent=2) + "\n")
    return said


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_marks(path: Path) -> dict[str, str]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _share(storage: Storage, key: str, local: bytes) -> tuple[bytes, str]:
    """The bytes stored under ``key`` (put there from ``local`` when nothing was), and
    how they came."""
    import tempfile

    from listferry.cluster.storage import AlreadyExists

    with tempfile.TemporaryDirectory() as folder:
        dest = Path(folder, "key")
        if storage.head(key) is None:
            try:
                storage.put_bytes(local, key, if_absent=True)
                return local, "shared from this node as"
            except AlreadyExists:
                pass  # another node stored its own first: that one is served
        storage.get(key, dest)
        return dest.read_bytes(), "taken from"


def _split_pair(pem: bytes, where: str) -> tuple[bytes, bytes]:
    """A private key's PEM block, and the certificate blocks after it."""
    import re

    found = re.match(
        rb"\s*(-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----)", pem, re.S
    )
    if found is None or b"-----BEGIN CERTIFICATE-----" not in pem[found.end() :]:
        raise ListferryError(f"{where}: not a private key followed by its certificates")
    return found[1] + b"\n", pem[found.end() :].strip() + b"\n"


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at once, readable by its owner only."""
    import os

    temp = path.with_name(f".{path.name}.new")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temp, path)
