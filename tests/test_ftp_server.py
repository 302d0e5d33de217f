"""The built-in FTP and FTPS servers, against real clients (curl, ftplib) on 127.0.0.1."""

from __future__ import annotations

import ftplib
import io
import os
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import pytest
from conftest import csv_text, people
from test_crash import listferry_command

from listferry.config.passwords import hash_password
from listferry.serve.jail import is_upload_in_progress
from listferry.testing import Sandbox, wait_for
from listferry_plugins.ftp.transport import TlsFtp

PASSWORD = "s3cret-Passw0rd"
LIST = csv_text(people(5)).encode()
BIG = csv_text(people(4000)).encode()  # sent in two halves, each past the server's buffer
HALF = len(BIG) // 2


def add_tenant(ws: Sandbox, name: str = "acme", **settings: Any) -> Path:
    return ws.add_tenant(name, password_hash=hash_password(PASSWORD), **settings)


def ftp(port: int, user: str | None = "acme", password: str = PASSWORD) -> ftplib.FTP:
    client = ftplib.FTP(timeout=10)
    try:
        client.connect("127.0.0.1", port)
        if user:
            client.login(user, password)
    except BaseException:
        client.close()
        raise
    return client


def ftp_tls(port: int, cert: Path, user: str = "acme") -> ftplib.FTP_TLS:
    """A logged-in FTPS client whose data connections resume its TLS session (as curl's)."""
    client = TlsFtp(context=ssl.create_default_context(cafile=str(cert)), timeout=10)
    client.connect("127.0.0.1", port)
    client.login(user, PASSWORD)
    client.prot_p()
    return client


def upload_list(client: ftplib.FTP) -> None:
    client.storbinary("STOR subscriber_list.csv", io.BytesIO(LIST))
    client.storbinary("STOR subscriber_list_count.txt", io.BytesIO(b"5\n"))


def in_progress(home: Path) -> list[Path]:
    return [p for p in home.iterdir() if is_upload_in_progress(p.name)]


def receiving(home: Path) -> list[Path]:
    """The uploads in progress that have received data (their data connection is up)."""
    return [p for p in in_progress(home) if p.stat().st_size]


def refusal(action: Callable[[], Any]) -> str:
    """The server's error reply to ``action``, which must fail."""
    with pytest.raises((ftplib.error_perm, ftplib.error_temp)) as caught:
        action()
    return str(caught.value)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- interop ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["ftp", "ftps"])
def test_curl_uploads_a_list_and_its_count_file_and_the_sync_applies_it(
    ws: Sandbox, served, tmp_path: Path, protocol: str, events
) -> None:
    add_tenant(ws)
    client = tmp_path / "client"
    client.mkdir()
    (client / "subscriber_list.csv").write_bytes(LIST)
    (client / "subscriber_list_count.txt").write_text("5\n")
    with served([protocol]) as s:
        tls = ["--ssl-reqd", "--cacert", str(s.settings.tls_cert)] if protocol == "ftps" else []
        for name in ("subscriber_list.csv", "subscriber_list_count.txt"):
            done = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "--fail",
                    *tls,
                    "-u",
                    f"acme:{PASSWORD}",
                    "-T",
                    str(client / name),
                    f"ftp://127.0.0.1:{s.ports[protocol]}/",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert done.returncode == 0, done.stderr
    assert [run.status for run in ws.sync_all()] == ["applied"]
    assert len(ws.subscribers("active")) == 5
    assert any(
        f"protocol={protocol} tenant=acme" in e and "result=ok" in e for e in events("upload")
    )


@pytest.mark.parametrize(
    "protocol, tls",
    [("ftp", False), ("ftp", True), ("ftps", True)],
    ids=["ftp", "ftp+auth-tls", "ftps"],
)
def test_ftplib_uploads_and_downloads_over_ftp_and_ftp_tls(
    ws: Sandbox, served, protocol: str, tls: bool, events
) -> None:
    add_tenant(ws)
    with served([protocol]) as s:
        port = s.ports[protocol]
        client = ftp_tls(port, s.settings.tls_cert) if tls else ftp(port)
        upload_list(client)
        assert sorted(client.nlst()) == ["subscriber_list.csv", "subscriber_list_count.txt"]
        got = io.BytesIO()
        client.retrbinary("RETR subscriber_list.csv", got.write)
        assert got.getvalue() == LIST
        client.quit()
    assert [run.status for run in ws.sync_all()] == ["applied"]
    assert [e for e in events("download") if "file=subscriber_list.csv result=ok" in e]


def test_empty_listings_and_empty_files_come_through_tls(ws: Sandbox, served) -> None:
    home = add_tenant(ws)
    (home / "empty").mkdir()
    (home / "empty.csv").write_bytes(b"")
    with served(["ftps"]) as s:
        client = ftp_tls(s.ports["ftps"], s.settings.tls_cert)
        for _ in range(10):  # each one raced the TLS handshake, and often lost
            assert client.nlst("empty") == []
            assert list(client.mlsd("empty")) == []
            got = io.BytesIO()
            client.retrbinary("RETR empty.csv", got.write)
            assert got.getvalue() == b""
        client.quit()


# -- a tenant stays in its own home -------------------------------------------------------


@pytest.fixture
def two_homes(ws: Sandbox) -> tuple[Path, Path]:
    """``acme`` and ``acme2``: a neighbour whose home's path starts with acme's."""
    acme, acme2 = add_tenant(ws, "acme"), add_tenant(ws, "acme2")
    (acme / "mine.csv").write_bytes(LIST)
    (acme2 / "secret.csv").write_text("email\nceo@acme2.example\n")
    return acme, acme2


def attempt_everything(client: ftplib.FTP, there: str) -> list[str]:
    """Read, list, write, rename into and delete in ``there``; the replies refused."""
    attempts: list[Callable[[], Any]] = [
        lambda: client.retrbinary(f"RETR {there}/secret.csv", lambda data: None),
        lambda: client.size(f"{there}/secret.csv"),
        lambda: client.sendcmd(f"MDTM {there}/secret.csv"),
        lambda: client.sendcmd(f"MLST {there}/secret.csv"),
        lambda: client.storbinary(f"STOR {there}/planted.csv", io.BytesIO(b"x")),
        lambda: client.rename("mine.csv", f"{there}/stolen.csv"),
        lambda: client.delete(f"{there}/secret.csv"),
        lambda: client.mkd(f"{there}/made"),
        lambda: client.cwd(there),
    ]
    replies = [refusal(attempt) for attempt in attempts]
    for command in ("NLST", "LIST", "MLSD"):
        try:
            listed: list[str] = []
            client.retrlines(f"{command} {there}", listed.append)
        except ftplib.error_perm as exc:
            replies.append(str(exc))
        else:
            assert not any("secret" in line for line in listed), listed
    return replies


@pytest.mark.parametrize(
    "there",
    ["../acme2", "/../acme2", "../../acme2", "..\\acme2", "%2e%2e/acme2", "sub/../../acme2"],
)
def test_a_tenant_cannot_reach_a_neighbours_home_by_path(
    ws: Sandbox, served, two_homes: tuple[Path, Path], there: str
) -> None:
    acme, acme2 = two_homes
    before = tree(acme2)
    with served(["ftp"]) as s:
        client = ftp(s.ports["ftp"])
        got = io.BytesIO()
        client.retrbinary("RETR mine.csv", got.write)  # the same session can read its own
        assert got.getvalue() == LIST
        replies = attempt_everything(client, there)
        client.quit()
    assert [r for r in replies if r[:3] not in ("550", "501")] == [], replies
    assert tree(acme2) == before
    assert (acme / "mine.csv").read_bytes() == LIST


def test_prefix_confusion_acme_cannot_reach_acme2(
    ws: Sandbox, served, two_homes: tuple[Path, Path], events
) -> None:
    acme, acme2 = two_homes
    os.symlink("../acme2", acme / "x")  # resolves to .../acme2, which starts with .../acme
    before = tree(acme2)
    with served(["ftp"]) as s:
        client = ftp(s.ports["ftp"])
        replies = attempt_everything(client, "x")
        assert "x" not in client.nlst()
        client.quit()
    assert all(re.match(r"550 'x.*' is outside the home", r) for r in replies), replies
    assert tree(acme2) == before
    assert any("outside the home" in e for e in events("refused"))


#: Names no list, report or folder may have: the sync could not take them, logs would
#: show them raw. Line breaks, NUL, ESC (a terminal colour), BEL, DEL and a C1 control.
CONTROL_NAMES = [
    "list\n.csv",
    "list\r.csv",
    "nul\x00.csv",
    "red\x1b[31m.csv",
    "bell\x07.csv",
    "del\x7f.csv",
    "nel\x85.csv",
]


def test_names_with_control_characters_are_refused_with_553_and_logged_escaped(
    ws: Sandbox, served, events, caplog: pytest.LogCaptureFixture
) -> None:
    home = add_tenant(ws)
    (home / "mine.csv").write_bytes(LIST)
    with served(["ftp"]) as s:
        client = ftp(s.ports["ftp"])
        replies = []
        for name in CONTROL_NAMES:
            for command in (
                f"STOR {name}",
                f"MKD {name}",
                f"DELE {name}",
                f"SIZE {name}",
                f"CWD {name}",
                f"MLST {name}",
                "RNFR mine.csv",
                f"RNTO {name}",
                f"RETR sub/{name}/list.csv",
            ):
                client.sock.sendall(command.encode() + b"\r\n")  # ftplib refuses CR and LF
                reply = client.getmultiline()
                if not command.startswith("RNFR"):
                    replies.append(reply)
        client.quit()
    assert all(r.startswith("553 '") for r in replies), replies
    assert sorted(p.name for p in home.iterdir()) == ["mine.csv"]
    assert len(events("refused")) == len(replies)
    assert all(r.isprintable() for r in replies)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("listferry")]
    assert all(line.isprintable() for line in lines), [x for x in lines if not x.isprintable()]
    assert any("'red\\x1b[31m.csv'" in line for line in events("refused"))


def test_a_symlink_is_never_listed_nor_followed(
    ws: Sandbox, served, two_homes: tuple[Path, Path]
) -> None:
    acme, acme2 = two_homes
    os.symlink(acme2, acme / "theirs")
    os.symlink(acme2 / "secret.csv", acme / "secret.csv")
    os.symlink(acme / "mine.csv", acme / "alias.csv")  # even one that stays inside the home
    before = tree(acme2)
    with served(["ftp"]) as s:
        client = ftp(s.ports["ftp"])
        listing: list[str] = []
        client.retrlines("LIST", listing.append)
        assert client.nlst() == ["mine.csv"] and len(listing) == 1
        replies = attempt_everything(client, "theirs")
        for name in ("secret.csv", "alias.csv"):
            replies.append(refusal(lambda n=name: client.retrbinary(f"RETR {n}", print)))
            replies.append(refusal(lambda n=name: client.rename(n, "renamed.csv")))
            replies.append(refusal(lambda n=name: client.delete(n)))
            replies.append(refusal(lambda n=name: client.sendcmd(f"STAT {n}")))
        client.quit()
    assert [r for r in replies if r[:3] not in ("550", "501")] == [], replies
    assert tree(acme2) == before
    assert os.path.islink(acme / "secret.csv") and os.path.islink(acme / "alias.csv")


# -- logins ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where", ["tenant require_tls", "server require_tls", "ftps port"], ids=str
)
def test_a_plain_text_login_where_tls_is_required_is_refused_at_user(
    ws: Sandbox, served, where: str, events
) -> None:
    add_tenant(ws, require_tls=where == "tenant require_tls")
    protocol = "ftps" if where == "ftps port" else "ftp"
    with served([protocol], require_tls=where == "server require_tls") as s:
        with (
            socket.create_connection(("127.0.0.1", s.ports[protocol]), timeout=10) as raw,
            raw.makefile("rb") as replies,
        ):
            assert replies.readline().startswith(b"220")
            raw.sendall(b"USER acme\r\n")
            answer = replies.readline().decode()
            assert answer.startswith("534 TLS is required"), answer
            raw.sendall(b"PASS nothing-secret\r\n")  # a client that sends it anyway: ignored
            assert replies.readline().startswith(b"503")
        secure = ftp_tls(s.ports[protocol], s.settings.tls_cert)  # with AUTH TLS it works
        assert refusal(secure.prot_c).startswith("536 Data connections must be protected")
        secure.prot_p()
        assert secure.nlst() == []
        secure.quit()
    assert [e for e in events("refused") if "reason='TLS required before login'" in e]
    assert len(events("login")) == 1  # only the TLS login reached the password check


def test_wrong_passwords_block_the_address_until_block_seconds_have_passed(
    ws: Sandbox, served, events
) -> None:
    add_tenant(ws)
    with served(["ftp"], block_after_failures=3, delay_after_failures=10, block_seconds=2) as s:
        port = s.ports["ftp"]
        early = ftp(port, user=None)  # connected before the block, logs in during it
        guesser = ftp(port, user=None)
        for _ in range(2):
            assert refusal(lambda: guesser.login("acme", "guess")).startswith("530")
        before_block = time.monotonic()  # the third failure blocks the address
        assert refusal(lambda: guesser.login("acme", "guess")).startswith("530")
        guesser.close()
        assert "blocked" in refusal(lambda: ftp(port, user=None))
        assert refusal(lambda: early.login("acme", PASSWORD)).startswith("530")
        early.close()

        def logs_in() -> bool:
            try:
                ftp(port).quit()
            except ftplib.error_temp:  # 421 at connect while blocked
                return False
            return True

        wait_for(logs_in, "the block to lift", timeout=30)  # each try is a password check
        assert time.monotonic() - before_block >= 2  # the block began after before_block
    assert any("result=refused" in e and "address blocked" in e for e in events("login"))


def test_a_slow_failed_login_does_not_stall_other_clients(ws: Sandbox, served, events) -> None:
    add_tenant(ws)
    with served(["ftp"], delay_after_failures=1, block_after_failures=10) as s:
        guesser = ftp(s.ports["ftp"], user=None)

        def guess() -> None:
            for _ in range(3):  # answered after 0.5 s, 1 s, then 2 s
                refusal(lambda: guesser.login("acme", "guess"))

        slow = threading.Thread(target=guess)
        slow.start()
        wait_for(lambda: len(events("login")) == 3, "the third wrong guess", timeout=30)
        other = ftp(s.ports["ftp"])  # while the guesser's answer is held back 2 s
        assert other.nlst() == []
        other.quit()
        assert slow.is_alive()
        slow.join(10)
        guesser.close()


def test_too_many_connections_from_one_address_are_refused(ws: Sandbox, served) -> None:
    add_tenant(ws)
    with served(["ftp"], max_connections_per_ip=2) as s:
        port = s.ports["ftp"]
        first, second = ftp(port), ftp(port, user=None)
        assert "too many connections from this address" in refusal(lambda: ftp(port))
        first.quit()

        def admitted() -> ftplib.FTP | None:
            try:
                return ftp(port, user=None)
            except ftplib.error_temp:
                return None

        wait_for(admitted, "the closed connection's slot").quit()
        second.quit()


def test_idle_and_never_logged_in_connections_are_closed(ws: Sandbox, served) -> None:
    add_tenant(ws)
    with served(["ftp"], handshake_timeout=0.3, idle_timeout=0.8) as s:
        started = time.monotonic()
        silent = ftp(s.ports["ftp"], user=None)
        assert refusal(silent.getresp).startswith("421")
        assert time.monotonic() - started < 0.75  # the login deadline, not the idle one
        silent.close()
        idle = ftp(s.ports["ftp"])
        logged_in = time.monotonic()
        assert refusal(idle.getresp).startswith("421 Control connection timed out")
        assert time.monotonic() - logged_in >= 0.7
        idle.close()


# -- data connections -----------------------------------------------------------------------


def test_port_and_eprt_to_a_third_host_are_refused(ws: Sandbox, served, events) -> None:
    add_tenant(ws)
    with (
        socket.create_server(("127.0.0.2", 0)) as third,
        socket.create_server(("127.0.0.1", 0)) as own,
        served(["ftp"]) as s,
    ):
        client = ftp(s.ports["ftp"])
        third_port = third.getsockname()[1]
        assert refusal(lambda: client.sendport("127.0.0.2", third_port)).startswith("501")
        assert refusal(lambda: client.sendeprt("127.0.0.2", third_port)).startswith("501")
        client.sendport("127.0.0.1", own.getsockname()[1])  # the client's own address: fine
        client.sendcmd("NLST")
        own.settimeout(10)
        conn, _ = own.accept()
        conn.close()
        client.voidresp()
        assert select.select([third], [], [], 0)[0] == []  # nobody ever knocked
        client.quit()
    assert [e for e in events("refused") if "foreign address 127.0.0.2" in e]


def test_passive_ports_come_from_the_configured_range(ws: Sandbox, served) -> None:
    add_tenant(ws)
    with socket.create_server(("127.0.0.1", 0)) as probe:
        low = probe.getsockname()[1]
    low = min(low, 65535 - 20)
    with served(["ftp"], passive_ports=(low, low + 19)) as s:
        client = ftp(s.ports["ftp"])
        _host, port = client.makepasv()
        assert low <= port <= low + 19
        client.quit()


# -- uploads ----------------------------------------------------------------------------------


def test_an_upload_in_progress_is_hidden_and_lands_whole(ws: Sandbox, served) -> None:
    home = add_tenant(ws)
    with served(["ftp"]) as s:
        uploader, other = ftp(s.ports["ftp"]), ftp(s.ports["ftp"])
        uploader.voidcmd("TYPE I")
        data = uploader.transfercmd("STOR subscriber_list.csv")
        data.sendall(BIG[:HALF])
        [temp] = wait_for(lambda: receiving(home), "the upload's first bytes")
        assert other.nlst() == []
        listing: list[str] = []
        other.retrlines("MLSD", listing.append)
        assert listing == []
        for attempt in (
            lambda: other.retrbinary(f"RETR {temp.name}", print),
            lambda: other.rename(temp.name, "taken.csv"),
            lambda: other.delete(temp.name),
            lambda: other.storbinary(f"STOR {temp.name}", io.BytesIO(b"x")),
        ):
            assert refusal(attempt).startswith("550")
        assert [run.status for run in ws.sync_all()] == ["idle"]
        data.sendall(BIG[HALF:])
        data.close()
        assert uploader.voidresp().startswith("226")
        assert (home / "subscriber_list.csv").read_bytes() == BIG  # there when 226 came
        assert in_progress(home) == []
        uploader.quit()
        other.quit()


@pytest.mark.parametrize("protocol", ["ftp", "ftps"])
def test_an_upload_cut_off_by_a_reset_leaves_no_list_file(
    ws: Sandbox, served, protocol: str, events
) -> None:
    home = add_tenant(ws)
    with served([protocol]) as s:
        port = s.ports[protocol]
        client = ftp_tls(port, s.settings.tls_cert) if protocol == "ftps" else ftp(port)
        client.voidcmd("TYPE I")
        data = client.transfercmd("STOR subscriber_list.csv")
        data.sendall(BIG[:HALF])
        wait_for(lambda: receiving(home), "the upload's first bytes")
        data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        data.close()  # a reset, not an end of file
        assert refusal(client.voidresp).startswith("426")
        client.quit()
    assert sorted(p.name for p in home.iterdir()) == []
    assert [run.status for run in ws.sync_all()] == ["idle"]
    assert [e for e in events("upload") if "result=incomplete" in e]


def test_a_client_gone_before_the_data_connection_opened_leaves_nothing(
    ws: Sandbox, served
) -> None:
    home = add_tenant(ws)
    with served(["ftp"]) as s:
        client = ftp(s.ports["ftp"])
        client.sendcmd("PASV")
        assert client.sendcmd("STOR subscriber_list.csv").startswith("150")
        assert in_progress(home)
        client.close()
        wait_for(lambda: not in_progress(home), "the temporary file to go")
    assert list(home.iterdir()) == []


def test_a_killed_curl_upload_leaves_no_list_file(ws: Sandbox, served, tmp_path: Path) -> None:
    home = add_tenant(ws)
    big = tmp_path / "big.csv"
    big.write_bytes(LIST + b"x@example.org,X,Y,GOLD\r\n" * 400_000)  # 4 s at 2 MB/s
    with served(["ftp"]) as s:
        curl = subprocess.Popen(
            [
                "curl",
                "-sS",
                "--limit-rate",
                "2M",
                "-u",
                f"acme:{PASSWORD}",
                "-T",
                str(big),
                f"ftp://127.0.0.1:{s.ports['ftp']}/subscriber_list.csv",
            ],
        )
        try:
            wait_for(lambda: receiving(home), "the upload's first bytes")
        finally:
            curl.send_signal(signal.SIGKILL)
            curl.wait()
        wait_for(lambda: not in_progress(home), "the temporary file to go")
    assert not (home / "subscriber_list.csv").exists()
    assert [run.status for run in ws.sync_all()] == ["idle"]


def test_append_resume_stou_and_site_chmod_are_refused(ws: Sandbox, served, events) -> None:
    home = add_tenant(ws)
    (home / "mine.csv").write_bytes(LIST)
    mode = (home / "mine.csv").stat().st_mode
    with served(["ftp"]) as s:
        client = ftp(s.ports["ftp"])
        replies = [
            refusal(lambda: client.storbinary("APPE mine.csv", io.BytesIO(b"x"))),
            refusal(lambda: client.storbinary("STOR mine.csv", io.BytesIO(b"x"), rest=10)),
            refusal(lambda: client.sendcmd("STOU")),
            refusal(lambda: client.sendcmd("SITE CHMOD 777 mine.csv")),
            refusal(lambda: client.sendcmd("REIN")),
        ]
        client.quit()
    assert [r[:3] for r in replies] == ["502", "554", "502", "502", "502"], replies
    assert "appending" in replies[0].lower() and "REST" in replies[1]
    assert (home / "mine.csv").read_bytes() == LIST and (home / "mine.csv").stat().st_mode == mode
    assert sorted(p.name for p in home.iterdir()) == ["mine.csv"]
    assert len(events("refused")) == 5


def test_an_on_upload_tenant_is_synced_once_its_list_and_count_file_are_in(
    ws: Sandbox, served, events
) -> None:
    add_tenant(ws, process="on-upload", count_file="required")
    with served(["ftp"]) as s:
        client = ftp(s.ports["ftp"])
        upload_list(client)
        client.quit()
        wait_for(lambda: [e for e in events("run") if " status=applied" in e], "the sync")
    with ws.store() as store:
        [run] = store.runs("acme")  # one run: the list alone waited for its count file
    assert (run.status, run.file, run.added) == ("applied", "subscriber_list.csv", 5)


# -- stopping ---------------------------------------------------------------------------------


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_stop_waits_for_an_open_upload_and_refuses_new_connections(ws: Sandbox, served) -> None:
    home = add_tenant(ws)
    with served(["ftp"]) as s:
        client = ftp(s.ports["ftp"])
        client.voidcmd("TYPE I")
        data = client.transfercmd("STOR subscriber_list.csv")
        data.sendall(BIG[:HALF])
        wait_for(lambda: receiving(home), "the upload's first bytes")
        stopper = threading.Thread(target=s.servers[0].stop, args=(10,))
        stopper.start()
        wait_for(lambda: refuses_connections(s.ports["ftp"]), "the listener to close")
        data.sendall(BIG[HALF:])
        data.close()
        assert client.voidresp().startswith("226")
        stopper.join(10)
        assert not stopper.is_alive()
        client.close()
    assert (home / "subscriber_list.csv").read_bytes() == BIG


def test_stop_cuts_an_upload_that_outlasts_the_timeout(ws: Sandbox, served) -> None:
    home = add_tenant(ws)
    with served(["ftp"]) as s:
        client = ftp(s.ports["ftp"])
        client.voidcmd("TYPE I")
        data = client.transfercmd("STOR subscriber_list.csv")
        data.sendall(BIG[:HALF])
        wait_for(lambda: receiving(home), "the upload's first bytes")
        started = time.monotonic()
        s.servers[0].stop(0.3)
        assert time.monotonic() - started < 3
        data.close()
        client.close()
    assert sorted(p.name for p in home.iterdir()) == []


# -- the real command line --------------------------------------------------------------------


def test_listferry_serve_listens_serves_and_stops_on_sigterm(ws: Sandbox, tmp_path: Path) -> None:
    base = [*listferry_command(), "--config", str(ws.config_path)]
    subprocess.run([*base, "init"], check=True, capture_output=True, timeout=60)
    home = add_tenant(ws)
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [*base, "serve", "--protocols", "ftp,ftps", "--ftp-port", "0", "--ftps-port", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    lines: Queue[str] = Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout])
    reader.start()
    try:
        ports: dict[str, int] = {}
        while len(ports) < 2:
            try:
                line = lines.get(timeout=30)
            except Empty:
                raise AssertionError(f"no listening lines: {log.read_text()}") from None
            if found := re.fullmatch(r"listening (ftps?) 127\.0\.0\.1:(\d+)\n", line):
                ports[found[1]] = int(found[2])
        client = ftp(ports["ftp"])
        upload_list(client)
        client.quit()
        cert = ws.app().config.server.tls_cert
        secure = ftp_tls(ports["ftps"], cert)
        assert sorted(secure.nlst()) == ["subscriber_list.csv", "subscriber_list_count.txt"]
        secure.quit()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        reader.join(5)
        proc.stdout.close()
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    stderr = log.read_text()
    assert code == 0, stderr
    assert "stopped\n" in rest
    assert "Traceback" not in stderr and "event=upload" in stderr
    assert (home / "subscriber_list.csv").read_bytes() == LIST


def test_a_running_server_takes_new_tenants_and_new_passwords_without_a_restart(
    ws: Sandbox, served
) -> None:
    add_tenant(ws)
    with served(["ftp"], block_seconds=1) as s:
        port = s.ports["ftp"]
        ftp(port).quit()
        added = ws.cli("tenant", "add", "beta", "--password-stdin", input="beta-Passw0rd\n")
        assert added.exit_code == 0, added.output
        ftp(port, "beta", "beta-Passw0rd").quit()  # a tenant added after the start

        changed = ws.cli("tenant", "password", "acme", "--password-stdin", input="n3w-Passw0rd-2\n")
        assert changed.exit_code == 0, changed.output
        with pytest.raises(ftplib.error_perm):
            ftp(port)  # the old password no longer logs in
        ftp(port, "acme", "n3w-Passw0rd-2").quit()

        ws.config_path.write_text(ws.config_path.read_text() + "\n[tenants.broken\n")
        ftp(port, "acme", "n3w-Passw0rd-2").quit()  # a broken config keeps the last good one
