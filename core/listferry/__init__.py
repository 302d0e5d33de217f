"""listferry: keeps newsletter subscriber lists in step with customers' CRM exports.

This module is the public API: everything a plugin or a CRM pack uses, and nothing it
must not rely on. A plugin needs only this to implement a hook::

    from listferry import hookimpl

and imports what its hook signatures name from here too (``from listferry import
Dialect, Template``). :mod:`listferry.testing` is the test kit. Every other module is
the host's own and may move between releases.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

import pluggy

from listferry.errors import ConfigError, ListferryError, UsageError, Void, secret_from_env

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("listferry")

#: Public names defined in other modules, imported when first used: ``import listferry``
#: stays cheap, and the kernel never imports the layers above it.
_WHERE = {
    # dialects and readers: how a CRM writes its file
    "Dialect": "listferry.dialect",
    "DEFAULT_ALIASES": "listferry.dialect",
    "CANONICAL_FIELDS": "listferry.dialect",
    "TRUE_WORDS": "listferry.dialect",
    "FALSE_WORDS": "listferry.dialect",
    "fold_header": "listferry.dialect",
    "ListReader": "listferry.reader",
    "RecordSource": "listferry.reader",
    "WrappedSource": "listferry.reader",
    "open_list_bytes": "listferry.reader",
    "Record": "listferry.records",
    "Invalid": "listferry.records",
    "FileInfo": "listferry.records",
    # file names in a home
    "count_name": "listferry.names",
    "unpacked_name": "listferry.names",
    "is_under_way": "listferry.names",
    # plans and strategies
    "Plan": "listferry.strategy",
    "Action": "listferry.strategy",
    "Situation": "listferry.strategy",
    "Strategy": "listferry.strategy",
    # return files
    "Template": "listferry.templates",
    "Field": "listferry.fields",
    "FieldFamily": "listferry.fields",
    "sql_text": "listferry.fields",
    # transports and servers
    "Transport": "listferry.transport",
    "Endpoint": "listferry.transport",
    "RemoteFile": "listferry.transport",
    "plain_name": "listferry.transport",
    "Server": "listferry.serve.runtime",
    "ServerRuntime": "listferry.serve.runtime",
    # runs, tenants, jobs
    "RunRecord": "listferry.runs",
    "Tenant": "listferry.config",
    "Config": "listferry.config",
    "Job": "listferry.jobs",
    "JobResult": "listferry.jobs",
    "Executor": "listferry.jobs",
}

__all__ = [  # every public name: those above, and those of _WHERE
    "CANONICAL_FIELDS",
    "DEFAULT_ALIASES",
    "FALSE_WORDS",
    "TRUE_WORDS",
    "Action",
    "Config",
    "ConfigError",
    "Dialect",
    "Endpoint",
    "Executor",
    "Field",
    "FieldFamily",
    "FileInfo",
    "Invalid",
    "Job",
    "JobResult",
    "ListReader",
    "ListferryError",
    "Plan",
    "Record",
    "RecordSource",
    "RemoteFile",
    "RunRecord",
    "Server",
    "ServerRuntime",
    "Situation",
    "Strategy",
    "Template",
    "Tenant",
    "Transport",
    "UsageError",
    "Void",
    "WrappedSource",
    "__version__",
    "count_name",
    "fold_header",
    "hookimpl",
    "is_under_way",
    "open_list_bytes",
    "plain_name",
    "secret_from_env",
    "sql_text",
    "unpacked_name",
]


def __getattr__(name: str) -> Any:
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'listferry' has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from listferry.config import Config, Tenant
    from listferry.dialect import (
        CANONICAL_FIELDS,
        DEFAULT_ALIASES,
        FALSE_WORDS,
        TRUE_WORDS,
        Dialect,
        fold_header,
    )
    from listferry.fields import Field, FieldFamily, sql_text
    from listferry.jobs import Executor, Job, JobResult
    from listferry.names import count_name, is_under_way, unpacked_name
    from listferry.reader import ListReader, RecordSource, WrappedSource, open_list_bytes
    from listferry.records import FileInfo, Invalid, Record
    from listferry.runs import RunRecord
    from listferry.serve.runtime import Server, ServerRuntime
    from listferry.strategy import Action, Plan, Situation, Strategy
    from listferry.templates import Template
    from listferry.transport import Endpoint, RemoteFile, Transport, plain_name
