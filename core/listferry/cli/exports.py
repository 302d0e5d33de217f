"""Return files: ``export``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from listferry.cli.root import Failed, State, cli, emit_json, pass_state
from listferry.errors import ListferryError, UsageError

if TYPE_CHECKING:
    from listferry.config import Tenant
    from listferry.export.run import ExportResult

log = logging.getLogger("listferry")


@cli.command()
@click.argument("tenant")
@click.option(
    "--to",
    "to",
    metavar="PATH_OR_URL",
    help="A folder or URL (default: the tenant's export_to, else its home's outbox/).",
)
@click.option("--json", "json_", is_flag=True, help="Print what was delivered as JSON.")
@pass_state
def export(state: State, tenant: str, to: str | None, json_: bool) -> None:
    """Render the tenant's return file and deliver it with its count file.

    Exit 1 when it could not be made or delivered; then nothing was recorded. In
    cluster mode the export runs on this node over the tenant's current store, never
    beside a run of the tenant on any node; exit 75 when it should be tried again later
    (a worker's job is): a run of the tenant held it, or the cluster's database, storage
    or the target did not answer before anything was recorded.
    """
    from urllib.parse import urlsplit

    from listferry.export.run import export_tenant

    app = state.app()
    chosen = app.config.tenant(tenant)
    scheme = urlsplit(to).scheme.lower() if to and "://" in to else "file"
    if scheme not in app.host.transports:
        known = ", ".join(app.host.transports.names())
        raise UsageError(f"--to: no transport for {scheme}:// (known: {known})")
    if app.config.cluster is not None:
        result = _export_in_cluster(state, chosen, to)
    else:
        result = export_tenant(app, chosen, to)
    if json_:
        emit_json(result.to_json())
        return
    click.echo(
        f"{result.tenant}: {result.file} ({result.records} records, {result.subscribers}) "
        f"and {result.count_file} delivered to {result.target}"
    )
    if result.unmatched:
        click.echo(
            f"{result.tenant}: {result.unmatched} subscriber(s) left out: no id the CRM's "
            "import matches on yet (they go in a later file once a list brings it)"
        )


def _export_in_cluster(state: State, tenant: Tenant, to: str | None) -> ExportResult:
    """The export over the cluster's store; exit 75 (one line) when the cluster did not
    answer before anything was delivered, so a worker's job is tried again."""
    from listferry.cluster import RETRY_EXIT
    from listferry.cluster.exporting import export_in_cluster
    from listferry.cluster.sync import RETRY

    try:
        return export_in_cluster(state.app(), tenant, to)
    except ListferryError as exc:
        if tenant.name in RETRY:
            raise Failed(str(exc), RETRY_EXIT, state.log_format) from None
        raise
