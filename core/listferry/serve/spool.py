"""Where a completed upload goes: the tenant's local home, or storage through a spool.

On one machine a tenant's home is a local folder, and a completed upload takes its
real name there (:class:`LocalHomes`). In cluster mode the home is a folder in
S3-compatible storage: each tenant's folder on this node is a spool
(``state/server/spool/NAME/``) that holds uploads only while they are under way, and a
completed upload is put into storage under its real name and then removed from the
spool (:class:`SpooledHomes`). Only then is it received; a put that fails keeps
nothing anywhere. The storage itself is a :class:`Storehouse` given by the level that
knows it (``listferry.cluster.serving``): the servers never import the cluster.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Protocol

from listferry.config import Tenant
from listferry.names import is_under_way
from listferry.serve.jail import is_upload_in_progress, walk_files
from listferry.serve.log import event

#: How long a count of a tenant's objects in storage is used before it is made again.
USAGE_SECONDS = 5.0


class NotKept(OSError):
    """A completed upload that could not be kept; the message says why, in plain words."""


class Storehouse(Protocol):
    """The tenants' homes in storage, as :class:`SpooledHomes` uses them."""

    def put(self, tenant: str, source: Path, name: str) -> None:
        """Store ``source`` as ``name`` (a path relative to the home) in ``tenant``'s home;
        raise :class:`~listferry.ListferryError` with one plain line when it cannot."""

    def usage(self, tenant: str) -> tuple[int, int]:
        """The objects in ``tenant``'s home and their bytes; raise
        :class:`~listferry.ListferryError` when storage cannot be read."""


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
        folder = os.path.realpath(self.folder(tenant))
        name = Path(os.path.realpath(target)).relative_to(folder).as_posix()
        try:
            self.storehouse.put(tenant.name, temp, name)
        except Exception as exc:
            raise NotKept(f"storage did not take it: {exc}") from None
        finally:
            temp.unlink(missing_ok=True)
        with self._lock:
            self._counted.pop(tenant.name, None)
        return True

    def rename(self, tenant: Tenant, old: Path, new: Path) -> bool:
        """Rename within the spool; a file renamed to a real name is put into storage
        (True). A file already in storage is not in the spool: not found."""
        if old.is_file() and not old.is_symlink() and not is_under_way(new.name):
            return self.keep(tenant, old, new)
        os.rename(old, new)
        return False

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
