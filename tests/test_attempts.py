"""Every attempt is visible: a sync that never reached a file is a recorded ``failed`` run.

A home that is missing, a customer's server that is down or refuses the login: each
attempt is one run in ``runs``, counted by ``status`` and ``digest``, and told to the
``run_finished`` plugins with its run id, as any other failure.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import people, write_module
from remote_servers import starter

from listferry.ops.tenants import add_tenant
from listferry.testing import Sandbox

PASSWORD = "Pa55-w0rd-only-the-server-knows"


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("ACME_PASSWORD", PASSWORD)
    with contextlib.ExitStack() as stack:
        yield starter(stack, tmp_path, PASSWORD)


def runs_json(ws: Sandbox, tenant: str = "acme") -> list[dict]:
    result = ws.cli("runs", tenant, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def status_of(ws: Sandbox, tenant: str = "acme") -> dict:
    shown = {item["tenant"]: item for item in json.loads(ws.cli("status", "--json").stdout)}
    return shown[tenant]


def test_a_missing_local_home_is_a_failed_run_in_runs_status_and_digest(ws: Sandbox) -> None:
    home = ws.add_tenant("acme")
    shutil.rmtree(home)

    result = ws.cli("sync", "acme", "--json")

    assert result.exit_code == 1
    (run,) = json.loads(result.stdout)
    assert run["status"] == "failed" and run["run_id"] == 1
    assert run["reason"] == f"the home folder {home} does not exist"
    (recorded,) = runs_json(ws)
    assert (recorded["run_id"], recorded["status"], recorded["reason"]) == (
        1,
        "failed",
        run["reason"],
    )
    assert recorded["file"] is None
    shown = status_of(ws)
    assert (shown["last_status"], shown["last_reason"]) == ("failed", run["reason"])
    assert ws.cli("status").exit_code == 1
    digest = json.loads(ws.cli("digest", "--json").stdout)
    assert digest["failed"] == ["acme"]
    assert f"acme: failed: the home folder {home} does not exist" in ws.cli("digest").output


@pytest.mark.parametrize("protocol", ["ftp", "sftp"])
def test_an_unreachable_customer_server_is_one_failed_run_per_attempt_not_per_retry(
    ws: Sandbox, remote: Any, protocol: str
) -> None:
    server = remote(protocol)
    server.server.__exit__()  # the customer's server is down
    add_tenant(ws.app(), "acme", server.tenant_settings(remote_retries=2))

    first, second = ws.sync_all(), ws.sync_all()

    assert [r.status for r in first + second] == ["failed", "failed"]
    history = runs_json(ws)
    assert [(r["run_id"], r["status"]) for r in history] == [(2, "failed"), (1, "failed")]
    assert history[0]["reason"] == (
        f"{server.url}: could not list the folder: connection refused (gave up after 3 tries)"
    )


def test_a_refused_login_is_a_failed_run_with_its_reason(
    ws: Sandbox, remote: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = remote("sftp")
    monkeypatch.setenv("ACME_PASSWORD", "not-the-password")
    add_tenant(ws.app(), "acme", server.tenant_settings())

    ws.sync()

    (run,) = runs_json(ws)
    assert run["reason"] == f"{server.url}: login refused for user acme (wrong password?)"
    assert status_of(ws)["last_status"] == "failed"


def test_a_missing_password_variable_is_a_failed_run_too(
    ws: Sandbox, remote: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = remote("ftp")
    monkeypatch.delenv("ACME_PASSWORD")
    add_tenant(ws.app(), "acme", server.tenant_settings())

    ws.sync()

    (run,) = runs_json(ws)
    assert (
        run["reason"] == "the environment variable ACME_PASSWORD (remote_password_env) is not set"
    )


def test_run_finished_plugins_hear_of_a_failed_attempt_with_its_run_id(
    ws: Sandbox,
    plugin_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told = plugin_dir / "told.log"
    monkeypatch.setenv("TOLD_FOR_TEST", str(told))
    write_module(
        plugin_dir,
        "teller",
        """
        import os
        from listferry import hookimpl

        @hookimpl
        def run_finished(run):
            with open(os.environ["TOLD_FOR_TEST"], "a") as f:
                f.write(f"{run.tenant} {run.run_id} {run.status}\\n")
        """,
    )
    text = ws.config_path.read_text().replace(
        'homes = "homes"', 'homes = "homes"\nplugins = ["teller"]'
    )
    ws.config_path.write_text(text)
    shutil.rmtree(ws.add_tenant("acme"))

    ws.sync()

    assert told.read_text().splitlines() == ["acme 1 failed"]


def backdate(ws: Sandbox, table: str, column: str, days: float, where: str = "1") -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - days * 86400))
    with sqlite3.connect(ws.tenant.database) as conn:
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (stamp,))


def test_status_shows_the_last_applied_list_beside_the_failing_attempts(ws: Sandbox) -> None:
    home = ws.add_tenant("acme")
    ws.upload(people(5))
    ws.sync()
    backdate(ws, "runs", "started_at", 3)
    shutil.rmtree(home)
    ws.sync()
    backdate(ws, "runs", "started_at", 2, "id = 2")
    ws.sync()

    shown = status_of(ws)

    assert (shown["last_run"], shown["last_status"]) == (3, "failed")
    assert (shown["last_applied_run"], shown["last_applied_file"]) == (1, "subscriber_list.csv")
    assert shown["days_since_applied"] == 3.0
    second = json.loads(ws.cli("runs", "acme", "2", "--json").stdout)
    assert shown["failing_since"] == second["started_at"]
    line = ws.cli("status").output
    assert line.startswith("acme: failed, run 3 ")
    assert "last applied run 1 3.0 d ago, failing since " in line
    assert line.rstrip().endswith(f"the home folder {home} does not exist")


def test_status_shows_when_the_home_was_last_looked_at(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    assert status_of(ws)["looked_at"] is None

    assert [r.status for r in ws.sync_all()] == ["idle"]

    shown = status_of(ws)
    assert shown["looked_at"] is not None and shown["last_run"] is None
    assert ws.cli("status").output.startswith(
        f"acme: no file yet, 0 active, 0 pending, home looked at {shown['looked_at']}"
    )


def test_a_remote_tenant_that_never_sent_a_list_is_silent_once_its_interval_has_passed(
    ws: Sandbox, remote: Any
) -> None:
    server = remote("sftp")
    add_tenant(ws.app(), "acme", server.tenant_settings(expect_file_within="36h"))
    assert [r.status for r in ws.sync_all()] == ["idle"]
    assert status_of(ws)["silent"] is False

    backdate(ws, "meta", "value", 2, "key = 'created_at'")

    shown = status_of(ws)
    assert shown["silent"] is True and shown["last_file_at"] is None
    digest = json.loads(ws.cli("digest", "--json").stdout)
    assert digest["silent"] == ["acme"]


def test_a_store_from_before_attempts_were_kept_dates_the_tenant_from_its_first_run(
    tmp_path: Path,
) -> None:
    import sqlite_utils

    from listferry.store.database import MIGRATIONS, Store

    path = tmp_path / "tenant.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:2]:
        migration(sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        "INSERT INTO runs (status, file, started_at) VALUES "
        "('applied', 'a.csv', '2026-01-02T03:04:05Z'), ('voided', 'b.csv', '2026-02-01T00:00:00Z')"
    )
    conn.close()

    with Store(path) as store:
        assert store.meta("created_at") == "2026-01-02T03:04:05Z"
        assert store.last_applied() == (1, None, None)
        assert [run.hint for run in store.runs("acme")] == [None, None]
