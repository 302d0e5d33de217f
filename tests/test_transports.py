"""Homes on customers' servers: the ftp, ftps and sftp transports against real servers.

Every server runs in this process on 127.0.0.1 (see ``remote_servers.py``); faults come
from a TCP proxy that cuts or stalls a transfer after a number of bytes.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from conftest import csv_text, people
from remote_servers import Remote, starter

from listferry.app import endpoint_of
from listferry.config.passwords import hash_password
from listferry.errors import ConfigError
from listferry.ops.tenants import add_tenant
from listferry.serve.keys import make_ssh_host_key
from listferry.testing import Sandbox
from listferry_plugins.sftp.transport import sftp_home

PASSWORD = "Pa55-w0rd-only-the-server-knows"
PROTOCOLS = ["ftp", "ftps", "sftp"]
BIG = 2000  # records: about 80 kB, several packets and blocks
LARGE = 4 << 20  # bytes: a download with many reads in flight


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``remote("sftp", proxy=True, **server_options)``: a customer's server with ``/in``."""
    monkeypatch.setenv("ACME_PASSWORD", PASSWORD)
    with contextlib.ExitStack() as stack:
        yield starter(stack, tmp_path, PASSWORD)


def tenant_on(ws: Sandbox, server: Remote, name: str = "acme", **settings: Any) -> None:
    add_tenant(ws.app(), name, server.tenant_settings(**settings))


def upload(server: Remote, rows: int = 50, count: bool = False, name: str = "subscriber_list.csv"):
    (server.folder / name).write_text(csv_text(people(rows)))
    if count:
        (server.folder / name.replace(".csv", "_count.txt")).write_text(f"{rows}\n")


def archived(ws: Sandbox, name: str = "acme") -> list[str]:
    folder = ws.app().config.tenant(name).state_dir / "archive"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- the sync, end to end ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_list_on_a_customer_server_is_applied_archived_removed_and_reported(
    ws: Sandbox, remote: Any, protocol: str
) -> None:
    server = remote(protocol)
    tenant_on(ws, server)
    upload(server, rows=50)

    [run] = ws.sync_all()

    assert (run.status, run.added, run.reason) == ("applied", 50, None)
    assert len(ws.subscribers("active")) == 50
    assert [name.split("-", 2)[2] for name in archived(ws)] == ["subscriber_list.csv"]
    assert server.files() == ["subscriber_list.result.txt"]
    assert "The list was updated." in (server.folder / "subscriber_list.result.txt").read_text()


@pytest.mark.parametrize("protocol", ["ftp", "sftp"])
def test_the_count_file_is_fetched_checked_and_removed_with_its_list(
    ws: Sandbox, remote: Any, protocol: str
) -> None:
    server = remote(protocol)
    tenant_on(ws, server, count_file="required")
    (server.folder / "subscriber_list.csv").write_text(csv_text(people(30)))
    (server.folder / "subscriber_list_count.txt").write_text("31\n")

    [run] = ws.sync_all()

    assert run.status == "voided"
    assert run.reason == "record count mismatch: count file says 31, file has 30 records"
    assert ws.subscribers("active") == {}
    assert server.files() == ["subscriber_list.result.txt"]
    assert len(archived(ws)) == 2  # the list and its count file


def test_a_later_report_replaces_the_earlier_one_without_posix_rename(
    ws: Sandbox, remote: Any
) -> None:
    server = remote("sftp", posix_rename=False)
    tenant_on(ws, server)
    upload(server, rows=10)
    assert [r.status for r in ws.sync_all()] == ["applied"]
    (server.folder / "subscriber_list.csv").write_text("email\r\nnot-an-address\r\n")

    assert [r.status for r in ws.sync_all()] == ["voided"]
    assert server.files() == ["subscriber_list.result.txt"]
    assert "Nothing was changed" in (server.folder / "subscriber_list.result.txt").read_text()


def test_a_server_without_mlsd_is_listed_with_nlst_size_and_mdtm(ws: Sandbox, remote: Any) -> None:
    server = remote("ftp", mlsd=False)
    tenant_on(ws, server)
    upload(server, rows=20)

    [run] = ws.sync_all()

    assert (run.status, run.added) == ("applied", 20)
    assert server.files() == ["subscriber_list.result.txt"]


def test_hidden_and_partial_uploads_on_the_server_are_never_taken(ws: Sandbox, remote: Any) -> None:
    server = remote("sftp")
    tenant_on(ws, server)
    (server.folder / ".subscriber_list.csv.1a2b.part").write_text(csv_text(people(5)))
    (server.folder / "subscriber_list.csv.filepart").write_text(csv_text(people(5)))

    assert [r.status for r in ws.sync_all()] == ["idle"]
    assert len(server.files()) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_listferry_pulls_from_listferry_its_own_servers_as_the_customer_server(
    ws: Sandbox, served: Any, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """The built-in servers (``listferry serve``) hold tenant crm's home; acme pulls from it."""
    monkeypatch.setenv("CRM_PASSWORD", PASSWORD)
    crm = ws.add_tenant("crm", password_hash=hash_password(PASSWORD), allow_ips=["127.0.0.1"])
    (crm / "subscriber_list.csv").write_text(csv_text(people(40)))
    (crm / "subscriber_list_count.txt").write_text("40\n")
    with served([protocol]) as s:
        settings = {
            "home": f"{protocol}://crm@127.0.0.1:{s.ports[protocol]}/",
            "remote_password_env": "CRM_PASSWORD",
            "stable_seconds": 0.2,
        }
        if protocol == "sftp":
            public = s.settings.ssh_host_key.with_name(s.settings.ssh_host_key.name + ".pub")
            key_type, key = public.read_text().split()[:2]
            known = ws.root / "known_hosts"
            known.write_text(f"[127.0.0.1]:{s.ports[protocol]} {key_type} {key}\n")
            settings["known_hosts"] = str(known)
        else:
            settings["ca_file"] = str(s.settings.tls_cert)
        add_tenant(ws.app(), "acme", settings)

        [run] = ws.sync_all(tenant="acme")

    assert (run.status, run.added) == ("applied", 40)
    assert sorted(p.name for p in crm.iterdir()) == ["subscriber_list.result.txt"]


# -- stability -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["ftp", "sftp"])
def test_a_file_still_growing_between_listings_is_left_for_the_next_run(
    ws: Sandbox, remote: Any, protocol: str
) -> None:
    growing = {"rows": 10}

    def grow() -> None:  # the CRM is still writing: each listing finds more rows
        if growing["rows"]:
            with (server.folder / "subscriber_list.csv").open("a") as f:
                f.write(f"late{growing['rows']}@example.org,Late,Row,GOLD\r\n")
            growing["rows"] += 1

    server = remote(protocol, on_list=grow)
    tenant_on(ws, server, stable_seconds=0.1)
    upload(server, rows=10)

    assert [r.status for r in ws.sync_all()] == ["idle"]
    assert ws.subscribers("active") == {}
    assert server.files() == ["subscriber_list.csv"]

    rows = growing["rows"]
    growing["rows"] = 0  # the upload is done
    [run] = ws.sync_all()
    assert (run.status, run.added) == ("applied", 10 + rows - 10)


def test_a_list_with_its_count_file_is_taken_without_a_second_look(
    ws: Sandbox, remote: Any
) -> None:
    server = remote("sftp")
    tenant_on(ws, server, stable_seconds=60)
    upload(server, rows=10, count=True)

    started = time.monotonic()
    [run] = ws.sync_all()

    assert run.status == "applied"
    assert time.monotonic() - started < 30


# -- host keys and certificates ------------------------------------------------------------


def fingerprint(public_key: Path) -> str:
    """The SHA256 fingerprint as OpenSSH's own ssh-keygen prints it."""
    return subprocess.run(
        ["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True, check=True
    ).stdout.split()[1]


def test_an_unknown_host_key_is_refused_with_its_fingerprint_and_how_to_add_it(
    ws: Sandbox, remote: Any, tmp_path: Path
) -> None:
    server = remote("sftp")
    tenant_on(ws, server, known_hosts=None)  # the default: state/acme/known_hosts
    upload(server, rows=5)
    known_hosts = ws.tenant.state_dir / "known_hosts"

    [run] = ws.sync_all()

    assert run.status == "failed"
    assert "host key is not known: ssh-ed25519 " in run.reason
    assert fingerprint(tmp_path / "remote-0" / "ssh_host_key.pub") in run.reason
    assert str(known_hosts) in run.reason
    assert ws.subscribers("active") == {}
    assert server.files() == ["subscriber_list.csv"]

    # doing what the message says (after checking the fingerprint) lets the next run in
    known_hosts.write_text(run.reason.rsplit(f"{known_hosts}: ", 1)[1] + "\n")
    assert [r.status for r in ws.sync_all()] == ["applied"]


def test_a_changed_host_key_is_refused_naming_both_keys(
    ws: Sandbox, remote: Any, tmp_path: Path
) -> None:
    server = remote("sftp")
    impostor = tmp_path / "old_host_key"
    make_ssh_host_key(impostor)
    old = impostor.with_name("old_host_key.pub").read_text().split()
    server.known_hosts.write_text(f"[127.0.0.1]:{server.port} {old[0]} {old[1]}\n")
    tenant_on(ws, server)
    upload(server, rows=5)

    [run] = ws.sync_all()

    assert run.status == "failed"
    assert "host key has CHANGED" in run.reason
    assert fingerprint(impostor.with_name("old_host_key.pub")) in run.reason
    assert fingerprint(tmp_path / "remote-0" / "ssh_host_key.pub") in run.reason
    assert server.files() == ["subscriber_list.csv"]


def test_a_known_hosts_file_hashed_by_ssh_keygen_with_lines_paramiko_cannot_read_works(
    ws: Sandbox, remote: Any
) -> None:
    server = remote("sftp")
    line = server.known_hosts.read_text()
    server.known_hosts.write_text(
        "# ~/.ssh/known_hosts as OpenSSH keeps it\n"
        f"@cert-authority *.example.org {line.split(' ', 1)[1]}"
        "other.example.org sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t\n"
        + line
    )
    subprocess.run(
        ["ssh-keygen", "-H", "-f", str(server.known_hosts)], capture_output=True, check=True
    )
    assert "127.0.0.1" not in server.known_hosts.read_text()
    tenant_on(ws, server)
    upload(server, rows=5)

    assert [r.status for r in ws.sync_all()] == ["applied"]


def test_a_host_key_marked_revoked_is_refused(ws: Sandbox, remote: Any) -> None:
    server = remote("sftp")
    line = server.known_hosts.read_text()
    server.known_hosts.write_text(line + f"@revoked * {line.split(' ', 1)[1]}")
    tenant_on(ws, server)

    [run] = ws.sync_all()

    assert run.status == "failed"
    assert "is marked @revoked in" in run.reason


@pytest.mark.parametrize(
    ("settings", "status"),
    [
        ({"ca_file": None}, "failed"),
        ({}, "applied"),
        ({"ca_file": None, "tls_verify": False}, "applied"),
    ],
    ids=["system-store", "ca_file", "tls_verify-false"],
)
def test_ftps_refuses_a_self_signed_certificate_unless_told_to_trust_it(
    ws: Sandbox, remote: Any, settings: dict, status: str
) -> None:
    server = remote("ftps")
    tenant_on(ws, server, **settings)
    upload(server, rows=5)

    [run] = ws.sync_all()

    assert run.status == status
    if status == "failed":
        assert "TLS certificate is not trusted" in run.reason
        assert "self-signed certificate" in run.reason
        assert server.files() == ["subscriber_list.csv"]


# -- network faults --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["ftp", "sftp"])
def test_a_download_cut_once_is_retried_and_the_list_applied(
    ws: Sandbox, remote: Any, protocol: str
) -> None:
    server = remote(protocol, proxy=True)
    server.proxy.fault("cut", after=30_000, direction="down", times=1)
    tenant_on(ws, server)
    upload(server, rows=BIG)

    [run] = ws.sync_all()

    assert (run.status, run.added) == ("applied", BIG)
    assert server.proxy.faults == 1


@pytest.mark.parametrize("protocol", ["ftp", "sftp"])
def test_a_download_cut_every_time_fails_the_run_and_applies_nothing(
    ws: Sandbox, remote: Any, protocol: str
) -> None:
    server = remote(protocol, proxy=True)
    server.proxy.fault("cut", after=30_000, direction="down")
    tenant_on(ws, server)
    upload(server, rows=BIG)

    [run] = ws.sync_all()

    assert run.status == "failed"
    assert "could not fetch subscriber_list.csv: " in run.reason
    assert "(gave up after 3 tries)" in run.reason
    assert server.proxy.faults == 3
    assert ws.subscribers("active") == {}
    assert archived(ws) == []
    assert server.files() == ["subscriber_list.csv", "subscriber_list.result.txt"]
    work = ws.tenant.state_dir / "work"
    assert not [p for p in work.rglob("*") if p.is_file()]  # no partial download left


@pytest.mark.parametrize("protocol", ["ftp", "sftp"])
def test_a_stalled_download_times_out_and_fails_the_run(
    ws: Sandbox, remote: Any, protocol: str
) -> None:
    server = remote(protocol, proxy=True)
    server.proxy.fault("stall", after=30_000, direction="down")
    tenant_on(ws, server, remote_retries=1, remote_timeout=0.5)
    upload(server, rows=BIG)

    [run] = ws.sync_all()

    assert run.status == "failed"
    assert "timed out: no answer from the server for 0.5 s (gave up after 2 tries)" in run.reason
    assert ws.subscribers("active") == {}


@pytest.fixture
def thread_failures(monkeypatch: pytest.MonkeyPatch) -> list[threading.ExceptHookArgs]:
    """Exceptions that end a thread, kept here instead of printed."""
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    return failures


def test_a_large_sftp_download_cut_midway_fails_cleanly_with_no_partial_file_and_no_traceback(
    ws: Sandbox, remote: Any, capfd: pytest.CaptureFixture[str], thread_failures: list
) -> None:
    server = remote("sftp", proxy=True)
    server.proxy.fault("cut", after=LARGE // 2, direction="down")
    tenant_on(ws, server)
    upload(server, rows=LARGE // 45)  # about 45 bytes a record
    assert (server.folder / "subscriber_list.csv").stat().st_size > LARGE

    [run] = ws.sync_all()

    assert run.status == "failed"
    assert "could not fetch subscriber_list.csv: " in run.reason
    assert "\n" not in run.reason
    assert "(gave up after 3 tries)" in run.reason
    assert server.proxy.faults == 3
    assert ws.subscribers("active") == {}
    assert archived(ws) == []
    work = ws.tenant.state_dir / "work"
    assert not [p for p in work.rglob("*") if p.is_file()]
    assert thread_failures == []
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("read_limit", [None, 10_000], ids=["full-reads", "short-reads"])
def test_a_large_sftp_download_cut_once_arrives_byte_for_byte_on_the_retry(
    ws: Sandbox,
    remote: Any,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    thread_failures: list,
    read_limit: int | None,
) -> None:
    server = remote("sftp", proxy=True, read_limit=read_limit)
    server.proxy.fault("cut", after=LARGE // 2, direction="down", times=1)
    tenant_on(ws, server)
    sent = random.Random(7).randbytes(LARGE)
    (server.folder / "export.bin").write_bytes(sent)
    transport = sftp_home(endpoint_of(ws.tenant, server.url))

    try:
        got = transport.fetch("export.bin", tmp_path / "export.bin")
    finally:
        transport.close()

    assert server.proxy.faults == 1
    assert got.size == LARGE
    assert (tmp_path / "export.bin").read_bytes() == sent
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert thread_failures == []
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_refused_connection_is_retried_then_fails_in_plain_words(
    ws: Sandbox, remote: Any, protocol: str
) -> None:
    server = remote(protocol)
    server.server.__exit__()  # the server is down
    tenant_on(ws, server, remote_retries=1)

    [run] = ws.sync_all()

    assert run.status == "failed"
    assert run.reason == (
        f"{server.url}: could not list the folder: connection refused (gave up after 2 tries)"
    )


@contextlib.contextmanager
def silent_server(connections: int | None = None) -> Iterator[int]:
    """A port on 127.0.0.1 that takes TCP connections and never says a word; after
    ``connections`` of them it stops listening, and later ones are refused."""
    listener = socket.create_server(("127.0.0.1", 0))
    taken: list[socket.socket] = []

    def take() -> None:
        with contextlib.suppress(OSError):  # the listener closed
            while connections is None or len(taken) < connections:
                taken.append(listener.accept()[0])
        listener.close()

    thread = threading.Thread(target=take)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):  # already closed
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way
        thread.join(5)
        for conn in taken:
            conn.close()


def sftp_tenant_at(ws: Sandbox, port: int) -> str:
    url = f"sftp://acme@127.0.0.1:{port}/in"
    add_tenant(
        ws.app(),
        "acme",
        {
            "home": url,
            "remote_password_env": "ACME_PASSWORD",
            "remote_retries": 1,
            "remote_timeout": 1,
        },
    )
    return url


def test_an_sftp_home_that_never_answers_ssh_fails_saying_so(ws: Sandbox, remote: Any) -> None:
    with silent_server() as port:
        url = sftp_tenant_at(ws, port)
        [run] = ws.sync_all()

    assert (run.status, run.reason) == (
        "failed",
        f"{url}: could not list the folder: error reading SSH protocol banner "
        "(gave up after 2 tries)",
    )


def test_retries_that_fail_otherwise_keep_the_first_reason(
    ws: Sandbox, remote: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with silent_server(connections=1) as port:  # then the port is closed
        url = sftp_tenant_at(ws, port)
        [run] = ws.sync_all()

    assert run.reason == (
        f"{url}: could not list the folder: error reading SSH protocol banner "
        "(gave up after 2 tries)"
    )
    assert "list the folder: error reading SSH protocol banner; retrying" in caplog.text


# -- credentials -----------------------------------------------------------------------------


def test_a_tenant_logs_in_to_sftp_with_its_key_file(
    ws: Sandbox, remote: Any, tmp_path: Path
) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    server = remote("sftp", client_key=paramiko.PKey.from_path(key))
    tenant_on(ws, server, remote_key_file=str(key), remote_password_env=None)
    upload(server, rows=5)

    assert [r.status for r in ws.sync_all()] == ["applied"]


def test_a_wrong_password_is_refused_at_once(ws: Sandbox, remote: Any, monkeypatch) -> None:
    server = remote("sftp")
    monkeypatch.setenv("ACME_PASSWORD", "not-the-password")
    tenant_on(ws, server)

    started = time.monotonic()
    [run] = ws.sync_all()

    assert run.status == "failed"
    assert run.reason == f"{server.url}: login refused for user acme (wrong password?)"
    assert time.monotonic() - started < 5  # not retried


def test_a_missing_password_variable_is_named(ws: Sandbox, remote: Any, monkeypatch) -> None:
    server = remote("ftp")
    monkeypatch.delenv("ACME_PASSWORD")
    tenant_on(ws, server)

    [run] = ws.sync_all()

    assert run.reason == "the environment variable ACME_PASSWORD (remote_password_env) is not set"


@pytest.mark.parametrize(
    ("protocol", "settings"),
    [
        ("ftp", "remote_password_env or remote_password"),
        ("sftp", "remote_key_file, remote_password_env or remote_password"),
    ],
)
def test_a_home_without_credentials_is_a_failed_run_saying_what_to_set(
    ws: Sandbox, remote: Any, protocol: str, settings: str
) -> None:
    server = remote(protocol)
    tenant_on(ws, server, remote_password_env=None)

    [run] = ws.sync_all()

    assert (run.status, run.reason) == ("failed", f"{server.url}: no credentials: set {settings}")
    assert server.server.events == []  # no login was tried


def test_a_home_url_with_a_password_in_it_is_refused(ws: Sandbox, remote: Any) -> None:
    server = remote("ftp")
    with pytest.raises(ConfigError) as refused:
        tenant_on(ws, server, home=server.url.replace("acme@", f"acme:{PASSWORD}@"))

    assert "home must not hold a password; use remote_password_env" in str(refused.value)
    assert PASSWORD not in str(refused.value)
    assert "\n[tenants.acme]" not in ws.config_path.read_text()  # the config was not written


def test_the_password_never_shows_after_failures(
    ws: Sandbox, remote: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Wrong passwords, cut transfers and refused connections: logs, runs, reports, CLI."""
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-but-still-secret"
    ftp, sftp = remote("ftp", proxy=True), remote("sftp", proxy=True)
    ftp.proxy.fault("cut", after=30_000, direction="down")
    sftp.proxy.fault("cut", after=30_000, direction="down")
    for name, server in (("cutftp", ftp), ("cutsftp", sftp)):
        tenant_on(
            ws, server, name, remote_password=PASSWORD, remote_password_env=None, remote_retries=1
        )
        upload(server, rows=BIG)
    tenant_on(ws, sftp, "wrongsftp", remote_password=wrong, remote_password_env=None)
    tenant_on(ws, ftp, "wrongftp", remote_password=wrong, remote_password_env=None)
    down = remote("ftp")
    down.server.__exit__()
    tenant_on(
        ws, down, "down", remote_password=PASSWORD, remote_password_env=None, remote_retries=1
    )

    shown = [ws.cli("-v", "sync", "--all", "--json")]
    shown += [ws.cli("tenant", "list"), ws.cli("tenant", "list", "--json")]
    shown += [ws.cli("runs", name, "--json") for name in ("cutftp", "cutsftp", "wrongftp")]

    assert all(result.exit_code in (0, 1) for result in shown)
    assert "login refused" in shown[0].output and "gave up after" in shown[0].output
    for secret in (PASSWORD, wrong):
        assert secret not in caplog.text
        assert not any(secret in result.output + result.stderr for result in shown)
        for path in tmp_path.rglob("*"):
            if path.is_file() and path != ws.config_path:
                assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("protocol", ["sftp", "ftp"])
def test_a_list_on_a_customer_server_past_max_list_size_is_voided_without_downloading_it(
    ws: Sandbox, remote: Any, protocol: str
) -> None:
    server = remote(protocol)
    tenant_on(ws, server, max_list_size="1 MiB")
    with (server.folder / "subscriber_list.csv").open("wb") as f:
        f.write(csv_text(people(5)).encode())
        f.truncate(3 << 30)

    [run] = ws.sync_all()

    assert (run.status, run.sha256) == ("voided", None)
    assert run.reason == (
        "subscriber_list.csv is 3 GiB; a list may be at most 1 MiB (max_list_size), "
        "so it was not taken"
    )
    assert archived(ws) == []  # never fetched; it waits on the customer's server
    assert "subscriber_list.csv" in server.files()
