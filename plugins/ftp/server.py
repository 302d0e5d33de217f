"""The ``ftp-server`` plugin: the built-in ``ftp`` and ``ftps`` servers.

They are built in :mod:`ftp_service` when ``serve`` starts one; other commands never
import pyftpdlib and pyOpenSSL (a fifth of a second of every command's start).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from listferry import hookimpl
from listferry.serve.runtime import ServerRuntime


def ftp_server(runtime: ServerRuntime, protocol: str) -> Any:
    """The FTP (``protocol="ftp"``) or FTPS (``"ftps"``) server for ``serve``."""
    from listferry_plugins.ftp.service import FTPServer

    return FTPServer(runtime, protocol=protocol)


@hookimpl
def register_servers(register: Any) -> None:
    register("ftp", partial(ftp_server, protocol="ftp"))
    register("ftps", partial(ftp_server, protocol="ftps"))
