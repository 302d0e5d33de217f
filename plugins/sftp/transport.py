"""The ``sftp-transport`` plugin: tenant homes at ``sftp://`` URLs.

The transport is :mod:`sftp_client`, imported when a tenant's home needs it: a command
for tenants with other homes never imports paramiko.
"""

from __future__ import annotations

from typing import Any

from listferry import Endpoint, hookimpl


def sftp_home(endpoint: Endpoint) -> Any:
    """The transport for an ``sftp://`` endpoint."""
    from listferry_plugins.remote_home import RemoteHome
    from listferry_plugins.sftp.client import SftpTransport

    return SftpTransport(RemoteHome.from_endpoint(endpoint))


@hookimpl
def register_transports(register: Any) -> None:
    register("sftp", sftp_home)
