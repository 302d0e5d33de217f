"""Issue #14, findings 1, 6 and 12: one tenant cannot use up what the servers share.

Each test makes the attack with a real client (paramiko, ftplib, a raw socket) against
servers on 127.0.0.1, with limits set small in the test's own config, and checks the
refusal: handles per SFTP session, a file's size, a home's bytes, files and folder depth,
sessions per tenant, the mode of uploaded files, the SSH banner.
"""

from __future__ import annotations

import contextlib
import ftplib
import io
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest
from test_sftp_server import LOCAL, PASSWORD, PASSWORD_HASH, add_tenants, session

from listferry.serve.jail import is_upload_in_progress
from listferry.testing import Sandbox, wait_for

KB = 1000


def ftp(port: int, user: str = "acme") -> ftplib.FTP:
    client = ftplib.FTP(timeout=10)
    client.connect("127.0.0.1", port)
    client.login(user, PASSWORD)
    return client


@pytest.fixture
def tenants(ws: Sandbox) -> Callable[..., Path]:
    """``tenants(max_files=3)``: tenants ``acme`` and ``other`` with those limits; acme's home."""

    def make(**limits: object) -> Path:
        add_tenants(ws, "acme", "other", allow_ips=LOCAL, password_hash=PASSWORD_HASH, **limits)
        return ws.root / "homes" / "acme"

    return make


def put(sftp: paramiko.SFTPClient, name: str, data: bytes) -> None:
    """Upload ``data`` waiting for each write's answer, so a refusal raises where it happens
    (``putfo`` pipelines its writes, and a refused upload shows only as a missing file)."""
    with sftp.open(name, "w") as upload:
        upload.write(data)


def leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir())


def test_a_session_opening_handles_in_a_loop_is_refused_at_the_limit_while_others_upload(
    served, tenants
) -> None:
    """Finding 1: one SFTP session opened handles until the process ran out of them."""
    home = tenants()
    (home / "own.txt").write_bytes(b"email\r\n")
    with served(["sftp"], max_handles_per_session=16) as server:
        port = server.ports["sftp"]
        with session(port, password=PASSWORD) as flood:
            opened = []
            with pytest.raises(OSError, match="at most 16 files and folders may be open"):
                for _ in range(40):
                    opened.append(flood.open("own.txt"))
            assert len(opened) == 16
            with pytest.raises(OSError, match="at most 16"):
                flood.listdir("/")
            second_channel = paramiko.SFTPClient.from_transport(flood.get_channel().get_transport())
            with second_channel, pytest.raises(OSError, match="at most 16"):
                second_channel.open("own.txt")  # the connection's other channels count too
            with session(port, user="other", password=PASSWORD) as other:
                put(other, "subscriber_list.csv", b"email\r\n")
            opened.pop().close()
            flood.open("own.txt").close()  # a closed handle makes room again
    assert (home.parent / "other" / "subscriber_list.csv").read_bytes() == b"email\r\n"


def test_growing_an_upload_to_1_gib_sparse_is_refused_and_never_copied(
    served, tenants, events
) -> None:
    """Finding 6: FSETSTAT grew a file to 1 GiB sparse; reopening copied it for real."""
    home = tenants(max_file_size="64 KB", quota="100 KB")
    with served(["sftp"]) as server, session(server.ports["sftp"], password=PASSWORD) as sftp:
        with sftp.open("big.csv", "w") as upload:
            upload.write(b"email\r\n")
            with pytest.raises(OSError, match="a file may hold at most 64 KB"):
                upload.truncate(2**30)
        assert sftp.stat("big.csv").st_size == 7
        with sftp.open("big.csv", "r+") as patch:  # no O_TRUNC: starts from the file
            patch.seek(2**30)
            with pytest.raises(OSError, match="Upload refused: a file may hold at most 64 KB"):
                patch.write(b"x")
        assert sftp.stat("big.csv").st_size == 7
        appending = sftp.open("appended.csv", "a")  # O_APPEND: the offsets are not where it lands
        with appending, pytest.raises(OSError, match="a file may hold at most 64 KB"):
            for _ in range(3):
                appending.seek(0)
                appending.write(b"x" * 30 * KB)
    assert leftovers(home) == ["big.csv"]
    assert any("result=refused" in line for line in events("upload"))


def test_an_sftp_upload_past_max_file_size_or_the_quota_is_refused_and_leaves_nothing(
    served, tenants, events
) -> None:
    """Finding 6: there was no maximum file size and no quota."""
    home = tenants(max_file_size="64 KB", quota="100 KB")
    with served(["sftp"]) as server, session(server.ports["sftp"], password=PASSWORD) as sftp:
        with pytest.raises(OSError, match="a file may hold at most 64 KB"):
            put(sftp, "too_big.csv", b"x" * 80 * KB)
        put(sftp, "first.csv", b"x" * 60 * KB)
        with pytest.raises(OSError, match="the home's quota of 100 KB is used up"):
            put(sftp, "second.csv", b"x" * 60 * KB)
        sftp.remove("first.csv")
        put(sftp, "second.csv", b"x" * 60 * KB)  # room again
    assert leftovers(home) == ["second.csv"]
    refused = [line for line in events("upload") if "result=refused" in line]
    assert len(refused) == 2 and "file=too_big.csv" in refused[0]


def test_what_a_home_already_holds_counts_against_the_quota(served, tenants) -> None:
    """Finding 6: a home's files count at their apparent size, sparse ones in full."""
    home = tenants(quota="100 KB")
    with open(home / "old.csv", "wb") as sparse:  # 90 KB apparent, next to nothing on disk
        sparse.truncate(90 * KB)
    (home / "list.csv").write_bytes(b"email\r\n")
    with served(["sftp", "ftp"]) as server:
        with session(server.ports["sftp"], password=PASSWORD) as sftp:
            with pytest.raises(OSError, match="the home's quota of 100 KB is used up"):
                put(sftp, "list.csv", b"x" * 20 * KB)  # replacing a file counts too
            put(sftp, "list.csv", b"x" * 5 * KB)
        client = ftp(server.ports["ftp"])
        with pytest.raises(ftplib.error_perm, match=r"552 .*quota of 100 KB is used up"):
            client.storbinary("STOR list.csv", io.BytesIO(b"x" * 20 * KB))
        client.quit()
    assert (home / "list.csv").stat().st_size == 5 * KB


def test_an_ftp_upload_past_max_file_size_or_the_quota_is_refused_with_552_and_leaves_nothing(
    served, tenants, events
) -> None:
    """Finding 6: there was no maximum file size and no quota, over FTP either."""
    home = tenants(max_file_size="64 KB", quota="100 KB")
    with served(["ftp"]) as server:
        client = ftp(server.ports["ftp"])
        with pytest.raises(ftplib.error_perm, match="552 Upload refused: a file may hold at most"):
            client.storbinary("STOR too_big.csv", io.BytesIO(b"x" * 80 * KB))
        client.storbinary("STOR first.csv", io.BytesIO(b"x" * 60 * KB))
        with pytest.raises(ftplib.error_perm, match=r"552 .*quota of 100 KB is used up"):
            client.storbinary("STOR second.csv", io.BytesIO(b"x" * 60 * KB))
        client.quit()
    assert leftovers(home) == ["first.csv"]
    assert not [p for p in home.iterdir() if is_upload_in_progress(p.name)]
    refused = [line for line in events("upload") if "result=refused" in line]
    assert len(refused) == 2 and "file=too_big.csv" in refused[0]


def test_new_files_past_max_files_are_refused_over_sftp_and_ftp(served, tenants) -> None:
    """Finding 6: there was no limit on the number of files in a home."""
    home = tenants(max_files=3)
    with served(["sftp", "ftp"]) as server:
        with session(server.ports["sftp"], password=PASSWORD) as sftp:
            for name in ("a.csv", "b.csv"):
                put(sftp, name, b"email\r\n")
            sftp.mkdir("folder")
            with pytest.raises(OSError, match="limit of 3 files and folders"):
                put(sftp, "c.csv", b"email\r\n")
            with pytest.raises(OSError, match="limit of 3 files and folders"):
                sftp.mkdir("another")
            put(sftp, "a.csv", b"email\r\nnew\r\n")  # replacing one is fine
        client = ftp(server.ports["ftp"])
        with pytest.raises(ftplib.error_perm, match=r"552 .*limit of 3 files and folders"):
            client.storbinary("STOR c.csv", io.BytesIO(b"email\r\n"))
        client.quit()
    assert leftovers(home) == ["a.csv", "b.csv", "folder"]


def test_folders_past_max_depth_are_refused_over_sftp_and_ftp(served, tenants) -> None:
    """Finding 6 (and 2): folders nested without end; 1,100 of them stopped serve."""
    home = tenants(max_depth=3)
    with served(["sftp", "ftp"]) as server:
        with session(server.ports["sftp"], password=PASSWORD) as sftp:
            for path in ("a", "a/b", "a/b/c", "x"):
                sftp.mkdir(path)
            with pytest.raises(OSError, match="folders may nest at most 3 deep"):
                sftp.mkdir("a/b/c/d")
            with pytest.raises(OSError, match="folders may nest at most 3 deep"):
                sftp.rename("a", "x/a")  # moved whole, it would be 4 deep
        client = ftp(server.ports["ftp"])
        client.mkd("f")
        client.mkd("f/g")
        client.mkd("f/g/h")
        with pytest.raises(ftplib.error_perm, match=r"552 .*folders may nest at most 3 deep"):
            client.mkd("f/g/h/i")
        client.mkd("y")
        with pytest.raises(ftplib.error_perm, match=r"552 .*folders may nest at most 3 deep"):
            client.rename("f", "y/f")
        client.quit()
    assert not (home / "a/b/c/d").exists() and not (home / "f/g/h/i").exists()
    assert (home / "a/b/c").is_dir() and not (home / "x/a").exists()
    assert (home / "f/g/h").is_dir() and not (home / "y/f").exists()


def test_logins_past_max_sessions_are_refused_on_every_protocol_until_one_ends(
    served, tenants, events
) -> None:
    """Finding 1: a tenant could hold any number of sessions open."""
    tenants(max_sessions=2)
    with served(["sftp", "ftp"]) as server:
        port = server.ports["sftp"]
        first = ftp(server.ports["ftp"])
        with session(port, password=PASSWORD):
            with pytest.raises(paramiko.AuthenticationException), session(port, password=PASSWORD):
                pass
            with pytest.raises(ftplib.error_temp, match=r"421 .*limit of 2 sessions"):
                ftp(server.ports["ftp"])
            with session(port, user="other", password=PASSWORD) as other:  # others unaffected
                other.listdir("/")
        first.quit()
        acme = server.runtime.app.config.tenant("acme")
        wait_for(lambda: server.runtime.limits.sessions(acme) == 0, "acme's sessions to end")
        with session(port, password=PASSWORD) as again:
            again.listdir("/")
    assert sum("limit of 2 sessions" in line for line in events("refused")) == 2
    # Refused before the password check: a full tenant's logins, right password or not,
    # cost no scrypt, so they cannot keep the password-check threads from other tenants.
    good = [line for line in events("login") if "tenant=acme" in line and "result=ok" in line]
    assert len(good) == 3


def test_uploads_and_folders_get_the_same_mode_over_sftp_and_ftp(served, tenants) -> None:
    """Finding 12: uploads were 0644 over SFTP but 0600 over FTP."""
    home = tenants()
    with served(["sftp", "ftp"]) as server:
        with session(server.ports["sftp"], password=PASSWORD) as sftp:
            put(sftp, "by_sftp.csv", b"email\r\n")
            sftp.mkdir("sftp_folder")
        client = ftp(server.ports["ftp"])
        client.storbinary("STOR by_ftp.csv", io.BytesIO(b"email\r\n"))
        client.mkd("ftp_folder")
        client.quit()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in home.iterdir()}
    assert modes == {
        "by_sftp.csv": 0o640,
        "by_ftp.csv": 0o640,
        "sftp_folder": 0o750,
        "ftp_folder": 0o750,
    }


def test_the_ssh_banner_names_no_library_and_no_version(served, tenants) -> None:
    """Finding 12: the SSH banner showed the paramiko version."""
    tenants()
    with served(["sftp"]) as server:
        with socket.create_connection(("127.0.0.1", server.ports["sftp"]), timeout=10) as sock:
            banner = sock.makefile("rb").readline()
        with session(server.ports["sftp"], password=PASSWORD) as sftp:
            seen = sftp.get_channel().get_transport().remote_version
    assert banner == b"SSH-2.0-listferry\r\n"
    assert seen == "SSH-2.0-listferry"
    assert "paramiko" not in os.fsdecode(banner).lower()


def home_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in home.rglob("*") if p.is_file())


def test_refused_uploads_are_counted_off_once_so_the_quota_holds(served, tenants) -> None:
    """Finding 6, found again by a red team: an upload refused for its size had its part
    removed at once but counted off only at close; a count of the home in between (any
    new upload makes one) dropped those bytes, and the close counted them off again, so
    handles opened before wrote 37% past the quota."""
    home = tenants(quota=f"{100 * KB}", max_file_size=f"{30 * KB}")
    with served(["sftp"]) as server, session(server.ports["sftp"], password=PASSWORD) as sftp:
        for i in range(2):
            put(sftp, f"base{i}.csv", b"a" * 25 * KB)
        waiting = [sftp.open(f"later{i}.csv", "w") for i in range(3)]
        cut = [sftp.open(f"cut{i}.csv", "w") for i in range(2)]
        for upload in cut:
            upload.set_pipelined(False)
            upload.write(b"x" * 25 * KB)
            upload.flush()
            upload.seek(40 * KB)  # past max_file_size: refused, its part removed
            with pytest.raises(OSError):
                upload.write(b"y")
                upload.flush()
        put(sftp, "count_the_home_again.csv", b"")
        sftp.remove("count_the_home_again.csv")
        for upload in cut:
            with contextlib.suppress(OSError):  # paramiko may raise the refusal again
                upload.close()
        refused = 0
        for upload in waiting:
            upload.set_pipelined(False)
            try:
                upload.write(b"z" * 29 * KB)
                upload.close()
            except OSError:
                refused += 1
    assert refused >= 1
    assert home_bytes(home) <= 100 * KB


def test_uploads_starting_at_once_cannot_pass_max_files_together(served, tenants) -> None:
    """Finding 6, found again by a red team: the count of a home's files and the making of
    a new one were two steps, so uploads started at once from several connections all
    passed a count of 18 and left 23 files where 20 were allowed."""
    home = tenants(max_files=20)
    for i in range(18):
        (home / f"old{i}.csv").write_bytes(b"email\r\n")
    start = threading.Barrier(6)
    refused: list[str] = []

    def uploads(sftp: paramiko.SFTPClient, thread: int) -> None:
        start.wait(timeout=30)
        for i in range(3):
            try:
                put(sftp, f"new{thread}_{i}.csv", b"email\r\n")
            except OSError as exc:
                refused.append(str(exc))

    with served(["sftp"]) as server, contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(session(server.ports["sftp"], password=PASSWORD)) for _ in range(6)
        ]
        threads = [threading.Thread(target=uploads, args=(c, t)) for t, c in enumerate(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert len(refused) == 6 * 3 - 2
    assert len(list(home.rglob("*"))) == 20


def test_a_refused_path_of_any_length_makes_a_short_log_line(served, tenants, events) -> None:
    """Finding 11's other side, found by a red team: each refused SFTP operation logged
    the client's whole path, so 700 pipelined STATs of a 200 KB name wrote 140 MB of log
    in 3 s. Every field of a log line now shows at most 300 characters."""
    tenants()
    name = "/\x1b" + "D" * 200_000
    with served(["sftp"]) as server, session(server.ports["sftp"], password=PASSWORD) as sftp:
        for _ in range(3):
            with pytest.raises(OSError):
                sftp.stat(name)
    lines = [e for e in events("refused") if "DDDD" in e]
    assert len(lines) == 3
    assert all(len(line) < 1000 and "more characters" in line for line in lines)


def test_refused_requests_in_a_session_write_a_bounded_number_of_log_lines(
    served, tenants, events
) -> None:
    """Finding 11's other side, found by a red team: every refused request of a logged-in
    tenant was one log line, so a tenant sending them as fast as it could wrote log as
    fast. Now 200 a minute for one tenant from one address, and the rest are counted."""
    tenants()
    with served(["sftp"]) as server, session(server.ports["sftp"], password=PASSWORD) as sftp:
        for i in range(250):
            with pytest.raises(OSError):
                sftp.stat(f"bad\x1b{i}.csv")  # a control character: refused
    lines = [e for e in events("refused") if "tenant=acme" in e]
    assert len(lines) == 200
