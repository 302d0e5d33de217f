"""`listferry status` and `listferry digest`: each tenant's night, and the silent ones."""

from __future__ import annotations

import json
import os
import sqlite3
import time

from conftest import people

from listferry.testing import Sandbox


def age_runs(ws: Sandbox, tenant: str, days: float) -> None:
    """Make a tenant's runs look ``days`` old."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - days * 86400))
    with sqlite3.connect(ws.app().config.tenant(tenant).database) as conn:
        conn.execute("UPDATE runs SET started_at = ?, finished_at = ?", (stamp, stamp))


def test_status_shows_each_tenant_and_flags_voided_and_silent_ones(ws: Sandbox) -> None:
    ws.add_tenant("acme", schedule="02:00")
    ws.add_tenant("beta", schedule="")
    ws.add_tenant("gamma", expect_file_within="3d")
    ws.upload(people(7), tenant="acme")
    ws.sync(tenant="acme")
    ws.upload("name\nno address\n", tenant="beta")
    ws.sync(tenant="beta")
    ws.upload(people(2), tenant="gamma")
    ws.sync(tenant="gamma")
    age_runs(ws, "gamma", 4)
    ws.upload(people(1), tenant="acme", name="waiting.csv")

    result = ws.cli("status", "--json")
    assert result.exit_code == 1  # beta voided, gamma silent
    shown = {item["tenant"]: item for item in json.loads(result.stdout)}
    acme, beta, gamma = shown["acme"], shown["beta"], shown["gamma"]
    assert (acme["last_status"], acme["subscribers"], acme["pending"]) == ("applied", 7, 1)
    assert acme["next_sync"].endswith("T02:00:00Z") and acme["days_since_applied"] == 0.0
    assert not acme["silent"]
    assert beta["last_status"] == "voided" and beta["next_sync"] is None
    assert gamma["silent"] and gamma["days_since_applied"] >= 4

    text = ws.cli("status").output.splitlines()
    assert text[0].startswith("acme: applied, run 1 ") and "7 active, 1 pending" in text[0]
    assert text[1].startswith("beta: voided") and "e-mail" in text[1]
    assert text[2].endswith("no file for longer than expected")
    assert "\x1b[" not in "".join(text)  # no colour when not on a terminal


def test_a_tenant_that_never_sent_a_file_is_silent_once_its_interval_has_passed(
    ws: Sandbox,
) -> None:
    home = ws.add_tenant("new", expect_file_within="36h")
    assert json.loads(ws.cli("status", "--json").stdout)[0]["silent"] is False
    old = time.time() - 2 * 86400
    os.utime(home, (old, old))
    item = json.loads(ws.cli("status", "--json").stdout)[0]
    assert item["silent"] and item["last_status"] is None


def test_the_digest_groups_the_days_runs_and_names_the_silent(ws: Sandbox) -> None:
    for name in ("acme", "beta", "gamma"):
        ws.add_tenant(name)
    ws.upload(people(3), tenant="acme")
    ws.sync(tenant="acme")
    for _ in range(2):
        ws.upload("name\nx\n", tenant="beta")
        ws.sync(tenant="beta")
    ws.upload(people(3), tenant="gamma")
    ws.sync(tenant="gamma")
    age_runs(ws, "gamma", 3)

    digest = json.loads(ws.cli("digest", "--json").stdout)
    assert (digest["applied"], digest["voided"], digest["failed"], digest["silent"]) == (
        ["acme"],
        ["beta"],
        [],
        ["gamma"],
    )
    text = ws.cli("digest").output
    assert "Voided (1):\n  beta: voided subscriber_list.csv:" in text and "(2 runs)" in text
    assert "No file for longer than expected (1):\n  gamma: last file " in text
    no_mail = ws.cli("digest", "--send")
    assert no_mail.exit_code == 2 and "needs a [notify.email] table" in no_mail.stderr
