"""The shapes of the API's answers, for its OpenAPI document: the CLI's ``--json``
shapes (CLI.md), written out once more so that a script's author can read them there.
tests/web/test_console.py checks each against what the code answers."""

from __future__ import annotations

from typing import Any

from typing_extensions import TypedDict  # pydantic reads these on Python 3.11


class Run(TypedDict):
    """A run, as ``sync --json`` and ``runs --json`` print it."""

    tenant: str
    run_id: int | None
    status: str
    file: str | None
    strategy: str | None
    reason: str | None
    received: int
    added: int
    updated: int
    removed: int
    unsubscribed: int
    unchanged: int
    ignored: int
    invalid: int
    duplicates: int
    started_at: str
    finished_at: str | None
    sha256: str | None
    archive: str | None
    hint: str | None
    replay_of: int | None


class RunWithReport(Run):
    """A run and the report the customer got (``runs TENANT RUN_ID --json``)."""

    report: str | None


class Waiting(TypedDict):
    file: str
    until: str | None
    as_of: str | None


class Status(TypedDict):
    """A tenant's entry of ``status --json``, with the console's ``state`` and the list's
    ``sizes`` over 30 days."""

    tenant: str
    last_run: int | None
    last_status: str | None
    last_file: str | None
    last_run_at: str | None
    last_reason: str | None
    subscribers: int | None
    unsubscribed: int | None
    pending: int | None
    last_export: str | None
    last_export_at: str | None
    next_sync: str | None
    next_export: str | None
    last_applied_run: int | None
    last_applied_file: str | None
    last_applied_at: str | None
    days_since_applied: float | None
    failing_since: str | None
    last_file_at: str | None
    looked_at: str | None
    added_at: str | None
    waiting: list[Waiting]
    ignored: list[str]
    silent: bool
    error: str | None
    state: str
    sizes: list[int]


class TenantSettings(TypedDict):
    """A tenant as ``tenant list --json`` prints it: never a secret."""

    name: str
    home: str
    dialect: str
    strategy: str
    count_file: str
    allow_ips: list[str]
    pattern: str
    require_tls: bool
    process: str
    password: bool
    ssh_keys: int


class TenantDay(TypedDict):
    tenant: str
    runs: dict[str, int]
    problems: list[str]
    silent: bool
    last_file_at: str | None
    subscribers: int | None


class Digest(TypedDict):
    """``digest --json``."""

    since: str
    until: str
    applied: list[str]
    voided: list[str]
    failed: list[str]
    silent: list[str]
    tenants: list[TenantDay]


class AuditEntry(TypedDict):
    id: int
    at: str
    operator: str
    address: str | None
    action: str
    target: str | None
    detail: dict[str, Any] | None


class Operator(TypedDict):
    name: str
    role: str
    created_at: str


class Block(TypedDict):
    source: str
    until: str
    failures: int
    accounts: list[str]


class Refusal(TypedDict):
    who: str
    why: str
    times: int


class Servers(TypedDict):
    """What the running ``serve`` of this machine has open, and the blocked addresses."""

    serving: bool
    at: str | None
    protocols: list[str]
    sessions: dict[str, dict[str, int]]
    refusals: list[Refusal]
    blocked: list[Block]


class Unblocked(TypedDict):
    source: str
    unblocked: bool


class Error(TypedDict):
    """Every refusal: one line."""

    error: str
