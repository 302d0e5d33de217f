"""``listferry serve`` in cluster mode: uploads into storage, syncs into the queue.

The servers (:mod:`listferry.serve`) know neither storage nor the queue: they are given
a :class:`~listferry.serve.spool.SpooledHomes` over :class:`HomesInStorage`, and a
``queue(tenant)`` callable (:class:`SyncQueue`), both made here.
"""

from __future__ import annotations

import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

from listferry.cluster.storage import Storage
from listferry.config import Config
from listferry.errors import ListferryError
from listferry.serve.spool import SpooledHomes

#: Below the node's state folder: the tenants' spools (``spool/NAME/``).
SPOOL = Path("server", "spool")


class HomesInStorage:
    """The tenants' homes as folders of the cluster's storage, ``homes/NAME/``."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def put(self, tenant: str, source: Path, name: str) -> None:
        self.storage.put(source, f"homes/{tenant}/{name}")

    def usage(self, tenant: str) -> tuple[int, int]:
        found = self.storage.list(f"homes/{tenant}")
        return len(found), sum(item.size for item in found)


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
