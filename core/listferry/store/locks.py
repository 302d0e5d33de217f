"""Tenant locks in the state folder: one sync and one export of a tenant at a time.

``flock`` on a file beside the tenant's store holds across processes (cron, the schedule,
an operator's command) and goes with the process that held it, however it ended.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

from listferry.config import Tenant

#: The lock of a tenant's runs, and the one of its return files.
RUNS, EXPORTS = "lock", "export.lock"


@contextmanager
def tenant_lock(tenant: Tenant, name: str = RUNS) -> Iterator[bool]:
    """Hold the tenant's lock ``name``; yields False when another process holds it."""
    tenant.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (tenant.state_dir / name).open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
