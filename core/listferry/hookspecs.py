"""Every hook listferry calls, grouped by the stage of the data flow that calls it.

Registries take a ``register`` callback so one plugin can add several named things;
the host checks that names are unique and remembers which plugin supplied each one.
Stage hooks are called once per file, per batch of records or per run, never per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from listferry.config import Tenant
    from listferry.dialect import Dialect
    from listferry.reader import ListReader
    from listferry.records import FileInfo, Invalid, Record
    from listferry.runs import RunRecord
    from listferry.strategy import Plan, Strategy

hookspec = pluggy.HookspecMarker("listferry")


# --------------------------------------------------------------------------------------
# Transports and servers (protocols)
# --------------------------------------------------------------------------------------


@hookspec
def register_transports(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register client-side transports, one per URL scheme.

    Call ``register(scheme, factory)``; ``factory(home, tenant)`` returns a
    :class:`listferry.transport.Transport` for the tenant's home, where ``home`` is the
    tenant's ``home`` setting as a string (an absolute folder for ``file``, the URL
    otherwise) and ``tenant`` the :class:`listferry.config.Tenant`. The sync lists,
    fetches and removes list files through it and writes result reports with it.
    Schemes are unique.
    """


@hookspec
def register_servers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register server-side protocols for ``listferry serve``.

    Call ``register(protocol, factory)``; ``factory(config, options)`` returns a
    server object with ``start()`` and ``stop(timeout)`` that serves every tenant of
    the config. Protocol names (``ftp``, ``ftps``, ``sftp``) are unique.
    """


# --------------------------------------------------------------------------------------
# Format: dialects and readers
# --------------------------------------------------------------------------------------


@hookspec
def register_dialects(register: Callable[[Dialect], None]) -> None:
    """Register CRM dialects.

    Call ``register(dialect)`` with a :class:`listferry.dialect.Dialect` for each CRM
    whose files this plugin understands. Tenants choose one by its ``name``.
    """


@hookspec
def register_readers(register: Callable[[ListReader], None]) -> None:
    """Register readers for list file formats.

    Call ``register(reader)`` with a :class:`listferry.reader.ListReader`. A dialect
    names the reader its files need (``csv`` unless it says otherwise).
    """


# --------------------------------------------------------------------------------------
# Validation: file, records (a batch at a time), plan
# --------------------------------------------------------------------------------------


@hookspec
def validate_header(file: FileInfo) -> str | None:
    """Check a list file once its header is read, before any record is.

    Return the reason to void the file (one plain sentence that names the rule), or
    ``None`` when it passes. Every plugin is asked; any reason voids the run. Typical
    checks: required columns, the count file's presence and form.
    """


@hookspec
def validate_records(records: list[Record], file: FileInfo) -> Iterable[Invalid] | None:
    """Check one batch of records (a few thousand at a time, never one per call).

    Return the records to skip, as :class:`listferry.records.Invalid` (line and
    reason), or ``None``. Skipped records are counted ``invalid`` and listed with their
    line numbers in the result report; the rest of the file goes on.
    """


@hookspec
def validate_file(file: FileInfo) -> str | None:
    """Check a list file once every record is read (``file.records`` is set).

    Return the reason to void the file, or ``None``. Every plugin is asked. Typical
    checks: an empty file, the record count against the count file.
    """


@hookspec
def check_plan(plan: Plan, tenant: Tenant, force: bool) -> str | None:
    """Check what a run would do before it is applied.

    Return the reason to void the run, or ``None``. ``force`` is true when the
    operator asked to apply this run past the guards (``sync --force``); a guard that
    an operator may overrule lets it through then. Every plugin is asked. The host may
    ask twice about one plan (the second time with ``force=True``, to learn whether
    ``--force`` would lift the void), so an implementation must not have side effects.
    """


# --------------------------------------------------------------------------------------
# Update strategies
# --------------------------------------------------------------------------------------


@hookspec
def register_strategies(register: Callable[[Strategy], None]) -> None:
    """Register update strategies.

    Call ``register(strategy)`` with a :class:`listferry.strategy.Strategy`: an object
    with ``name``, ``description`` and ``decide(situation) -> Action``. The host asks
    ``decide`` once per possible situation and plans the whole file in SQL from the
    answers; the rules of meaning (an unsubscribed address is never put back) are
    applied on top of every strategy.
    """


# --------------------------------------------------------------------------------------
# Export: return-file templates and the data points they can hold
# --------------------------------------------------------------------------------------


@hookspec
def register_templates(register: Callable[[str, Any], None]) -> None:
    """Register return-file templates.

    Call ``register(name, template)`` where ``template`` is a jinja2 template source
    or an object with ``source`` and ``suffix``. The export renders it over the
    tenant's subscribers and the fields the tenant picked.
    """


@hookspec
def register_fields(register: Callable[[str, Any], None]) -> None:
    """Register data points a return file can hold.

    Call ``register(name, field)``; ``field`` says how to compute the value for each
    subscriber (for example the open count, or the date of the last click).
    """


# --------------------------------------------------------------------------------------
# Lifecycle notifications
# --------------------------------------------------------------------------------------


@hookspec
def file_received(tenant: Tenant, path: str) -> None:
    """A file finished arriving in a tenant's home (``path`` relative to it).

    Called by the servers after an upload completes, before any sync reads it. Used
    for notifications and for processing files as soon as they arrive.
    """


@hookspec
def run_finished(run: RunRecord) -> None:
    """A run ended (applied, voided, failed, skipped or idle).

    Called once per run, after the run is recorded and its result report written.
    Runs that had no file (``idle``, a tenant that was locked, a home that could not
    be reached) are not recorded and have no report, but are told here all the same
    (their ``run_id`` is ``None``). An exception raised here is logged in one line and
    does not change the run.
    """


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``listferry`` command line.

    ``cli`` is the top-level click group; decorate functions with ``@cli.command()``
    (or add groups) as usual. Called once, when the command line starts.
    """
