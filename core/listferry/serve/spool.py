"""Where a completed upload goes: the tenant's local home, or storage through a spool.

On one machine a tenant's home is a local folder, and a completed upload takes its
real name there (:class:`LocalHomes`). In cluster mode the home is a folder in
S3-compatible storage: each tenant's folder on this node is a spool
(``state/server/spool/NAME/``) that holds uploads only while they are under way, and a
completed upload is put into storage under its real name and then removed from the
spool (:class:`SpooledHomes`). Only then is it received; a put that fails keeps
nothing anywhere. The storage itself is a :class:`Storehouse` given by the level that
knows it (``listferry.cluster.serving``): the servers never import the cluster.

The customer sees its home as on one machine: the servers list, stat, read, remove and
rename what the home holds in storage (:mod:`listferry.serve.stored`) beside what the
spool holds (its folders, and files waiting under a temporary name); a name in the
spool comes first. :class:`LocalHomes` has the same methods, with nothing in storage.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from listferry.config import Tenant
from listferry.errors import ListferryError
from listferry.names import is_under_way
from listferry.serve.jail import OutsideHome, is_upload_in_progress, walk_files
from listferry.serve.log import event
from listferry.serve.stored import Refused, StorageFault, Stored, StoredFile, StoredReader

#: How long a count of a tenant's objects in storage is used before it is made again.
USAGE_SECONDS = 5.0


#: Why a folder that holds files in storage is not renamed.
FOLDER_NOT_MOVED = (
    "a folder that holds files in storage cannot be renamed: move the files one by one"
)


def _not_found(path: Path) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))


class NotKept(OSError):
    """A completed upload that could not be kept; the message says why, in plain words
    for the customer, and ``detail`` what the operator's log needs (where storage is)."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message


class Storehouse(Protocol):
    """The tenants' homes in storage, as :class:`SpooledHomes` uses them."""

    def put(self, tenant: str, source: Path, name: str) -> None:
        """Store ``source`` as ``name`` (a path relative to the home) in ``tenant``'s home;
        raise :class:`~listferry.ListferryError` with one plain line when it cannot."""

    def usage(self, tenant: str) -> tuple[int, int]:
        """The objects in ``tenant``'s home and their bytes; raise
        :class:`~listferry.ListferryError` when storage cannot be read."""

    # Each method below raises ListferryError with one plain line when storage fails.

    def listing(self, tenant: str, folder: str) -> list[Stored]:
        """The files and folders directly in ``folder`` (relative to the home, ``""``
        for the home itself), but none a client could not name (a control character,
        an upload under way)."""

    def find(self, tenant: str, name: str) -> Stored | None:
        """The file ``name``; else the folder ``name`` when a file is stored below it;
        else None."""

    def open(self, tenant: str, name: str) -> StoredFile | None:
        """The file ``name``, open for reading (that version of it), or None."""

    def remove(self, tenant: str, found: Stored) -> bool:
        """Remove the file ``found``; False when it was replaced since it was found
        (the new one stays)."""

    def rename(self, tenant: str, found: Stored, name: str) -> None:
        """Give the file ``found`` the name ``name`` (replacing a file there)."""


class LocalHomes:
    """A tenant's home is the local folder its ``home`` names."""

    def serves(self, tenant: Tenant) -> bool:
        return tenant.is_local

    def folder(self, tenant: Tenant) -> Path:
        return Path(tenant.home)

    def keeping(self, lock: threading.RLock) -> contextlib.AbstractContextManager[object]:
        """What to hold around :meth:`keep` and :meth:`rename`: the home's ``lock``, so a
        count of the home never sees neither name."""
        return lock

    def keep(self, tenant: Tenant, temp: Path, target: Path) -> bool:
        """Give the completed upload ``temp`` its name ``target``; True: it is received."""
        os.replace(temp, target)
        return True

    def rename(self, tenant: Tenant, old: Path, new: Path) -> bool:
        """Rename ``old`` to ``new``; True when that stored a file (never, here)."""
        os.rename(old, new)
        return False

    def stored(self, tenant: Tenant) -> tuple[int, int] | None:
        """What the home holds beyond its local folder: nothing."""
        return None

    def remove_stale_uploads(self, tenants: dict[str, Tenant]) -> None:
        from listferry.serve.jail import remove_stale_uploads

        remove_stale_uploads(tenants)

    def listing(self, tenant: Tenant, folder: Path) -> dict[str, Stored]:
        """What the home holds in storage in ``folder``: nothing."""
        return {}

    def lookup(self, tenant: Tenant, path: Path) -> Stored | None:
        """What the home holds in storage at ``path``: nothing."""
        return None

    def read(self, tenant: Tenant, path: Path) -> StoredReader:
        raise _not_found(path)

    def remove(self, tenant: Tenant, path: Path) -> Stored:
        raise _not_found(path)

    def provide_folder(self, tenant: Tenant, folder: Path) -> None:
        """Nothing: a folder of the home is here or nowhere."""

    def remove_folder(self, tenant: Tenant, folder: Path) -> None:
        os.rmdir(folder)


class SpooledHomes:
    """Cluster mode: each tenant's folder here is a spool, its home is in storage.

    A completed upload is put into storage under its name, then removed from the spool;
    an upload under a client's temporary name (``.filepart``, ``.tmp`` ...) stays in the
    spool until the client renames it to its real name, which puts it. The home's usage
    in storage is counted at most every :data:`USAGE_SECONDS` per tenant, and again
    after each put of this node.
    """

    def __init__(self, spool: Path, storehouse: Storehouse) -> None:
        self.spool = spool
        self.storehouse = storehouse
        self._lock = threading.Lock()
        self._counted: dict[str, tuple[float, tuple[int, int]]] = {}

    def serves(self, tenant: Tenant) -> bool:
        return True

    def folder(self, tenant: Tenant) -> Path:
        folder = self.spool / tenant.name
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder

    def keeping(self, lock: threading.RLock) -> contextlib.AbstractContextManager[object]:
        """Nothing: a put takes as long as the network does, and the home's lock would
        hold up the tenant's other uploads meanwhile; the file is counted in the spool
        until it is removed, and in storage from the next count on."""
        return contextlib.nullcontext()

    def keep(self, tenant: Tenant, temp: Path, target: Path) -> bool:
        """Put the completed upload ``temp`` into storage as ``target``'s name and remove
        it here; a client's temporary name stays here instead (False). Raises
        :class:`NotKept` when storage does not take it; ``temp`` is then removed."""
        if is_under_way(target.name):
            os.replace(temp, target)
            return False
        name = self._name(tenant, target)
        try:
            self.storehouse.put(tenant.name, temp, name)
        except Exception as exc:
            raise NotKept(
                "storage did not take it; try again later",
                detail=f"storage did not take it: {exc}",
            ) from None
        finally:
            temp.unlink(missing_ok=True)
        self._forget_usage(tenant)
        return True

    def rename(self, tenant: Tenant, old: Path, new: Path) -> bool:
        """Rename ``old`` to ``new``; True when that put a file under a real name in
        storage, which is then received.

        A file in the spool renamed to a real name is put into storage; anything else
        in the spool is renamed there, but a folder that holds files in storage is not
        (:class:`Refused`: a folder in storage is the files below it, and moving them is
        not one step). A file in storage is copied to its new name there and then
        removed under the old one (only that version of it: one replaced meanwhile
        stays).
        """
        if os.path.lexists(old):
            if old.is_file() and not old.is_symlink() and not is_under_way(new.name):
                return self.keep(tenant, old, new)
            if old.is_dir() and not old.is_symlink() and self.listing(tenant, old):
                raise Refused(FOLDER_NOT_MOVED)
            os.rename(old, new)
            return False
        found = self._existing(tenant, old)
        if found.folder:
            raise Refused(FOLDER_NOT_MOVED)
        if os.path.isdir(new) or ((there := self.lookup(tenant, new)) and there.folder):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(new))
        if not os.path.isdir(new.parent) and not self.lookup(tenant, new.parent):
            raise _not_found(new.parent)
        name = self._name(tenant, new)
        if name != found.name:
            with self._asking():
                self.storehouse.rename(tenant.name, found, name)
            self._forget_usage(tenant)
        return not is_under_way(new.name)

    # -- what the home holds in storage

    def listing(self, tenant: Tenant, folder: Path) -> dict[str, Stored]:
        """The files and folders the home holds in storage directly in ``folder`` (a
        folder of the tenant's spool), by name; none for a folder storage does not have."""
        with self._asking():
            found = self.storehouse.listing(tenant.name, self._name(tenant, folder))
        return {entry.basename: entry for entry in found}

    def lookup(self, tenant: Tenant, path: Path) -> Stored | None:
        """The file or folder the home holds in storage at ``path`` (in the spool), or
        None; the home itself is a folder."""
        name = self._name(tenant, path)
        if not name:
            return Stored("", folder=True)
        with self._asking():
            return self.storehouse.find(tenant.name, name)

    def read(self, tenant: Tenant, path: Path) -> StoredReader:
        """The file the home holds in storage at ``path``, open for reading; not found
        when storage holds none there."""
        with self._asking():
            file = self.storehouse.open(tenant.name, self._name(tenant, path))
        if file is None:
            raise _not_found(path)
        return StoredReader(file, str(path))

    def remove(self, tenant: Tenant, path: Path) -> Stored:
        """Remove the file the home holds in storage at ``path``; what was removed.

        Only the version looked at is removed: one that replaced it just then (a new
        return file) is kept, and the removal refused (:class:`Refused`)."""
        found = self._existing(tenant, path)
        if found.folder:
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        with self._asking():
            removed = self.storehouse.remove(tenant.name, found)
        self._forget_usage(tenant)
        if not removed:
            raise Refused("the file was replaced just now, and the new one is kept")
        return found

    def provide_folder(self, tenant: Tenant, folder: Path) -> None:
        """Make ``folder`` here when only storage holds it, so an upload into it (or a
        folder made in it) has its place in the spool."""
        if not os.path.isdir(folder):
            found = self.lookup(tenant, folder)
            if found is not None and found.folder:
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def remove_folder(self, tenant: Tenant, folder: Path) -> None:
        """Remove the empty folder ``folder``; not empty while storage holds anything
        below it."""
        if self.listing(tenant, folder):
            raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), str(folder))
        os.rmdir(folder)

    def _existing(self, tenant: Tenant, path: Path) -> Stored:
        found = self.lookup(tenant, path)
        if found is None:
            raise _not_found(path)
        return found

    def _name(self, tenant: Tenant, path: Path) -> str:
        """``path`` (in the tenant's spool) as a name relative to its home; ``""`` for
        the home itself."""
        folder = Path(os.path.realpath(self.folder(tenant)))
        try:
            name = Path(os.path.realpath(path)).relative_to(folder).as_posix()
        except ValueError:
            raise OutsideHome(f"{str(path)!r} is outside the home") from None
        return "" if name == "." else name

    @contextlib.contextmanager
    def _asking(self) -> Iterator[None]:
        """Storage's faults as :class:`StorageFault`, in its plain words."""
        try:
            yield
        except ListferryError as exc:
            raise StorageFault(str(exc)) from None

    def _forget_usage(self, tenant: Tenant) -> None:
        with self._lock:
            self._counted.pop(tenant.name, None)

    def stored(self, tenant: Tenant) -> tuple[int, int] | None:
        """The objects and bytes of the tenant's home in storage, counted at most every
        :data:`USAGE_SECONDS`; None when storage cannot be read (then the upload's put
        at its end decides, and no limit can be passed in storage that does not answer)."""
        now = time.monotonic()
        with self._lock:
            counted = self._counted.get(tenant.name)
        if counted is not None and now - counted[0] < USAGE_SECONDS:
            return counted[1]
        try:
            usage = self.storehouse.usage(tenant.name)
        except Exception:
            return None
        with self._lock:
            self._counted[tenant.name] = (now, usage)
        return usage

    def remove_stale_uploads(self, tenants: dict[str, Tenant]) -> None:
        """Remove what uploads cut off by a killed server left in the spool."""
        for name in tenants:
            folder = self.spool / name
            if folder.is_dir() and not folder.is_symlink():
                for entry in walk_files(folder):
                    if is_upload_in_progress(entry.name):
                        Path(entry.path).unlink(missing_ok=True)
                        event(
                            "upload",
                            tenant=name,
                            file=os.path.relpath(entry.path, folder),
                            result="removed",
                            reason="cut off when the server stopped",
                        )
