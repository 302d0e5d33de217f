"""The ``sftp-transport`` plugin: tenant homes at ``sftp://`` URLs.

The transport is :mod:`sftp_client`, imported when a tenant's home needs it: a command
for tenants with other homes never imports paramiko.
"""

from __future__ import annotations

from typing import Any

from listferry import hookimpl


def sftp_home(home: str, tenant: Any) -> Any:
    """The transport for a tenant whose home is an ``sftp://`` URL."""
    from listferry_plugins.remote_home import RemoteHome
    from listferry_plugins.sftp.client import SftpTransport

    return SftpTransport(RemoteHome.from_tenant(home, tenant))


@hookimpl
def register_transports(register: Any) -> None:
    register("sftp", sftp_home)
