"""The ``sftp-server`` plugin: the built-in ``sftp`` server.

It is built in :mod:`sftp_service` when ``serve`` starts it; other commands never import
paramiko for it.
"""

from __future__ import annotations

from typing import Any

from listferry import hookimpl
from listferry.serve.runtime import ServerRuntime


def sftp_server(runtime: ServerRuntime) -> Any:
    """The SFTP server for ``serve``."""
    from listferry_plugins.sftp.service import SftpServer

    return SftpServer(runtime)


@hookimpl
def register_servers(register: Any) -> None:
    register("sftp", sftp_server)
