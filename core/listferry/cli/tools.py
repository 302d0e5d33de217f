"""Tools around the service: ``push``, ``plugins``, ``new-plugin``, ``datasette``, ``demo``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click

from listferry.cli.root import (
    State,
    cli,
    emit_json,
    pass_state,
    password_from_stdin,
    progress_bar,
    readable_file,
)
from listferry.errors import UsageError

log = logging.getLogger("listferry")


@cli.command()
@click.argument("file")
@click.argument("url")
@click.option("--no-count-file", is_flag=True, help="Upload the list only, no count file.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="sftp: private key file.")
@click.option(
    "--known-hosts",
    type=click.Path(dir_okay=False),
    help="sftp: the known-hosts file (default: ~/.ssh/known_hosts).",
)
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), help="ftps: CA bundle.")
@click.option("--insecure", is_flag=True, help="ftps: do not verify the server's certificate.")
@click.option(
    "--dialect",
    default="default",
    show_default=True,
    metavar="D",
    help="Count the records as dialect D reads them.",
)
@pass_state
def push(
    state: State,
    file: str,
    url: str,
    no_count_file: bool,
    password_stdin: bool,
    key: str | None,
    known_hosts: str | None,
    ca_file: str | None,
    insecure: bool,
    dialect: str,
) -> None:
    """Upload a list file, then its count file, into the folder at URL.

    For the customer's side: URL is sftp://user@host:port/folder, ftp://... or ftps://...
    (FTP with explicit TLS). The list goes up under a hidden name and is renamed when
    complete; then its count file (<stem>_count.txt, the number of records), so a
    half-done upload is never taken for a list. The password comes from
    $LISTFERRY_PASSWORD or --password-stdin; --key logs in to sftp with a key instead
    (the password, if given, unlocks it).
    """
    from listferry.tools.push import push as push_list
    from listferry.tools.push import server

    path = readable_file(file, state.log_format)
    password = os.environ.get("LISTFERRY_PASSWORD") or None
    if password_stdin:
        password = password_from_stdin()
    host = state.host()
    _dialect_option(host, dialect)
    target = server(url, password, key, known_hosts, ca_file, tls_verify=not insecure)
    push_list(
        host,
        path,
        target,
        dialect,
        not no_count_file,
        click.echo,
        progress_bar(f"uploading {path.name}"),
    )


@cli.command()
@click.option("--all", "all_", is_flag=True, help="List the built-in plugins too.")
@click.option("--hook", help="Only plugins that implement this hook.")
@click.option("--json", "json_", is_flag=True, help="Print JSON.")
@pass_state
def plugins(state: State, all_: bool, hook: str | None, json_: bool) -> None:
    """Installed plugins, enabled or not, and the hooks each implements.

    Packs installed with pip and modules the config's `plugins` names; `--all` adds the
    built-in ones (the names `disable` takes).
    """

    host = state.host()
    infos = [i for i in host.infos if (all_ or not i.builtin) and (hook is None or hook in i.hooks)]
    if json_:
        emit_json([info.to_json() for info in infos])
        return
    if not infos:
        click.echo("no plugins besides the built-in ones (--all lists those)", err=True)
    for info in infos:
        where = "built-in" if info.builtin else (info.distribution or "config")
        state_word = "enabled" if info.enabled else "disabled"
        click.echo(f"{info.name} ({where}, {state_word}): {', '.join(info.hooks) or '-'}")


@cli.command("new-plugin")
@click.argument("name")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False),
    help="Where to write the pack (default: ./listferry-NAME).",
)
def new_plugin(name: str, folder: str | None) -> None:
    """Write a working CRM pack skeleton: dialect, template, sample and a passing test.

    Install it with `python3 -m pip install -e listferry-NAME`, run its test with
    `python3 -m pytest listferry-NAME`, then change the headers, words and columns to
    those of your CRM. docs/writing-a-plugin.md walks through it.
    """
    from listferry.tools.newplugin import write_skeleton

    target = Path(folder) if folder else Path(f"listferry-{name}")
    for path in write_skeleton(name, target):
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False))
@pass_state
def datasette(state: State, folder: str) -> None:
    """Make FOLDER ready for datasette: a link per tenant store and metadata.json.

    Then `datasette FOLDER/*.db --metadata FOLDER/metadata.json` shows each tenant's
    list, runs and engagement under its own name, with every table and column described.
    """
    from listferry.tools.datasette import write_folder

    config = state.app().config
    written = write_folder(config, Path(folder))
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"datasette {folder}/*.db --metadata {folder}/metadata.json")


@cli.command()
@click.option("--keep", type=click.Path(file_okay=False), help="Run in this folder and keep it.")
def demo(keep: str | None) -> None:
    """The whole job end to end in a temporary folder."""
    from listferry.tools.demo import run_demo

    run_demo(Path(keep) if keep else None, click.echo)


def _dialect_option(host: Any, name: str) -> Any:
    """The dialect ``--dialect`` names; an unknown one is a usage error."""
    if name not in host.dialects:
        known = ", ".join(host.dialects.names())
        raise UsageError(f"--dialect: unknown dialect {name!r} (known: {known})")
    return host.dialects.get(name)
