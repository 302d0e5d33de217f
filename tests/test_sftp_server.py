"""The built-in SFTP server, with real clients on 127.0.0.1: OpenSSH's sftp and paramiko.

Every attack is made for real against a running server, and each test checks both
that the attempt was refused and that the other tenant's home is exactly as it was.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest
from conftest import csv_text, people
from test_ftp_server import CONTROL_NAMES

from listferry.app import App
from listferry.config.passwords import hash_password
from listferry.ops.tenants import add_tenant
from listferry.serve.keys import make_ssh_host_key
from listferry.testing import Sandbox, wait_for

PASSWORD = "correct horse battery staple"
PASSWORD_HASH = hash_password(PASSWORD)
LOCAL = ["127.0.0.1"]
WHO = "protocol=sftp tenant=acme ip=127.0.0.1"
SECRET = b"email\r\nsecret@acme2.example\r\n"
OPENSSH_SFTP = shutil.which("sftp")
needs_openssh = pytest.mark.skipif(OPENSSH_SFTP is None, reason="no OpenSSH sftp client here")


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "id_ed25519"
    make_ssh_host_key(path)
    return path


def public_line(key: Path) -> str:
    return key.with_name(key.name + ".pub").read_text().strip()


@pytest.fixture
def homes(ws: Sandbox, client_key: Path) -> tuple[Path, Path]:
    """Tenants ``acme`` and ``acme2`` (a name that starts with the other's), both local."""
    add_tenants(
        ws,
        "acme",
        "acme2",
        allow_ips=LOCAL,
        ssh_keys=[public_line(client_key)],
        password_hash=PASSWORD_HASH,
    )
    acme, acme2 = ws.root / "homes" / "acme", ws.root / "homes" / "acme2"
    (acme / "own.txt").write_bytes(b"email\r\nown@acme.example\r\n")
    (acme2 / "list.csv").write_bytes(SECRET)
    (acme2 / "sub").mkdir()
    return acme, acme2


def add_tenants(ws: Sandbox, *names: str, **settings: object) -> None:
    """Like ``ws.add_tenant`` for each name, loading the plugins once."""
    app = ws.app()
    for name in names:
        app = App(add_tenant(app, name, settings), app.host)
        Path(app.config.tenant(name).home).mkdir(parents=True)


def upload_size(home: Path) -> int:
    """The size of the uploads in progress in ``home``, 0 when there is none."""
    return sum(p.stat().st_size for p in home.iterdir() if p.name.endswith(".part"))


def snapshot(home: Path) -> dict[str, bytes | str]:
    return {
        str(p.relative_to(home)): p.read_bytes() if p.is_file() else "folder"
        for p in sorted(home.rglob("*"))
    }


@contextmanager
def session(
    port: int, user: str = "acme", key: Path | None = None, password: str | None = None
) -> Iterator[paramiko.SFTPClient]:
    transport = paramiko.Transport(("127.0.0.1", port))
    try:
        pkey = paramiko.PKey.from_path(key) if key else None
        transport.connect(username=user, pkey=pkey, password=password)
        with paramiko.SFTPClient.from_transport(transport) as sftp:
            yield sftp
    finally:
        transport.close()


@pytest.fixture
def acme_sftp(ws: Sandbox, served, homes, client_key: Path) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session logged in as ``acme``, with a check that it really works."""
    with served(["sftp"]) as server, session(server.ports["sftp"], key=client_key) as sftp:
        assert sftp.open("own.txt").read().startswith(b"email")
        yield sftp


# -- real clients upload, the sync applies ---------------------------------------------------


def upload_batch(tmp_path: Path, rows: int) -> tuple[Path, Path]:
    listing = tmp_path / "subscriber_list.csv"
    listing.write_text(csv_text(people(rows)))
    count = tmp_path / "subscriber_list_count.txt"
    count.write_text(f"{rows}\n")
    return listing, count


@needs_openssh
def test_openssh_sftp_uploads_a_list_and_its_count_then_the_sync_applies_it(
    ws: Sandbox, served, tmp_path: Path
) -> None:
    key = tmp_path / "crm_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    added = ws.cli("tenant", "add", "acme", "--ssh-key", f"{key}.pub", "--allow-ip", "127.0.0.1")
    assert added.exit_code == 0, added.output
    listing, count = upload_batch(tmp_path, 25)
    batch = tmp_path / "batch"
    batch.write_text(f"put {listing}\nput {count}\nls -a\n")
    with served(["sftp"]) as server:
        port = server.ports["sftp"]
        host_key = server.settings.ssh_host_key.with_name("ssh_host_ed25519_key.pub")
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.read_text()}")
        done = subprocess.run(
            [
                OPENSSH_SFTP,
                "-b",
                str(batch),
                "-P",
                str(port),
                "-i",
                str(key),
                "-o",
                f"UserKnownHostsFile={known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "acme@127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert "subscriber_list.csv" in done.stdout and ".part" not in done.stdout
    assert sorted(p.name for p in ws.home.iterdir()) == [
        "subscriber_list.csv",
        "subscriber_list_count.txt",
    ]
    [run] = ws.sync_all()
    assert (run.status, run.added) == ("applied", 25)


@pytest.mark.parametrize("login", ["password", "key"])
def test_paramiko_uploads_a_list_with_a_password_or_a_key(
    ws: Sandbox, served, homes, client_key: Path, tmp_path: Path, login: str
) -> None:
    listing, count = upload_batch(tmp_path, 7)
    credentials = {"password": PASSWORD} if login == "password" else {"key": client_key}
    with served(["sftp"]) as server, session(server.ports["sftp"], **credentials) as sftp:
        sftp.put(str(listing), "subscriber_list.csv")
        sftp.put(str(count), "/subscriber_list_count.txt")
    [run] = ws.sync_all()
    assert (run.status, run.added) == ("applied", 7)


def test_every_upload_download_and_login_is_one_log_line(
    ws: Sandbox, served, homes, client_key: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="listferry.server")
    with served(["sftp"]) as server, session(server.ports["sftp"], key=client_key) as sftp:
        with sftp.open("in.csv", "w") as f:
            f.write(b"email\n")
        assert sftp.open("in.csv").read() == b"email\n"
    lines = [r.getMessage() for r in caplog.records if r.name == "listferry.server"]
    assert [line for line in lines if line.startswith("event=login")] == [
        "event=login protocol=sftp tenant=acme ip=127.0.0.1 method=publickey result=ok"
    ]
    for kind in ("upload", "download"):
        assert f"event={kind} {WHO} file=in.csv bytes=6 result=ok" in lines


# -- uploads are atomic -------------------------------------------------------------------


def test_an_upload_in_progress_is_hidden_and_never_synced(
    ws: Sandbox, acme_sftp: paramiko.SFTPClient
) -> None:
    upload = acme_sftp.open("subscriber_list.csv", "w")
    upload.write(csv_text(people(3)).encode())
    upload.flush()
    on_disk = [p.name for p in ws.home.iterdir()]
    assert "subscriber_list.csv" not in on_disk
    assert any(name.startswith(".subscriber_list.csv.") for name in on_disk)
    assert "subscriber_list.csv" not in acme_sftp.listdir("/")
    assert [run.status for run in ws.sync_all()] == ["idle"]
    upload.close()
    [run] = ws.sync_all()
    assert (run.status, run.added) == ("applied", 3)


def test_an_upload_cut_off_halfway_leaves_no_list_and_no_temp(
    ws: Sandbox, served, homes, client_key: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="listferry.server")
    with served(["sftp"]) as server, session(server.ports["sftp"], key=client_key) as sftp:
        upload = sftp.open("subscriber_list.csv", "w")
        upload.write(csv_text(people(2000)).encode()[:60_000])
        upload.flush()
        assert any(p.name.endswith(".part") for p in ws.home.iterdir())
        sftp.get_channel().get_transport().close()  # the connection drops, file still open
        wait_for(lambda: not any(p.name.endswith(".part") for p in ws.home.iterdir()), timeout=5)
        assert not (ws.home / "subscriber_list.csv").exists()
    assert any(
        "event=upload" in r.getMessage() and "result=aborted" in r.getMessage()
        for r in caplog.records
    )
    assert [run.status for run in ws.sync_all()] == ["idle"]


@needs_openssh
def test_killing_openssh_sftp_mid_put_leaves_no_list_and_no_temp(
    ws: Sandbox, served, homes, client_key: Path, tmp_path: Path
) -> None:
    big = tmp_path / "subscriber_list.csv"
    with big.open("wb") as f:
        f.truncate(1 << 30)  # sparse: large enough to still be under way when killed
    batch = tmp_path / "batch"
    batch.write_text(f"put {big}\n")
    with served(["sftp"]) as server:
        client = subprocess.Popen(
            [
                OPENSSH_SFTP,
                "-b",
                str(batch),
                "-P",
                str(server.ports["sftp"]),
                "-i",
                str(client_key),
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "acme@127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for(lambda: upload_size(ws.home) > 1 << 20, timeout=30)
        finally:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait()
        wait_for(lambda: not any(p.name.endswith(".part") for p in ws.home.iterdir()), timeout=5)
    assert not (ws.home / "subscriber_list.csv").exists()
    assert [run.status for run in ws.sync_all()] == ["idle"]


def test_stop_lets_an_open_upload_finish_and_refuses_new_files(
    ws: Sandbox, served, homes, client_key: Path
) -> None:
    with served(["sftp"]) as server, session(server.ports["sftp"], key=client_key) as sftp:
        upload = sftp.open("late.csv", "w")
        upload.write(b"email\n")
        stopper = threading.Thread(target=server.servers[0].stop, args=(10,))
        stopper.start()
        wait_for(lambda: server.servers[0].stopping.is_set(), timeout=5)
        with pytest.raises(OSError):
            sftp.open("another.csv", "w")
        upload.write(b"a@example.org\n")
        upload.close()
        stopper.join(10)
        assert not stopper.is_alive()
        transport = sftp.get_channel().get_transport()
        wait_for(lambda: not transport.is_active(), timeout=5)  # the client notices the close
    assert (ws.home / "late.csv").read_bytes() == b"email\na@example.org\n"


# -- each tenant sees only its own home ----------------------------------------------------

#: Ways out of acme's home into acme2's, by path alone.
ESCAPES = [
    "../acme2/list.csv",
    "/../acme2/list.csv",
    "../../homes/acme2/list.csv",
    "sub/../../acme2/list.csv",
    "..\\acme2\\list.csv",
    "\\..\\acme2\\list.csv",
    "%2e%2e/acme2/list.csv",
    "/%2E%2E/acme2/list.csv",
]


def not_refused(attempt: Callable[[str], object], paths: list[str]) -> list[str]:
    """The paths for which ``attempt`` did not fail."""
    allowed = []
    for path in paths:
        try:
            attempt(path)
        except OSError:
            continue
        allowed.append(path)
    return allowed


def test_reading_another_tenants_file_by_path_is_refused(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient
) -> None:
    assert not_refused(lambda path: acme_sftp.open(path).read(), ESCAPES) == []
    assert not_refused(acme_sftp.stat, ESCAPES) == []


def test_listing_another_tenants_home_by_path_is_refused(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient
) -> None:
    acme, _ = homes
    folders = ["../acme2", "/../acme2", "../../homes/acme2", "..\\acme2", "%2e%2e/acme2"]
    assert not_refused(acme_sftp.listdir, folders) == []
    assert sorted(acme_sftp.listdir("../..")) == sorted(p.name for p in acme.iterdir())


def test_writing_into_another_tenants_home_by_path_is_refused(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient
) -> None:
    acme, acme2 = homes
    before, own = snapshot(acme2), snapshot(acme)

    def write(path: str) -> None:
        with acme_sftp.open(path, "w") as f:
            f.write(b"email\r\nmallory@example.org\r\n")

    assert not_refused(write, ESCAPES) == []
    assert snapshot(acme2) == before and snapshot(acme) == own


def test_renaming_into_another_tenants_home_is_refused(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient
) -> None:
    acme, acme2 = homes
    before = snapshot(acme2)
    assert not_refused(lambda path: acme_sftp.rename("own.txt", path), ESCAPES) == []
    assert not_refused(lambda path: acme_sftp.posix_rename("own.txt", path), ESCAPES) == []
    assert snapshot(acme2) == before
    assert (acme / "own.txt").exists()


def test_deleting_in_another_tenants_home_is_refused(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient
) -> None:
    _, acme2 = homes
    before = snapshot(acme2)
    assert not_refused(acme_sftp.remove, ESCAPES) == []
    folders = [path.replace("list.csv", "sub") for path in ESCAPES]
    assert not_refused(acme_sftp.rmdir, folders) == []
    assert snapshot(acme2) == before


def test_percent_encoding_is_not_decoded_it_is_part_of_a_name(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient
) -> None:
    acme, acme2 = homes
    before = snapshot(acme2)
    with acme_sftp.open("%2e%2e%2facme2%2flist.csv", "w") as f:
        f.write(b"email\r\n")
    assert (acme / "%2e%2e%2facme2%2flist.csv").read_bytes() == b"email\r\n"
    assert snapshot(acme2) == before


def test_names_with_control_characters_are_refused_for_every_operation_and_logged_escaped(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient, caplog: pytest.LogCaptureFixture
) -> None:
    acme, _ = homes
    (acme / "sub").mkdir()
    before = snapshot(acme)
    caplog.set_level(logging.INFO, logger="listferry.server")

    def write(path: str) -> None:
        with acme_sftp.open(path, "w") as f:
            f.write(b"email\r\nada@example.org\r\n")

    attempts: list[Callable[[str], object]] = [
        write,
        lambda name: write(f"sub/{name}"),
        acme_sftp.mkdir,
        lambda name: acme_sftp.rename("own.txt", name),
        lambda name: acme_sftp.posix_rename("own.txt", name),
        lambda name: acme_sftp.rename("sub", f"{name}/sub"),
        acme_sftp.remove,
        acme_sftp.rmdir,
        acme_sftp.stat,
        acme_sftp.lstat,
        acme_sftp.listdir,
        acme_sftp.chdir,
        lambda name: acme_sftp.utime(name, None),
        lambda name: acme_sftp.open(name).read(),
    ]
    for attempt in attempts:
        assert not_refused(attempt, CONTROL_NAMES) == []
    assert snapshot(acme) == before
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("listferry")]
    refusals = [line for line in lines if line.startswith("event=refused ")]
    assert len(refusals) >= len(attempts) * len(CONTROL_NAMES)
    assert all(line.isprintable() for line in lines), [x for x in lines if not x.isprintable()]
    named = [line for line in refusals if "red\\x1b[31m.csv" in line]
    assert named  # the name, escaped once in a quoted reason
    assert not [line for line in named if "\\\\x1b" in line], named


def test_a_symlink_in_the_home_that_leads_out_is_refused_for_every_operation(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient
) -> None:
    acme, acme2 = homes
    os.symlink(acme2, acme / "neighbour")
    os.symlink(acme2 / "list.csv", acme / "theirs.csv")
    before = snapshot(acme2)
    attempts: list[Callable[[], object]] = [
        lambda: acme_sftp.open("theirs.csv").read(),
        lambda: acme_sftp.open("neighbour/list.csv").read(),
        lambda: acme_sftp.listdir("neighbour"),
        lambda: acme_sftp.open("theirs.csv", "w").write(b"x"),
        lambda: acme_sftp.open("neighbour/new.csv", "w").write(b"x"),
        lambda: acme_sftp.rename("own.txt", "neighbour/own.txt"),
        lambda: acme_sftp.rename("theirs.csv", "mine.csv"),
        lambda: acme_sftp.remove("neighbour/list.csv"),
        lambda: acme_sftp.remove("theirs.csv"),
        lambda: acme_sftp.stat("theirs.csv"),
        lambda: acme_sftp.lstat("theirs.csv"),
        lambda: acme_sftp.readlink("theirs.csv"),
        lambda: acme_sftp.normalize("neighbour"),
        lambda: acme_sftp.chmod("theirs.csv", 0o666),
        lambda: acme_sftp.utime("theirs.csv", (0, 0)),
        lambda: acme_sftp.mkdir("neighbour/new"),
        lambda: acme_sftp.rmdir("neighbour/sub"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError):
            attempt()
    assert snapshot(acme2) == before
    assert (acme / "theirs.csv").is_symlink() and (acme / "neighbour").is_symlink()


def test_symlinks_cannot_be_made_over_sftp(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient
) -> None:
    acme, _ = homes
    for target in ("../acme2/list.csv", "/etc/passwd", "own.txt"):
        with pytest.raises(PermissionError):
            acme_sftp.symlink(target, "link.csv")
    assert not (acme / "link.csv").is_symlink()


def test_prefix_confusion_acme_cannot_reach_acme2(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient
) -> None:
    acme, _ = homes
    # "…/homes/acme2" starts with the text "…/homes/acme": only a real path check stops it
    os.symlink("../acme2", acme / "sibling")
    with pytest.raises(PermissionError):
        acme_sftp.open("sibling/list.csv").read()
    with pytest.raises(PermissionError):
        acme_sftp.listdir("sibling")


def test_paths_the_client_sees_start_at_its_home(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient
) -> None:
    acme, _ = homes
    (acme / "sub").mkdir()
    os.symlink("sub", acme / "inner")
    assert acme_sftp.normalize(".") == "/"
    assert acme_sftp.normalize("../../..") == "/"
    assert acme_sftp.normalize("sub/../own.txt") == "/own.txt"
    assert acme_sftp.normalize("inner") == "/sub"
    assert acme_sftp.readlink("inner") == "/sub"
    assert str(acme) not in acme_sftp.normalize("inner")


def test_the_home_itself_cannot_be_removed_or_renamed(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient
) -> None:
    acme, _ = homes
    for attempt in (
        lambda: acme_sftp.rmdir("/"),
        lambda: acme_sftp.rmdir(".."),
        lambda: acme_sftp.remove("/"),
        lambda: acme_sftp.rename("/", "moved"),
        lambda: acme_sftp.posix_rename("own.txt", "/"),
    ):
        with pytest.raises(PermissionError):
            attempt()
    assert (acme / "own.txt").is_file()


def test_upload_temp_names_are_neither_listed_nor_touched(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient
) -> None:
    acme, _ = homes
    temp = acme / ".list.csv.0123456789ab.part"
    temp.write_bytes(b"half")
    assert temp.name not in acme_sftp.listdir("/")
    for attempt in (
        lambda: acme_sftp.open(temp.name).read(),
        lambda: acme_sftp.open(temp.name, "w").write(b"x"),
        lambda: acme_sftp.rename(temp.name, "list.csv"),
        lambda: acme_sftp.rename("own.txt", temp.name),
        lambda: acme_sftp.remove(temp.name),
        lambda: acme_sftp.stat(temp.name),
    ):
        with pytest.raises(PermissionError):
            attempt()
    assert temp.read_bytes() == b"half" and not (acme / "list.csv").exists()


def test_attribute_changes_are_confined_to_the_harmless(
    homes: tuple[Path, Path], acme_sftp: paramiko.SFTPClient
) -> None:
    acme, _ = homes
    acme_sftp.chmod("own.txt", 0o6777)
    assert (acme / "own.txt").stat().st_mode & 0o7777 == 0o755
    acme_sftp.utime("own.txt", (1_000_000_000, 1_000_000_000))
    assert (acme / "own.txt").stat().st_mtime == 1_000_000_000
    with pytest.raises(PermissionError):
        acme_sftp.chown("own.txt", 0, 0)
    with pytest.raises(PermissionError):
        acme_sftp.truncate("own.txt", 0)
    assert (acme / "own.txt").stat().st_size > 0


# -- who gets in ---------------------------------------------------------------------------


def login_refused(port: int, **credentials: object) -> None:
    with pytest.raises(paramiko.AuthenticationException), session(port, **credentials):
        pass


def test_a_login_from_outside_the_allow_list_is_refused_even_with_the_right_password(
    ws: Sandbox, served, client_key: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="listferry.server")
    ws.add_tenant(
        "acme",
        allow_ips=["127.0.0.2/32"],
        password_hash=PASSWORD_HASH,
        ssh_keys=[public_line(client_key)],
    )
    with served(["sftp"]) as server:
        login_refused(server.ports["sftp"], password=PASSWORD)
        login_refused(server.ports["sftp"], key=client_key)
    refusals = [r.getMessage() for r in caplog.records if "event=login" in r.getMessage()]
    assert len(refusals) == 2
    assert all("result=refused" in line and "allow list" in line for line in refusals)


def test_a_tenant_without_an_allow_list_cannot_log_in_over_sftp(ws: Sandbox, served) -> None:
    ws.add_tenant("acme", password_hash=PASSWORD_HASH)
    with served(["sftp"]) as server:
        login_refused(server.ports["sftp"], password=PASSWORD)


def test_a_key_not_among_the_tenants_keys_is_refused(
    homes: tuple[Path, Path], served, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger"
    make_ssh_host_key(stranger)
    with served(["sftp"]) as server:
        login_refused(server.ports["sftp"], key=stranger)


def test_a_known_public_key_without_its_private_half_is_refused_and_counted(
    homes: tuple[Path, Path], served, client_key: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="listferry.server")
    forged = paramiko.PKey.from_path(client_key)
    signature = paramiko.Message()
    signature.add_string("ssh-ed25519")
    signature.add_string(bytes(64))
    forged.sign_ssh_data = lambda data, algorithm=None: signature  # the attacker's client
    with served(["sftp"]) as server:
        transport = paramiko.Transport(("127.0.0.1", server.ports["sftp"]))
        try:
            transport.start_client()
            with pytest.raises(paramiko.AuthenticationException):
                transport.auth_publickey("acme", forged)
        finally:
            transport.close()
        assert server.runtime.guard.failures("127.0.0.1") == 1
    lines = [r.getMessage() for r in caplog.records if "event=login" in r.getMessage()]
    assert len(lines) == 1 and "result=refused" in lines[0] and "signature" in lines[0]


def connection_refused_at_connect(port: int) -> bool:
    transport = paramiko.Transport(("127.0.0.1", port))
    try:
        transport.start_client(timeout=5)
    except (paramiko.SSHException, EOFError, OSError):
        return True
    finally:
        transport.close()
    return False


def test_wrong_passwords_block_the_address_and_the_block_lifts(
    homes: tuple[Path, Path], served
) -> None:
    settings = {"delay_after_failures": 10, "block_after_failures": 3, "block_seconds": 1}
    with served(["sftp"], **settings) as server:
        port = server.ports["sftp"]
        already_open = paramiko.Transport(("127.0.0.1", port))
        already_open.start_client()
        try:
            attacker = paramiko.Transport(("127.0.0.1", port))
            attacker.start_client()
            for _ in range(3):
                with pytest.raises(paramiko.AuthenticationException):
                    attacker.auth_password("acme", "guess")
            attacker.close()
            blocked_at = time.monotonic()
            assert connection_refused_at_connect(port)
            with pytest.raises(paramiko.AuthenticationException):
                already_open.auth_password("acme", PASSWORD)  # the right one, while blocked
        finally:
            already_open.close()
        wait_for(lambda: not connection_refused_at_connect(port), timeout=10)
        assert time.monotonic() - blocked_at >= 0.5
        with session(port, password=PASSWORD) as sftp:
            assert sftp.listdir("/")


def test_connections_over_the_limit_are_closed_before_the_handshake(
    homes: tuple[Path, Path], served, client_key: Path
) -> None:
    with served(["sftp"], max_connections_per_ip=1) as server:
        port = server.ports["sftp"]
        with (
            session(port, key=client_key),
            socket.create_connection(("127.0.0.1", port), timeout=5) as extra,
        ):
            assert extra.recv(100) == b""  # closed without even a banner
        wait_for(lambda: not connection_refused_at_connect(port), timeout=5)


# -- only SFTP, only after login -------------------------------------------------------------


def test_channels_before_login_are_refused(homes: tuple[Path, Path], served) -> None:
    with served(["sftp"]) as server:
        transport = paramiko.Transport(("127.0.0.1", server.ports["sftp"]))
        try:
            transport.start_client()
            with pytest.raises(paramiko.ChannelException):
                transport.open_session()
            with pytest.raises(paramiko.ChannelException):
                transport.open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0))
            assert transport.global_request("tcpip-forward", wait=True) is None
        finally:
            transport.close()


@pytest.mark.parametrize(
    "request_",
    [
        lambda channel: channel.exec_command("cat /etc/passwd"),
        lambda channel: channel.invoke_shell(),
        lambda channel: channel.get_pty(),
        lambda channel: channel.invoke_subsystem("netconf"),
    ],
    ids=["exec", "shell", "pty", "other-subsystem"],
)
def test_only_the_sftp_subsystem_is_served_after_login(
    homes: tuple[Path, Path], served, client_key: Path, request_: Callable
) -> None:
    with served(["sftp"]) as server, session(server.ports["sftp"], key=client_key) as sftp:
        transport = sftp.get_channel().get_transport()
        with pytest.raises(paramiko.SSHException):
            request_(transport.open_session())
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0))
        assert sftp.listdir("/")  # the SFTP session goes on


def test_a_connection_that_never_finishes_its_handshake_is_closed_in_time(
    homes: tuple[Path, Path], served
) -> None:
    with served(["sftp"], handshake_timeout=1) as server:
        baseline = threading.active_count()
        cpu_before, started = time.process_time(), time.monotonic()
        with socket.create_connection(("127.0.0.1", server.ports["sftp"])) as silent:
            silent.settimeout(10)
            assert silent.recv(100).startswith(b"SSH-2.0-")
            while silent.recv(100):  # we never answer; the server must hang up
                pass
        took = time.monotonic() - started
        assert 0.8 <= took < 4
        assert time.process_time() - cpu_before < 0.5 * took  # waited, did not spin
        wait_for(lambda: threading.active_count() <= baseline, timeout=5)


def test_a_connection_that_never_logs_in_is_closed_in_time(
    homes: tuple[Path, Path], served
) -> None:
    with served(["sftp"], handshake_timeout=1) as server:
        transport = paramiko.Transport(("127.0.0.1", server.ports["sftp"]))
        try:
            transport.start_client()  # key exchange done, no login
            wait_for(lambda: not transport.is_active(), timeout=4)
        finally:
            transport.close()


def test_an_idle_session_is_closed(homes: tuple[Path, Path], served, client_key: Path) -> None:
    with (
        served(["sftp"], idle_timeout=1) as server,
        session(server.ports["sftp"], key=client_key) as sftp,
    ):
        transport = sftp.get_channel().get_transport()
        wait_for(lambda: not transport.is_active(), timeout=4)


# -- the real command line -------------------------------------------------------------------


def read_line(stream, deadline: float) -> str:
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            return stream.readline()
    raise AssertionError("no output from listferry serve")


def test_serve_runs_sftp_until_sigterm_and_stops_cleanly(
    ws: Sandbox, client_key: Path, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "listferry", "--config", str(ws.config_path)]
    subprocess.run([*command, "init"], check=True, capture_output=True)
    ws.add_tenant("acme", allow_ips=LOCAL, ssh_keys=[public_line(client_key)])
    server = subprocess.Popen(
        [*command, "serve", "--protocols", "sftp", "--sftp-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        plan = read_line(server.stdout, deadline)
        assert plan == "acme: next sync " + plan.split()[-1] + "\n"  # the schedule's plan
        line = read_line(server.stdout, deadline)
        assert line.startswith("listening sftp 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        listing, _ = upload_batch(tmp_path, 3)
        with session(port, key=client_key) as sftp:
            sftp.put(str(listing), "subscriber_list.csv")
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=15)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert out.rstrip().endswith("stopped")
    assert "Traceback" not in err
    assert "event=upload protocol=sftp tenant=acme" in err
    assert (ws.home / "subscriber_list.csv").exists()
