"""Where a return file goes: a folder or URL, reached through a registered transport.

The default is the ``outbox/`` folder of the tenant's home (made when the home is a
local folder; on a customer's server it must exist). A transport is opened on the
target folder itself, exactly as on a home, so its names stay plain file names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from urllib.request import url2pathname

from listferry.config import Tenant
from listferry.errors import ListferryError
from listferry.text import redact_url
from listferry.transport import Transport

if TYPE_CHECKING:
    from listferry.app import App

OUTBOX = "outbox"


def target_of(app: App, tenant: Tenant, to: str | None) -> str:
    """The folder (absolute) or URL the return file goes to.

    ``to`` (a command-line value) is relative to the current folder; the tenant's
    ``export_to`` is relative to the config file's folder; else the home's ``outbox/``.
    """
    if to:
        return to if "://" in to else str(Path(to).resolve())
    if tenant.export_to:
        if "://" in tenant.export_to:
            return tenant.export_to
        return str((app.config.path.parent / tenant.export_to).resolve())
    if not tenant.is_local:
        return tenant.home.rstrip("/") + "/" + OUTBOX
    outbox = Path(tenant.home) / OUTBOX
    outbox.mkdir(parents=True, exist_ok=True)
    return str(outbox)


def _location(app: App, target: str) -> tuple[str, str]:
    """(scheme, what its transport factory gets): a folder for ``file``, else the URL."""
    if "://" not in target:
        scheme = "file"
    else:
        url = urlsplit(target)
        scheme = url.scheme.lower()
        if scheme == "file":
            if url.netloc not in ("", "localhost"):
                raise ListferryError(f"{target}: a file:// URL must name a folder on this machine")
            target = url2pathname(url.path)
    if scheme not in app.host.transports:
        known = ", ".join(app.host.transports.names())
        raise ListferryError(f"{redact_url(target)}: no transport for {scheme}:// (known: {known})")
    if scheme == "file" and not Path(target).is_dir():
        raise ListferryError(f"{target}: no such folder for the return file")
    return scheme, target


def check_target(app: App, target: str, tenant: Tenant | None = None) -> None:
    """Refuse a target no transport can reach (or a local folder that is missing) early;
    in cluster mode, a place in the cluster's bucket outside ``tenant``'s home (another
    tenant's home, the stores, the archive, or the bucket past the prefix)."""
    _location(app, target)
    storage = app.config.storage
    if storage is None or tenant is None or not target.lower().startswith("s3://"):
        return
    bucket = urlsplit(storage.url).netloc
    if urlsplit(target).netloc != bucket:
        return
    home = storage.home_of(tenant.name)
    if not (target.rstrip("/") + "/").startswith(home) or ".." in target.split("/"):
        raise ListferryError(
            f"{redact_url(target)}: in the cluster's bucket a return file goes only into "
            f"{tenant.name}'s own home ({home})"
        )


def open_target(app: App, tenant: Tenant, target: str) -> Transport:
    """A transport on the target folder, by its URL scheme (``file`` for a folder)."""
    _, location = _location(app, target)
    return app.transport(tenant, location)
