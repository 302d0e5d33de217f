"""``listferry serve`` in cluster mode: homes in storage, syncs into the queue.

The servers (:mod:`listferry.serve`) know neither storage nor the queue: they are given
a :class:`~listferry.serve.spool.SpooledHomes` over :class:`HomesInStorage` (uploads put
into storage; the home's files listed, read, removed and renamed there), and a
``queue(tenant)`` callable (:class:`SyncQueue`), both made here.
"""

from __future__ import annotations

import threading
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
