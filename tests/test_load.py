"""The load run of ``bench/load.py``, small: 4 tenants x 3 uploaders x 1 MB while syncing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from load import load, one_night


def test_concurrent_uploads_during_syncs_land_whole_and_each_tenant_sees_only_its_own(
    tmp_path: Path,
) -> None:
    figures = load(tmp_path / "site", tenants=4, uploaders=3, size_mb=1, rounds=2)
    assert figures["problems"] == []
    assert figures["done"] == figures["uploads"] == 24
    assert figures["by_protocol"] == {"sftp": 12, "ftps": 12}
    assert figures["runs"].get("applied", 0) >= 4
    assert figures["bytes"] >= 24 << 20
    # Each password check (scrypt, N=2^17) takes 128 MiB. Made on every connection's own
    # thread, malloc kept them all (with N=2^14, 12 logins at once took the server from
    # 70 MB to over 300 MB); made on the few password-check threads, they take turns.
    checkers = min(os.cpu_count() or 1, 4)
    assert figures["peak_memory"] < (100 << 20) + checkers * (150 << 20)


def test_tenants_upload_and_are_synced_while_one_floods_handles_and_connections(
    tmp_path: Path,
) -> None:
    """Issue #14, findings 1 and 9 together, as ``bench/load.py --attack`` runs them: one
    tenant holds sessions full of open handles and hundreds of bare connections from its
    own address; every other tenant's upload lands and is applied (``one_night`` fails
    otherwise), and the attacker holds no more than its limits give it."""
    night = one_night(tmp_path / "site", tenants=3, size_mb=1, attacked=True)
    attacker = night["attacker"]
    assert 0 < attacker["handles"] <= 8 * 64  # max_sessions x max_handles_per_session
    assert attacker["handles_refused"] > 0
