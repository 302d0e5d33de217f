"""The ``listferry`` command line. Errors are one line on stderr, never a traceback.

Exit codes: 0 success; 2 a usage or config error, to be fixed in the command or the
config (a value an option or argument does not take, a tenant, dialect, strategy or
protocol that does not exist, input missing on stdin, a config that does not check);
1 a refused operation, a voided or failed run, or a command that could not do its job
(a tenant that exists already, a run the tenant does not have, a file that cannot be
read, loaded or sent). tests/test_exit_codes.py holds the table.

One module per command family; :mod:`listferry.cli.root` holds the group and what the
commands share.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from listferry.cli import (  # noqa: F401  (commands)
    cluster,
    exports,
    look,
    runs,
    servers,
    tenants,
    tools,
    web,
)
from listferry.cli.root import Preloaded, cli
from listferry.config import find_config, load_config
from listferry.errors import ListferryError
from listferry.plugins import load_host

log = logging.getLogger("listferry")


def _plugin_commands() -> Preloaded | None:
    """Let plugins add commands, honouring the config's plugin settings when it reads;
    the plugins loaded, for the command to use (``None`` when the config does not read)."""
    argv = sys.argv[1:]
    option = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            option = argv[i + 1]
        elif arg.startswith("--config="):
            option = arg.split("=", 1)[1]
    path = find_config(option)
    preloaded = None
    try:
        config = load_config(path, tenants=())  # no tenant decides which plugins load
        host = load_host(config.disable, config.plugins)
        preloaded = Preloaded(path.resolve(), host)
    except ListferryError:
        try:
            host = load_host()
        except ListferryError:
            return None
    host.hook.register_commands(cli=cli)
    return preloaded


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """A background thread (a server connection, a library's helper) that raised: one line."""
    if issubclass(args.exc_type, SystemExit):
        return
    if os.environ.get("LISTFERRY_DEBUG"):
        threading.__excepthook__(args)
        return
    name = args.thread.name if args.thread else "a thread"
    log.error("%s failed: %s: %s", name, args.exc_type.__name__, args.exc_value)


def main() -> None:
    threading.excepthook = _thread_failed
    cli(prog_name="listferry", obj=_plugin_commands())
