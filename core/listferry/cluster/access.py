"""A tenant's store outside its sync, in cluster mode: read it, or change it and publish.

A command that reads a store (``subscribers``) takes the current version; one that
changes it (``events load``) applies its change to the current version and publishes
it with the same fence as a run, taking the newest version again when a run published
in between (a few times, then it gives up and says so).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from listferry.cluster.storage import Storage
from listferry.cluster.stores import Fenced, StoreVersions
from listferry.config import Config, Tenant
from listferry.errors import ListferryError
from listferry.store.database import Store

T = TypeVar("T")

#: How often a change is tried again over a newer version before it gives up.
ATTEMPTS = 5


def versions_of(config: Config) -> StoreVersions:
    """The versions of the tenants' stores, as ``[cluster]`` and ``[storage]`` say."""
    assert config.cluster is not None and config.storage is not None
    settings = config.storage
    storage = Storage(settings.url, settings.endpoint_url, settings.region)
    return StoreVersions(config.cluster.database, storage, keep=settings.keep_versions)


@contextlib.contextmanager
def current_store(config: Config, tenant: Tenant) -> Iterator[Store]:
    """The tenant's current store version, open for reading (a copy of its own)."""
    with tempfile.TemporaryDirectory(prefix="listferry-read-") as folder:
        path = Path(folder) / "tenant.db"
        with versions_of(config) as versions:
            version = versions.checkout(tenant.name, path)
        if version == 0:
            raise ListferryError(f"{tenant.name}: no store yet (the tenant never ran)")
        with Store(path) as store:
            yield store


def change_store(config: Config, tenant: Tenant, change: Callable[[Store], T]) -> T:
    """``change(store)`` on the tenant's current version, published as the next one."""
    with versions_of(config) as versions:
        for _ in range(ATTEMPTS):
            with tempfile.TemporaryDirectory(prefix="listferry-change-") as folder:
                path = Path(folder) / "tenant.db"
                base = versions.checkout(tenant.name, path)
                with Store(path) as store:
                    result = change(store)
                    try:
                        versions.publish(tenant.name, store.conn, path, base, [])
                    except Fenced:
                        continue  # a run published meanwhile: the change again, over it
                return result
    raise ListferryError(
        f"{tenant.name}: the store kept changing under this change ({ATTEMPTS} tries); "
        "nothing was kept: try again"
    )
