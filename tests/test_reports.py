"""Result reports speak to the customer, and hints to the right person.

A replay that applies a file leaves a new report in the home; a report never tells the
customer to run an operator's command; reports do not pile up in the home; ``push``
names its own options when it cannot go on.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import csv_text, people
from remote_servers import starter

from listferry.testing import Sandbox

PASSWORD = "Pa55-w0rd-of-the-customer-server"


def report(ws: Sandbox, stem: str = "subscriber_list") -> str:
    return (ws.home / f"{stem}.result.txt").read_text()


def test_a_replay_that_applies_leaves_a_new_report_in_the_home(ws: Sandbox) -> None:
    ws.add_tenant("acme", max_invalid_share=0.01)
    ws.upload([*people(20), ("not-an-address", "X", "Y", "GOLD")])
    (voided,) = ws.sync_all()
    assert "Outcome: voided: too many invalid records" in report(ws)
    text = ws.config_path.read_text().replace("max_invalid_share = 0.01", "max_invalid_share = 0.1")
    ws.config_path.write_text(text)

    assert ws.cli("replay", "acme", str(voided.run_id)).exit_code == 0

    now = report(ws)
    assert "Outcome: applied" in now and "The list was updated." in now
    assert f"a replay of run {voided.run_id}'s archived file" in now
    assert "Nothing was changed" not in now


def test_only_the_newest_reports_stay_in_the_home(ws: Sandbox) -> None:
    ws.add_tenant("acme", strategy="incremental", keep_reports=3)
    names = [f"export_2026-12-0{day}.csv" for day in range(1, 6)]
    for day, name in enumerate(names, start=1):
        path = ws.upload(people(2, start=day * 10), name=name)
        os.utime(path, (time.time() - 100 + day, time.time() - 100 + day))
        ws.sync()

    reports = sorted(p.name for p in ws.home.iterdir() if p.name.endswith(".result.txt"))

    assert reports == [n.replace(".csv", ".result.txt") for n in names[-3:]]


def test_the_default_keeps_five_reports(ws: Sandbox) -> None:
    ws.add_tenant("acme", strategy="incremental")
    for day in range(1, 8):
        ws.upload(people(1, start=day), name=f"day{day}.csv")
        ws.sync()

    reports = sorted(p.name for p in ws.home.iterdir() if p.name.endswith(".result.txt"))

    assert reports == [f"day{day}.result.txt" for day in range(3, 8)]


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("LISTFERRY_PASSWORD", PASSWORD)
    with contextlib.ExitStack() as stack:
        yield starter(stack, tmp_path, PASSWORD)


@pytest.fixture
def list_file(tmp_path: Path) -> Path:
    path = tmp_path / "subscriber_list.csv"
    path.write_text(csv_text(people(3)))
    return path


def test_push_to_an_untrusted_certificate_names_pushs_own_options(
    ws: Sandbox, remote: Any, list_file: Path
) -> None:
    server = remote("ftps")

    result = ws.cli("push", str(list_file), server.url)

    assert result.exit_code == 1
    assert "pass --ca-file with the certificate" in result.stderr
    assert "or --insecure to skip the check" in result.stderr
    assert "ca_file" not in result.stderr.replace("--ca-file", "")
    assert "tls_verify" not in result.stderr


def test_push_without_credentials_names_pushs_own_options(
    ws: Sandbox, remote: Any, list_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = remote("sftp")
    monkeypatch.delenv("LISTFERRY_PASSWORD")

    result = ws.cli("push", str(list_file), server.url, "--known-hosts", str(server.known_hosts))

    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {server.url}: no credentials: give a password in $LISTFERRY_PASSWORD or "
        "with --password-stdin, or a key with --key\n"
    )


def test_push_to_a_url_holding_a_password_names_pushs_own_options(
    ws: Sandbox, list_file: Path
) -> None:
    result = ws.cli("push", str(list_file), "sftp://acme:secret@127.0.0.1:1/in")

    assert result.exit_code == 1
    assert "give it in $LISTFERRY_PASSWORD or with --password-stdin instead" in result.stderr
    assert "secret" not in result.stderr and "remote_password" not in result.stderr


def test_an_encrypted_list_for_a_tenant_without_a_key_fails_and_waits_for_the_operator(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme")
    ws.upload(b"-----BEGIN PGP MESSAGE-----\n...\n", name="members.csv.pgp")

    result = ws.cli("sync", "acme")

    assert result.exit_code == 1
    assert result.output == (
        "acme: failed members.csv.pgp (run 1): members.csv.pgp: the file is encrypted, and no "
        "pgp_key_file is set for acme\n"
    )
    assert (ws.home / "members.csv.pgp").exists(), "the file waits for the operator's fix"
    text = report(ws, "members.csv")
    assert text.splitlines()[2:4] == [
        "Outcome: failed: the file could not be processed because of a problem on the "
        "platform's side, not in the file; the operator has been told",
        "Nothing was changed: the last good list stands. The file stays in place and will be "
        "tried again.",
    ]
    assert "pgp_key_file" not in text and "Fix the file" not in text
