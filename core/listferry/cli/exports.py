"""Return files: ``export``."""

from __future__ import annotations

import logging

import click

from listferry.cli.root import State, cli, emit_json, pass_state
from listferry.errors import ListferryError, UsageError

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

    Exit 1 when it could not be made or delivered; then nothing was recorded.
    """
    from urllib.parse import urlsplit

    from listferry.export.run import export_tenant

    app = state.app()
    chosen = app.config.tenant(tenant)
    if app.config.cluster is not None:
        raise ListferryError(
            f"{tenant}: return files are not made in cluster mode yet (docs/cluster.md)"
        )
    scheme = urlsplit(to).scheme.lower() if to and "://" in to else "file"
    if scheme not in app.host.transports:
        known = ", ".join(app.host.transports.names())
        raise UsageError(f"--to: no transport for {scheme}:// (known: {known})")
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
