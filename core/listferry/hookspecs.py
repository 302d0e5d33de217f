"""Every hook listferry calls, grouped by the stage of the data flow that calls it.

Registries take a ``register`` callback so one plugin can add several named things;
the host checks that names are unique and remembers which plugin supplied each one.
Stage hooks are called once per file, per batch of records or per run, never per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from datetime import datetime

    import click

    from listferry import (
        Config,
        Dialect,
        Executor,
        Field,
        FieldFamily,
        FileInfo,
        Invalid,
        ListReader,
        Plan,
        Record,
        RunRecord,
        Server,
        ServerRuntime,
        Strategy,
        Template,
        Tenant,
    )

hookspec = pluggy.HookspecMarker("listferry")


# --------------------------------------------------------------------------------------
# Transports and servers (protocols)
# --------------------------------------------------------------------------------------


@hookspec
def register_transports(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register client-side transports, one per URL scheme.

    Call ``register(scheme, factory)``; ``factory(endpoint)`` returns a
    :class:`listferry.Transport` for the :class:`listferry.Endpoint` given: its
    ``location`` (an absolute folder for ``file``, the URL otherwise) and how to reach
    it (credentials, trust settings, retries). The sync lists, fetches and removes list
    files through it and writes result reports with it; the export delivers return
    files with it; ``listferry push`` uploads with it. Schemes are unique.
    """


@hookspec
def register_servers(register: Callable[[str, Callable[[ServerRuntime], Server]], None]) -> None:
    """Register server-side protocols for ``listferry serve``.

    Call ``register(protocol, factory)``; ``factory(runtime)`` gets the process's
    :class:`listferry.ServerRuntime` (settings, the login gatekeeper and guard,
    the upload dispatcher) and returns a :class:`listferry.Server` that serves
    every tenant with a local home. Protocol names (``ftp``, ``ftps``, ``sftp``) are
    unique; ``serve --protocols`` picks among them.
    """


# --------------------------------------------------------------------------------------
# Format: dialects and readers
# --------------------------------------------------------------------------------------


@hookspec
def register_dialects(register: Callable[[Dialect], None]) -> None:
    """Register CRM dialects.

    Call ``register(dialect)`` with a :class:`listferry.Dialect` for each CRM
    whose files this plugin understands. Tenants choose one by its ``name``.
    """


@hookspec
def register_readers(register: Callable[[ListReader], None]) -> None:
    """Register readers for list file formats.

    Call ``register(reader)`` with a :class:`listferry.ListReader`. A dialect
    names the reader its files need (``csv`` unless it says otherwise). A reader that
    only changes what another one reads (a footer left out, say) names that reader as
    its ``base`` and implements ``wrap(source, path, name, dialect)``: the host opens the
    file with the base reader and reads from what ``wrap`` returns (subclass
    :class:`listferry.WrappedSource` to change only what differs).
    """


# --------------------------------------------------------------------------------------
# Validation: file, records (a batch at a time), plan
# --------------------------------------------------------------------------------------


@hookspec
def validate_header(file: FileInfo) -> str | None:
    """Check a list file once its header is read, before any record is.

    Return the reason to void the file (one plain sentence that names the rule), or
    ``None`` when it passes. Every plugin is asked; any reason voids the run, and the
    file's records are then not read. Typical check: required columns.
    """


@hookspec
def validate_records(records: list[Record], file: FileInfo) -> Iterable[Invalid] | None:
    """Check one batch of records (a few thousand at a time, never one per call).

    Return the records to skip, as :class:`listferry.Invalid` (line and
    reason), or ``None``. Skipped records are counted ``invalid`` and listed with their
    line numbers in the result report; the rest of the file goes on.
    """


@hookspec
def validate_file(file: FileInfo) -> str | None:
    """Check a list file once every record is read (``file.records`` is set).

    Return the reason to void the file, or ``None``. Every plugin is asked. Typical
    checks: an empty file, the count file (there when required, one whole number, the
    number of records read), so that a run voided for it still counts the records.
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

    Call ``register(strategy)`` with a :class:`listferry.Strategy`: an object
    with ``name``, ``description`` and ``decide(situation) -> Action``. The host asks
    ``decide`` once per possible situation and plans the whole file in SQL from the
    answers; the rules of meaning (an unsubscribed address is never put back) are
    applied on top of every strategy.
    """


# --------------------------------------------------------------------------------------
# Export: return-file templates, the data points they can hold, engagement events
# --------------------------------------------------------------------------------------


@hookspec
def register_templates(register: Callable[[str, Template | str], None]) -> None:
    """Register return-file templates.

    Call ``register(name, template)`` with a :class:`listferry.Template`
    (jinja2 ``source``, file ``suffix``, line ending ``newline``, and the ``fields`` it
    reads by name whatever the tenant picked), or with plain jinja2 text (suffix
    ``.txt``). Tenants choose one by name (``export_template``). The template gets
    ``rows`` (an iterator of dicts, field name to value, in the order of ``fields``),
    ``fields`` (the field names), ``tenant`` (its name) and ``generated_at`` (a UTC
    ``datetime``), and the filters ``csv_row``, ``json_line`` and ``date``; an undefined
    name is an error. Names are unique.
    """


@hookspec
def register_fields(register: Callable[[str, Field | FieldFamily], None]) -> None:
    """Register data points a return file can hold.

    Call ``register(name, field)`` with a :class:`listferry.Field`: an SQL
    expression over the subscriber's row ``s``, the ``LEFT JOIN`` clauses it needs (an
    aggregate over ``events`` grouped by address, say) and the kind of value it gives.
    The export computes every field of every subscriber in one query, never one query
    per subscriber. A :class:`listferry.FieldFamily` registered as
    ``prefix.*`` makes the fields named ``prefix.<anything>`` on demand. Tenants pick
    fields by name (``export_fields``); names are unique.
    """


@hookspec
def collect_events(tenant: Tenant, since: datetime | None) -> Iterable[Mapping[str, Any]] | None:
    """Pull a tenant's engagement events from the sending platform.

    Called once before each export of ``tenant`` (``listferry export``, or after a sync
    with ``export_after_sync``), before its rows are read. ``since`` is when the last
    delivered return file was started (aware UTC), or ``None`` before the first. Return
    the events from then on (an iterable, so a generator can stream them; ``None`` for
    none), each a mapping with ``email``, ``type`` (``open``, ``click`` or
    ``unsubscribe``), ``at`` (a ``datetime``, UTC when naive, or ISO 8601 text) and
    optionally ``topic``. Every plugin is asked. The events are stored in one
    transaction, and an event already stored (same address, type, time and topic) is
    stored once, so overlapping answers are harmless. A bad event or an exception stops
    the export with nothing stored or delivered; the next export asks again from the
    same ``since``.
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
def register_executors(register: Callable[[str, Callable[[Config], Executor]], None]) -> None:
    """Register executors: where the schedule runs its jobs.

    Call ``register(name, factory)``; ``factory(config)`` returns an object with
    ``submit(job) -> concurrent.futures.Future[JobResult]`` and ``shutdown(wait)`` (see
    :class:`listferry.Executor`). A :class:`listferry.Job` is one ``listferry`` command
    line (a tenant's ``sync`` or ``export``, the ``digest``); the result is its exit code
    and output. The config picks one with ``[listferry] executor``; the built-in
    ``local`` runs each job as a child process, ``workers`` at a time. An executor that
    sends jobs elsewhere (a batch system, Kubernetes Jobs) must run the same command
    with the same config and state folder, and stop it once ``job.timeout`` seconds
    have passed (when not ``None``), as ``local`` does.
    """


@hookspec
def run_finished(run: RunRecord, tenant: Tenant, config: Config) -> None:
    """A run ended (applied, voided, failed, skipped or idle).

    ``tenant`` is the run's :class:`listferry.Tenant` (its ``contact_email``, say)
    and ``config`` the whole :class:`listferry.Config` (``config.notify`` holds the
    ``[notify]`` settings the built-in ``email`` and ``webhook`` plugins use); take only
    the arguments you need. Called once per run, after the run is recorded and its
    result report written.
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
