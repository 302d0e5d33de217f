"""The export: a tenant's return file, rendered from its store and delivered.

collect events (plugins) > rows (one query) > render (jinja2, into a local temporary
file) > count file > deliver (the data file, then its count file, each put atomically)
> record (``exports``). Nothing is delivered when rendering fails, and nothing is
recorded unless both files were delivered.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from listferry.app import App, template_name
from listferry.config import Tenant, export_stem
from listferry.errors import ListferryError
from listferry.export.query import DIGESTS, Rows, drop_digests
from listferry.export.render import render
from listferry.export.target import check_target, open_target, target_of
from listferry.fields import Field, resolve_fields
from listferry.names import count_name
from listferry.store.database import Store
from listferry.store.events import record_events
from listferry.store.locks import EXPORTS, tenant_lock
from listferry.templates import Template, as_template
from listferry.text import redact_url
from listferry.times import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from listferry.plugins import Host

log = logging.getLogger("listferry")


@dataclass(frozen=True)
class ExportResult:
    """What one export delivered, and where."""

    tenant: str
    file: str
    count_file: str
    records: int
    template: str
    subscribers: str
    target: str
    events_stored: int
    events_known: int
    unmatched: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "file": self.file,
            "count_file": self.count_file,
            "records": self.records,
            "template": self.template,
            "subscribers": self.subscribers,
            "target": self.target,
            "events": {"stored": self.events_stored, "known": self.events_known},
            "unmatched": self.unmatched,
        }


def file_stem(tenant: Tenant, now: datetime) -> str:
    """The tenant's ``export_name`` with ``{date}`` (UTC ``YYYYMMDD``) and ``{tenant}``."""
    try:
        return export_stem(tenant.export_name, now.strftime("%Y%m%d"), tenant.name)
    except ValueError as exc:  # the config check let it through: a bug, said plainly
        raise ListferryError(f"export_name {tenant.export_name!r} {exc}") from None


def export_template(host: Host, tenant: Tenant) -> Template:
    name = template_name(host, tenant)
    return as_template(name, host.templates.get(name))


def export_fields(host: Host, tenant: Tenant, template: Template) -> dict[str, Field]:
    """The tenant's fields, then those the template needs besides, each once."""
    names = (*tenant.export_fields, *template.fields, *template.match_on)
    return resolve_fields(host.fields, dict.fromkeys(names))


def collect(app: App, tenant: Tenant, store: Store, since: datetime | None) -> tuple[int, int]:
    """Ask the plugins for the tenant's new events and store them; (stored, known)."""
    try:
        answers = app.host.hook.collect_events(tenant=tenant, since=since)
        events = (event for answer in answers if answer is not None for event in answer)
        return record_events(store, events, source="collected event")
    except ListferryError as exc:
        raise ListferryError(f"collecting events failed: {exc}") from None
    except Exception as exc:
        raise ListferryError(
            f"collecting events failed: a plugin raised {type(exc).__name__}: {exc}"
        ) from exc


def export_tenant(app: App, tenant: Tenant, to: str | None = None) -> ExportResult:
    """Write ``tenant``'s return file and its count file, and deliver both.

    ``to`` is a folder or URL (default: the tenant's ``export_to``, else its home's
    ``outbox/``). Raises :class:`ListferryError` when anything fails; then nothing was
    recorded, and when rendering failed nothing was delivered. Two exports of a tenant
    never overlap (they would send the same changes twice): the second is refused.
    """
    with tenant_lock(tenant, EXPORTS) as locked:
        if not locked:
            raise ListferryError(f"{tenant.name}: another export of this tenant is in progress")
        return _export(app, tenant, to)


def _export(
    app: App, tenant: Tenant, to: str | None, ready: Callable[[], None] | None = None
) -> ExportResult:
    """The export (see :func:`export_tenant`); ``ready()`` is called just before the
    delivery, to raise when it must not happen any more (cluster mode: the lease went)."""
    started = datetime.now(UTC)
    template = export_template(app.host, tenant)
    fields = export_fields(app.host, tenant, template)
    target = target_of(app, tenant, to)
    check_target(app, target, tenant)
    sealed = ".pgp" if tenant.pgp_recipient_key_file else ""
    name = free_name(
        file_stem(tenant, started), template.suffix, sealed, names_at(app, tenant, target)
    )
    area = tenant.state_dir / "exports"
    area.mkdir(parents=True, exist_ok=True, mode=0o700)
    for left in area.glob("export-*"):  # by an export killed mid-way: the lock is ours
        shutil.rmtree(left, ignore_errors=True)
    with Store(tenant.database) as store:
        last = store.last_export()
        since = parse_iso(last["started_at"]) if last else None
        stored, known = collect(app, tenant, store, since)
        folder = Path(tempfile.mkdtemp(prefix="export-", dir=area))
        try:
            data = folder / name
            records, unmatched = write_files(
                store, tenant, template, fields, data, started, template_name(app.host, tenant)
            )
            count = folder / count_name(name)
            if sealed:
                from listferry.pgp import encrypt

                name += sealed
                encrypt(tenant, data, folder / name)
                data.unlink()
                data = folder / name
            if ready is not None:
                ready()
            deliver(app, tenant, target, [data, count])
            store.record_export(
                {
                    "started_at": iso(started),
                    "finished_at": utcnow(),
                    "template": template_name(app.host, tenant),
                    "subscribers": tenant.export_subscribers,
                    "file": name,
                    "target": redact_url(target),
                    "records": records,
                },
                DIGESTS,
            )
        finally:
            drop_digests(store.conn)
            shutil.rmtree(folder, ignore_errors=True)
    return ExportResult(
        tenant.name,
        name,
        count_name(name),
        records,
        template_name(app.host, tenant),
        tenant.export_subscribers,
        redact_url(target),
        stored,
        known,
        unmatched,
    )


def names_at(app: App, tenant: Tenant, target: str) -> set[str]:
    """The names of the files at ``target`` now; none known where it cannot be listed
    (a drop folder that only takes files, a transport that only puts): there a return
    file of the same name is replaced, as the target's owner allows."""
    transport = open_target(app, tenant, target)
    try:
        return {found.name for found in transport.list()}
    except (ListferryError, OSError, AttributeError, NotImplementedError) as exc:
        log.debug("%s: %s cannot be listed: %s", tenant.name, redact_url(target), exc)
        return set()
    finally:
        transport.close()


def free_name(stem: str, suffix: str, sealed: str, taken: set[str]) -> str:
    """``stem + suffix``, or with ``-2``, ``-3`` ... after the stem: the first whose
    return file (``sealed`` added when it is encrypted) and count file are both not in
    ``taken``. A second return file of a day never replaces the first, which the CRM
    may not have fetched yet (with ``changed-since-last`` its changes would be lost)."""
    for number in range(1, 10_000):
        name = f"{stem}{'' if number == 1 else f'-{number}'}{suffix}"
        if name + sealed not in taken and count_name(name) not in taken:
            return name
    raise ListferryError(f"{stem}{suffix}: 9999 return files of that name wait at the target")


def write_files(
    store: Store,
    tenant: Tenant,
    template: Template,
    fields: dict[str, Field],
    data: Path,
    started: datetime,
    name: str | None = None,
) -> tuple[int, int]:
    """Render the return file into ``data`` and write its count file beside it.

    Returns the number of data records (the rows the template read) and of subscribers
    left out for want of an id the CRM matches on (``Template.match_on``).
    """
    rows = Rows(
        store.conn, fields, tenant.export_subscribers == "changed-since-last", template.match_on
    )
    context = {
        "rows": iter(rows),
        "batches": rows.batches(),
        "fields": list(fields),
        "tenant": tenant.name,
        "generated_at": started.replace(microsecond=0),
    }
    try:
        with data.open("w", encoding=template.encoding, newline="") as out:
            render(name or tenant.export_template or "csv", template, context, out)
    finally:
        rows.close()
    (data.parent / count_name(data.name)).write_text(f"{rows.count}\n", encoding="ascii")
    return rows.count, rows.unmatched


def deliver(app: App, tenant: Tenant, target: str, files: list[Path]) -> None:
    """Put each local file at ``target`` under its own name, in order, on one connection."""
    transport = open_target(app, tenant, target)
    try:
        for path in files:
            transport.put(path, path.name)
    finally:
        transport.close()


def export_after_sync(app: App, tenant: Tenant) -> ExportResult | None:
    """The return file after an applied sync; a failure is logged in one line, not raised."""
    try:
        result = export_tenant(app, tenant)
    except Exception as exc:
        detail = str(exc) if isinstance(exc, ListferryError | OSError) else repr(exc)
        log.error(
            "%s: the return file after the sync was not written: %s",
            tenant.name,
            detail,
            exc_info=bool(os.environ.get("LISTFERRY_DEBUG")),
        )
        return None
    log.info(
        "%s: return file %s, %d records, delivered to %s",
        tenant.name,
        result.file,
        result.records,
        result.target,
    )
    return result
