"""The ``s3`` transport: tenant homes in S3-compatible storage (``s3://bucket/prefix/``).

In cluster mode a tenant's home is its folder in storage (``s3://bucket/prefix/homes/NAME/``)
and whatever is put there, by the built-in servers or by any S3 client, is the tenant's
upload. The endpoint's ``endpoint_url`` names an S3-compatible server (``None``: AWS);
credentials come from the usual AWS chain. The storage layer
(:mod:`listferry.cluster.storage`, and boto3 with it) is imported only when a home needs
it: a command for tenants with other homes never imports boto3.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from listferry import ListferryError, hookimpl
from listferry.names import is_under_way
from listferry.transport import Endpoint, RemoteFile, plain_name

if TYPE_CHECKING:
    from listferry.cluster.storage import StoredObject


class S3Transport:
    """A tenant home that is a folder in S3-compatible storage.

    Only the objects directly in the folder are files of the home: subfolders, folder
    markers (keys ending in ``/``), hidden names and client temporary names are not
    listed. An object becomes visible only once it is whole, so :meth:`put` is atomic
    without a temporary name.
    """

    #: An object is listed only once its upload completed: no second look is needed.
    atomic = True

    def __init__(self, endpoint: Endpoint) -> None:
        from listferry.cluster.storage import Storage

        self.storage = Storage(endpoint.location, endpoint_url=endpoint.endpoint_url)

    def list(self) -> list[RemoteFile]:
        return [
            _remote(found) for found in self.storage.list(top_level=True) if _is_listed(found.key)
        ]

    def fetch(self, name: str, dest: Path) -> RemoteFile:
        return _remote(self.storage.get(plain_name(name), dest))

    def put(self, source: Path, name: str, progress: Callable[[int], None] | None = None) -> None:
        self.storage.write(source, plain_name(name), progress=progress)

    def remove(self, name: str, expected: RemoteFile) -> bool:
        """Delete ``name`` if storage still shows it with ``expected``'s size and mtime.

        The delete is made conditional on the ETag just seen, so an object replaced
        between the look and the delete stays, on servers that honour ``If-Match`` on
        DELETE (AWS, SeaweedFS, Ceph). A server that ignores it leaves a small window
        S3 cannot close: an upload landing between the two requests is deleted. And as
        mtimes are whole seconds, a same-size upload within the second of the listed one
        looks unchanged.
        """
        found = self.storage.head(plain_name(name))
        if found is None or (found.size, found.mtime) != (expected.size, expected.mtime):
            return False
        return self.storage.delete(name, if_match=found.etag)

    def close(self) -> None:
        """Nothing to close: the storage client is shared by every user of the same
        server in this process (closing it would cut another thread's request)."""


def _is_listed(name: str) -> bool:
    """A complete file at the top of the home: not a folder marker, nor hidden or
    temporary, and a plain name."""
    if not name or name.endswith("/") or is_under_way(name):
        return False
    try:
        plain_name(name)
    except ListferryError:
        return False
    return True


def _remote(found: StoredObject) -> RemoteFile:
    return RemoteFile(found.key, found.size, found.mtime)


@hookimpl
def register_transports(register: Any) -> None:
    register("s3", S3Transport)
