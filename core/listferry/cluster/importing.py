"""``listferry cluster import``: the tenants of a single machine, moved into the cluster.

For each tenant of the single machine's ``listferry.toml``, in this order:

1. its settings are made a row's (the keys of its ``[tenants.NAME]``; a folder home is
   left out, so its home becomes its folder in storage; file names made absolute as the
   single machine read them; ``[defaults]`` values this node's ``[defaults]`` does not
   share written into the row, so the tenant works as it did) and checked whole;
2. with its run lock held (no run of it on the single machine meanwhile), a consistent
   copy of its store is taken and each run's ``archive`` rewritten to where the file
   will be in storage, so ``replay`` finds it;
3. its archived files go to ``archive/NAME/``, the files waiting in its home to
   ``homes/NAME/``, its store to ``stores/NAME/`` as the next version (1 for a new one);
4. last, in one transaction: the store pointer, its runs in the runs index and its
   settings row. Until then no node sees the tenant, so a failure never leaves half a
   tenant (the store object put in step 3 is removed again).

A tenant already in the cluster is skipped, unless ``replace``. Nothing on the single
machine is changed: stop its ``serve`` and cron first, so no list is taken twice.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from listferry.app import App
from listferry.cluster.storage import Storage
from listferry.cluster.stores import Pointer, StoreVersions, sha256_file
from listferry.cluster.tenants import checked_tenant
from listferry.config import Config, Tenant, load_config
from listferry.config.settings import PATH_KEYS
from listferry.config.shared import connect, database_error
from listferry.errors import ConfigError, ListferryError
from listferry.store.database import Store
from listferry.store.locks import RUNS, tenant_lock


def import_site(app: App, source_path: Path, replace: bool) -> Iterator[tuple[bool, str]]:
    """Import every tenant of the single machine's config at ``source_path``; yield, for
    each, whether it went well (or was skipped) and its line."""
    source = load_config(source_path)
    if source.cluster is not None:
        raise ConfigError(
            f"{source_path} is a cluster node's config: give the single machine's listferry.toml"
        )
    settings = app.config.storage
    assert settings is not None and app.config.cluster is not None
    storage = Storage(settings.url, settings.endpoint_url, settings.region)
    versions = StoreVersions(app.config.cluster.database, storage)
    tables = tomllib.loads(source.text).get("tenants", {})
    conn = connect(versions.database_url)
    try:
        for name, tenant in source.tenants.items():
            try:
                yield True, _import_one(app, source, tables[name], tenant, versions, conn, replace)
            except ListferryError as exc:
                yield False, f"{name}: not imported: {exc}"
            except sqlite3.Error as exc:
                yield False, f"{name}: not imported: its store {tenant.database}: {exc}"
    finally:
        conn.close()
        versions.close()


def row_settings(app: App, source: Config, table: dict[str, Any], tenant: Tenant) -> dict[str, Any]:
    """The settings row of a single machine's tenant (see the module, step 1)."""
    own = dict(table)
    if "home" in own and "://" not in own["home"]:
        del own["home"]
    for key, value in source.defaults.items():
        if key not in own and app.config.defaults.get(key) != value:
            own[key] = value
    for key in PATH_KEYS:
        if own.get(key) and "://" not in own[key]:
            own[key] = getattr(tenant, key)
    return own


def _import_one(
    app: App,
    source: Config,
    table: dict[str, Any],
    tenant: Tenant,
    versions: StoreVersions,
    conn: Any,
    replace: bool,
) -> str:
    name = tenant.name
    own = row_settings(app, source, table, tenant)
    try:
        checked_tenant(app, name, own)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(" is left as it was", "", 1)) from None
    url = versions.database_url
    try:
        there = conn.execute("SELECT 1 FROM listferry_tenants WHERE name = %s", (name,)).fetchone()
    except Exception as exc:
        raise database_error(url, exc) from None
    if there and not replace:
        return f"{name}: already in the cluster, skipped (--replace imports it again over it)"
    storage = versions.storage
    with tenant_lock(tenant, RUNS) as free, tempfile.TemporaryDirectory() as temp:
        if not free:
            raise ListferryError("a run of it is in progress here; try again when it ends")
        copy = Path(temp) / "tenant.db"
        runs = _store_copy(tenant, copy, storage) if tenant.database.exists() else None
        archived = _put_files(storage, tenant.state_dir / "archive", f"archive/{name}")
        waiting = _put_files(storage, Path(tenant.home), f"homes/{name}") if tenant.is_local else 0
        key, base = None, versions.pointer(name)
        if runs is not None:
            version = (base.version if base else 0) + 1
            key = f"stores/{name}/{version:012d}-{secrets.token_hex(6)}.db"
            storage.write(copy, key, if_absent=True)
        try:
            version = _publish(versions, conn, name, own, copy, key, base, runs or [], replace)
        except BaseException:
            if key is not None:
                storage.delete(key)
            raise
    store = "no store yet" if version is None else f"store version {version} ({len(runs)} runs)"
    return (
        f"{name}: {'imported again' if there else 'imported'}: settings, {store}, "
        f"{archived} archived files, {waiting} files from its home"
    )


def _store_copy(tenant: Tenant, copy: Path, storage: Storage) -> list[Any]:
    """A consistent copy of the tenant's store at ``copy``, its runs' archives rewritten
    to their places in storage; its runs, oldest first."""
    source = sqlite3.connect(tenant.database, timeout=30)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
    try:
        rows = target.execute("SELECT id, archive FROM runs WHERE archive IS NOT NULL").fetchall()
        for run_id, archive in rows:
            moved = storage.url_of(f"archive/{tenant.name}/{Path(archive).name}")
            target.execute("UPDATE runs SET archive = ? WHERE id = ?", (moved, run_id))
        target.commit()
    finally:
        target.close()
    with Store(copy) as store:  # brought to this listferry's schema, and checked
        runs = store.runs(tenant.name)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return list(reversed(runs))


def _put_files(storage: Storage, folder: Path, prefix: str) -> int:
    """Put the files at the top of ``folder`` in storage under ``prefix``; how many."""
    if not folder.is_dir():
        return 0
    count = 0
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.is_symlink():
            storage.write(path, f"{prefix}/{path.name}")
            count += 1
    return count


def _counts(copy: Path) -> tuple[int, int]:
    """The store's active and unsubscribed subscribers, as a publish counts them (what
    ``status`` shows without downloading it)."""
    conn = sqlite3.connect(copy)
    try:
        counts = dict(conn.execute("SELECT status, count(*) FROM subscribers GROUP BY status"))
    finally:
        conn.close()
    return counts.get("active", 0), counts.get("unsubscribed", 0)


def _publish(
    versions: StoreVersions,
    conn: Any,
    name: str,
    own: dict[str, Any],
    copy: Path,
    key: str | None,
    base: Pointer | None,
    runs: list[Any],
    replace: bool,
) -> int | None:
    """The last step, in one transaction: the store pointer moved from ``base`` to the
    next version (refused if it moved meanwhile), the runs in the runs index, the
    settings row. Returns the store version (``None``: no store)."""
    version = None
    try:
        with conn.transaction():
            if key is not None:
                version = (base.version if base else 0) + 1
                values = (
                    version,
                    key,
                    copy.stat().st_size,
                    sha256_file(copy),
                    versions.node,
                    *_counts(copy),
                )
                if base is not None:
                    moved = conn.execute(
                        "UPDATE listferry_stores SET version = %s, key = %s, size = %s, "
                        "sha256 = %s, written_by = %s, subscribers = %s, unsubscribed = %s, "
                        "written_at = now() WHERE tenant = %s AND version = %s",
                        (*values, name, base.version),
                    )
                else:
                    moved = conn.execute(
                        "INSERT INTO listferry_stores (version, key, size, sha256, written_by, "
                        "subscribers, unsubscribed, tenant) VALUES (%s, %s, %s, %s, %s, %s, %s, "
                        "%s) ON CONFLICT (tenant) DO NOTHING",
                        (*values, name),
                    )
                if moved.rowcount != 1:
                    raise ListferryError("its store in the cluster moved on meanwhile; try again")
                versions.remember(conn, name, version, key, *values[2:4])  # keeps all
                if replace:
                    conn.execute("DELETE FROM listferry_runs WHERE tenant = %s", (name,))
                versions.index(conn, name, runs, version, None)
            upsert = (
                "ON CONFLICT (name) DO UPDATE SET settings = EXCLUDED.settings, "
                "version = nextval('listferry_tenant_changes'), updated_at = now(), "
                "updated_by = EXCLUDED.updated_by"
                if replace
                else "ON CONFLICT (name) DO NOTHING"
            )
            written = conn.execute(
                "INSERT INTO listferry_tenants (name, settings, updated_by) "
                f"VALUES (%s, %s, %s) {upsert}",
                (name, json.dumps(own), versions.node),
            )
            if written.rowcount != 1:
                raise ListferryError("another node imported or added it meanwhile")
    except ListferryError:
        raise
    except Exception as exc:
        raise database_error(versions.database_url, exc) from None
    return version
