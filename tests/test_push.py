"""``listferry push``: the customer's side uploads a list, then its count file."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from conftest import csv_text, on_a_terminal, people
from remote_servers import Remote, starter

from listferry.config.passwords import hash_password
from listferry.ops.tenants import add_tenant
from listferry.serve.keys import make_ssh_host_key
from listferry.testing import Sandbox

PASSWORD = "Pa55-w0rd-of-the-customer-server"


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``remote("sftp", proxy=True, **server_options)``: a server with a folder ``/in``."""
    monkeypatch.setenv("LISTFERRY_PASSWORD", PASSWORD)
    with contextlib.ExitStack() as stack:
        yield starter(stack, tmp_path, PASSWORD)


@pytest.fixture
def list_file(tmp_path: Path) -> Path:
    """Three records on four lines: a quoted field holds a newline."""
    rows = people(3)
    rows[1] = ("p1@example.org", "First\nSecond", "Last1", "GOLD")
    path = tmp_path / "export" / "subscriber_list.csv"
    path.parent.mkdir()
    path.write_text(csv_text(rows))
    return path


def trust(server: Remote) -> list[str]:
    """The options that make ``push`` trust the test server's key or certificate."""
    if server.known_hosts:
        return ["--known-hosts", str(server.known_hosts)]
    return ["--ca-file", str(server.ca_file)] if server.ca_file else []


def landed(server: Remote) -> list[str]:
    """The names that arrived, in order: what was stored, then what it was renamed to."""
    return [
        f"{kind} {name.split('.')[1] if kind == 'stored' else name}"
        for kind, name in server.server.events
    ]


@pytest.mark.parametrize("protocol", ["ftp", "ftps", "sftp"])
def test_push_uploads_the_list_then_its_count_file_each_under_a_temporary_name(
    ws: Sandbox, remote: Any, list_file: Path, protocol: str
) -> None:
    server = remote(protocol)

    result = ws.cli("push", str(list_file), server.url, *trust(server))

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "uploaded subscriber_list.csv",
        "uploaded subscriber_list_count.txt: 3 records",
    ]
    assert server.files() == ["subscriber_list.csv", "subscriber_list_count.txt"]
    assert (server.folder / "subscriber_list.csv").read_bytes() == list_file.read_bytes()
    assert (server.folder / "subscriber_list_count.txt").read_text() == "3\n"
    assert landed(server) == [
        "stored subscriber_list",  # as .subscriber_list.csv.<random>.uploading
        "renamed subscriber_list.csv",
        "stored subscriber_list_count",
        "renamed subscriber_list_count.txt",
    ]


def test_push_without_a_count_file_uploads_the_list_only(
    ws: Sandbox, remote: Any, list_file: Path
) -> None:
    server = remote("ftp")

    result = ws.cli("push", str(list_file), server.url, "--no-count-file")

    assert result.exit_code == 0, result.output
    assert server.files() == ["subscriber_list.csv"]


def test_push_takes_away_a_count_file_an_earlier_upload_left(
    ws: Sandbox, remote: Any, list_file: Path
) -> None:
    server = remote("sftp")
    (server.folder / "subscriber_list_count.txt").write_text("999\n")

    result = ws.cli("push", str(list_file), server.url, *trust(server), "--no-count-file")

    assert result.exit_code == 0, result.output
    assert "removed the count file subscriber_list_count.txt" in result.output
    assert server.files() == ["subscriber_list.csv"]


def test_push_reads_the_password_from_stdin(
    ws: Sandbox, remote: Any, list_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = remote("ftp")
    monkeypatch.delenv("LISTFERRY_PASSWORD")

    result = ws.cli("push", str(list_file), server.url, "--password-stdin", input=PASSWORD + "\n")

    assert result.exit_code == 0, result.output
    assert "subscriber_list.csv" in server.files()


def test_push_logs_in_to_sftp_with_a_key(
    ws: Sandbox, remote: Any, list_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "crm_key"
    make_ssh_host_key(key)  # any Ed25519 key in OpenSSH format will do
    server = remote("sftp", client_key=paramiko.Ed25519Key.from_private_key_file(str(key)))
    monkeypatch.delenv("LISTFERRY_PASSWORD")

    result = ws.cli("push", str(list_file), server.url, *trust(server), "--key", str(key))

    assert result.exit_code == 0, result.output
    assert server.files() == ["subscriber_list.csv", "subscriber_list_count.txt"]


def test_push_unlocks_a_key_made_by_ssh_keygen_with_the_password(
    ws: Sandbox, remote: Any, list_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "a pass phrase", "-f", str(key)], check=True
    )
    client_key = paramiko.PKey.from_path(key, b"a pass phrase")
    server = remote("sftp", client_key=client_key)
    monkeypatch.delenv("LISTFERRY_PASSWORD")
    push = ["push", str(list_file), server.url, *trust(server), "--key", str(key)]

    locked = ws.cli(*push)
    assert locked.exit_code == 1
    assert locked.output == (
        f"Error: {server.url}: cannot use the key file {key} (--key): it is locked with a "
        "passphrase; give its passphrase in $LISTFERRY_PASSWORD or with --password-stdin\n"
    )

    result = ws.cli(*push, "--password-stdin", input="a pass phrase\n")
    assert result.exit_code == 0, result.output
    assert server.files() == ["subscriber_list.csv", "subscriber_list_count.txt"]


def test_push_refuses_a_wrong_password_without_showing_it(
    ws: Sandbox, remote: Any, list_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = remote("ftp")
    monkeypatch.setenv("LISTFERRY_PASSWORD", "Not-" + PASSWORD)

    result = ws.cli("push", str(list_file), server.url)

    assert result.exit_code == 1
    assert result.output == f"Error: {server.url}: login refused for user acme (wrong password?)\n"
    assert server.files() == []


@pytest.mark.parametrize("protocol", ["ftp", "ftps", "sftp"])
def test_push_without_a_password_or_key_says_how_to_give_one_and_tries_no_login(
    ws: Sandbox, remote: Any, list_file: Path, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    server = remote(protocol)
    monkeypatch.delenv("LISTFERRY_PASSWORD")

    result = ws.cli("push", str(list_file), server.url, *trust(server))

    assert result.exit_code == 1
    key = ", or a key with --key" if protocol == "sftp" else ""
    assert result.output == (
        f"Error: {server.url}: no credentials: give a password in $LISTFERRY_PASSWORD or with "
        f"--password-stdin{key}\n"
    )
    assert server.server.events == []  # no login tried: none counts towards a block


def test_push_refuses_an_unknown_host_key_and_shows_its_fingerprint(
    ws: Sandbox, remote: Any, list_file: Path, tmp_path: Path
) -> None:
    server = remote("sftp")
    empty = tmp_path / "known_hosts"
    empty.write_text("")

    result = ws.cli("push", str(list_file), server.url, "--known-hosts", str(empty))

    assert result.exit_code == 1
    assert "the server's host key is not known: ssh-ed25519 SHA256:" in result.output
    assert (
        f"then add this line to {empty} (or to a file you give push with --known-hosts): "
        f"[127.0.0.1]:{server.port} ssh-ed25519 " in result.output
    )
    assert server.server.host_key.fingerprint in result.output
    assert server.files() == []


def test_push_to_ftps_checks_the_certificate(ws: Sandbox, remote: Any, list_file: Path) -> None:
    server = remote("ftps")

    refused = ws.cli("push", str(list_file), server.url)
    assert refused.exit_code == 1
    assert "TLS certificate is not trusted (self-signed certificate)" in refused.output
    assert server.files() == []

    assert ws.cli("push", str(list_file), server.url, "--insecure").exit_code == 0
    assert ws.cli("push", str(list_file), server.url, *trust(server)).exit_code == 0
    assert server.files() == ["subscriber_list.csv", "subscriber_list_count.txt"]


def test_a_file_that_cannot_be_read_is_not_pushed(ws: Sandbox, remote: Any, tmp_path: Path) -> None:
    server = remote("ftp")
    broken = tmp_path / "broken.csv"
    broken.write_text('email,first_name\r\nada@example.org,"Ada\r\n')

    result = ws.cli("push", str(broken), server.url)

    assert result.exit_code == 1
    assert "not uploaded: the file cannot be read" in result.output
    assert server.files() == []


@pytest.mark.parametrize("protocol", ["ftp", "sftp"])
def test_an_upload_cut_once_is_retried_and_leaves_no_partial_file(
    ws: Sandbox, remote: Any, tmp_path: Path, protocol: str
) -> None:
    big = tmp_path / "subscriber_list.csv"
    big.write_text(csv_text(people(3000)))
    server = remote(protocol, proxy=True)
    server.proxy.fault("cut", after=50_000, direction="up", times=1)

    result = ws.cli("push", str(big), server.url, *trust(server))

    assert result.exit_code == 0, result.output
    assert server.proxy.faults == 1
    assert server.files() == ["subscriber_list.csv", "subscriber_list_count.txt"]
    assert (server.folder / "subscriber_list.csv").read_bytes() == big.read_bytes()


@pytest.mark.parametrize("protocol", ["ftp", "sftp"])
def test_an_upload_cut_every_time_fails_and_leaves_nothing_behind(
    ws: Sandbox, remote: Any, tmp_path: Path, protocol: str
) -> None:
    big = tmp_path / "subscriber_list.csv"
    big.write_text(csv_text(people(3000)))
    server = remote(protocol, proxy=True)
    server.proxy.fault("cut", after=50_000, direction="up")

    result = ws.cli("push", str(big), server.url, *trust(server))

    assert result.exit_code == 1
    assert "could not upload subscriber_list.csv" in result.output
    assert "(gave up after 4 tries)" in result.output
    assert server.files() == []  # not the list, not a hidden partial upload


def test_a_pushed_list_is_taken_by_the_platform_with_its_count(
    ws: Sandbox, remote: Any, list_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = remote("sftp")
    assert ws.cli("push", str(list_file), server.url, *trust(server)).exit_code == 0
    monkeypatch.setenv("ACME_PASSWORD", PASSWORD)
    add_tenant(ws.app(), "acme", server.tenant_settings(count_file="required", stable_seconds=60))

    [run] = ws.sync_all()

    assert (run.status, run.added) == ("applied", 3)
    assert ws.subscribers("active")["p1@example.org"]["first_name"] == "First\nSecond"
    assert server.files() == ["subscriber_list.result.txt"]


@pytest.mark.parametrize("protocol", ["ftp", "ftps", "sftp"])
def test_push_to_listferry_own_server_and_the_sync_applies_it(
    ws: Sandbox, served: Any, list_file: Path, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    monkeypatch.setenv("LISTFERRY_PASSWORD", PASSWORD)
    home = ws.add_tenant(
        "acme",
        password_hash=hash_password(PASSWORD),
        allow_ips=["127.0.0.1"],
        count_file="required",
    )
    with served([protocol]) as s:
        url = f"{protocol}://acme@127.0.0.1:{s.ports[protocol]}/"
        if protocol == "sftp":
            public = s.settings.ssh_host_key.with_name(s.settings.ssh_host_key.name + ".pub")
            known = ws.root / "known_hosts"
            key_type, key = public.read_text().split()[:2]
            known.write_text(f"[127.0.0.1]:{s.ports[protocol]} {key_type} {key}\n")
            trusted = ["--known-hosts", str(known)]
        else:
            trusted = ["--ca-file", str(s.settings.tls_cert)]

        result = ws.cli("push", str(list_file), url, *trusted)

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in home.iterdir()) == [
        "subscriber_list.csv",
        "subscriber_list_count.txt",
    ]
    assert [(run.status, run.added) for run in ws.sync_all()] == [("applied", 3)]


def test_push_into_a_local_folder_uses_the_file_transport(
    ws: Sandbox, list_file: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "home"
    folder.mkdir()

    result = ws.cli("push", str(list_file), str(folder))

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == [
        "subscriber_list.csv",
        "subscriber_list_count.txt",
    ]


@pytest.mark.parametrize("protocol", ["ftps", "sftp"])
def test_push_draws_a_progress_bar_on_a_terminal_only(
    ws: Sandbox, remote: Any, tmp_path: Path, protocol: str
) -> None:
    import sys

    server = remote(protocol)
    big = tmp_path / "big" / "members.csv"
    big.parent.mkdir()
    big.write_text(csv_text(people(20_000)))
    command = [sys.executable, "-m", "listferry", "push", str(big), server.url, *trust(server)]
    code, shown = on_a_terminal(command)
    assert code == 0
    assert "uploading members.csv" in shown and "100%" in shown
    assert (server.folder / "members.csv").read_bytes() == big.read_bytes()

    quiet = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and quiet.stderr == ""
