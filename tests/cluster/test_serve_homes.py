"""A customer's home in storage, through ``listferry serve`` in cluster mode.

What a customer sees and does in its home on one machine, it sees and does here: the
result reports, the return files in ``outbox/`` and the files waiting for their sync are
listed with sizes and times, read byte for byte (whole, from an offset, at random
offsets), removed and renamed, all in storage. With real clients (OpenSSH ``sftp``,
paramiko, curl and ftplib over FTPS), one ``listferry serve`` process for the module,
PostgreSQL, and SeaweedFS behind a TCP gate that the storage-away test closes.
"""

from __future__ import annotations

import ftplib
import io
import json
import re
import secrets
import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paramiko
import pytest

from listferry.cluster.database import connect
from listferry.config.passwords import hash_password
from listferry_plugins.ftp.transport import TlsFtp

from .conftest import Bucket
from .services import ACCESS_KEY, REGION, SECRET_KEY, Gate
from .test_serve_cluster import PASSWORD, Cluster, list_text

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("curl", "sftp", "ssh-keygen")),
    reason="needs curl, OpenSSH sftp and ssh-keygen (.ci/run installs them)",
)

UNAVAILABLE = "Storage is not available now; try again later"


@dataclass
class Served:
    """The module's serve node, its ports, the gate to its storage and a plain S3 client."""

    cluster: Cluster
    ports: dict[str, int]
    gate: Gate
    s3: Any
    bucket: Bucket

    @property
    def prefix(self) -> str:
        return urlsplit(self.bucket.url).path.strip("/")

    def put(self, name: str, data: bytes, tenant: str = "acme") -> None:
        """Store ``data`` as ``name`` in the tenant's home, as the sync or export would."""
        key = f"{self.prefix}/homes/{tenant}/{name}"
        self.s3.put_object(Bucket=self.bucket.name, Key=key, Body=data)

    def head(self, name: str) -> dict[str, Any] | None:
        key = f"{self.prefix}/homes/acme/{name}"
        try:
            return self.s3.head_object(Bucket=self.bucket.name, Key=key)
        except self.s3.exceptions.ClientError:
            return None

    def everything(self) -> dict[str, bytes]:
        """Every object under the prefix, by key below it, and its bytes."""
        found = {}
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket.name, Prefix=self.prefix + "/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                body = self.s3.get_object(Bucket=self.bucket.name, Key=item["Key"])["Body"]
                found[item["Key"][len(self.prefix) + 1 :]] = body.read()
        return found

    def log(self) -> str:
        return self.cluster.front.log("serve")

    def sftp_batch(self, batch: str) -> subprocess.CompletedProcess[str]:
        command = self.cluster.sftp(self.ports["sftp"], batch)
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    def paramiko(self) -> paramiko.SFTPClient:
        transport = paramiko.Transport(("127.0.0.1", self.ports["sftp"]))
        transport.connect(username="acme", pkey=paramiko.PKey.from_path(self.cluster.key))
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        return client

    def ftp(self) -> ftplib.FTP_TLS:
        """A logged-in FTPS client whose data connections resume its TLS session."""
        context = ssl.create_default_context(cafile=str(self.cluster.front.server.tls_cert))
        client = TlsFtp(context=context, timeout=30)
        client.connect("127.0.0.1", self.ports["ftps"])
        client.login("acme", PASSWORD)
        client.prot_p()
        return client

    def curl(self, path: str, *options: str) -> list[str]:
        return [
            "curl",
            "-sS",
            "--cacert",
            str(self.cluster.front.server.tls_cert),
            "--ssl-reqd",
            "--user",
            f"acme:{PASSWORD}",
            *options,
            f"ftp://127.0.0.1:{self.ports['ftps']}/{path}",
        ]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, postgres, seaweed, shared_bucket: str
) -> Iterator[Served]:
    """One serve node for the module, its storage reached through a :class:`Gate`, with
    the tenants ``acme`` (the customer) and ``other`` (its neighbour)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        env.setenv("AWS_DEFAULT_REGION", REGION)
        database_url = postgres.create_database()
        prefix = "h-" + secrets.token_hex(6)
        bucket = Bucket(
            shared_bucket, f"s3://{shared_bucket}/{prefix}", seaweed.endpoint_url, seaweed
        )
        gate = Gate(("127.0.0.1", urlsplit(seaweed.endpoint_url).port or 80))
        try:
            cluster = Cluster(tmp_path_factory.mktemp("homes"), database_url, bucket, gate.url)
            with connect(database_url) as conn:
                other = {"password_hash": hash_password(PASSWORD), "allow_ips": ["127.0.0.1"]}
                conn.execute(
                    "INSERT INTO listferry_tenants (name, settings) VALUES ('other', %s)",
                    (json.dumps(other),),
                )
            try:
                yield Served(cluster, cluster.front.serve(), gate, seaweed.client(), bucket)
            finally:
                cluster.front.stop()
        finally:
            gate.close()
            postgres.drop_database(database_url)
    log = cluster.front.log("serve")
    assert cluster.front.processes[0].returncode == 0, log
    assert "Traceback" not in log


def lines_of(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if word in line]


# -- the customer's night, end to end --------------------------------------------------------


def test_the_customer_fetches_the_report_and_return_file_of_its_upload_and_removes_them(
    served: Served, tmp_path: Path
) -> None:
    """Upload a list, a worker node syncs it and exports the return file, the customer
    lists, fetches and removes them, all through the servers. (First in the module: the
    sync takes every list in the home.)"""
    upload = tmp_path / "subscriber_list.csv"
    upload.write_bytes(list_text(25))
    done = served.sftp_batch(f"put {upload}\n")
    assert done.returncode == 0, done.stderr
    back = served.cluster.back
    synced = back.run("sync", "--here", "acme", "--json")
    assert [run["status"] for run in json.loads(synced.stdout)] == ["applied"], synced.stderr
    exported = back.run("export", "acme", "--json")
    assert exported.returncode == 0, exported.stderr
    returns = json.loads(exported.stdout)["file"]

    listing = served.sftp_batch("ls\nls outbox\n")
    assert listing.returncode == 0, listing.stderr
    assert "subscriber_list.result.txt" in listing.stdout and returns in listing.stdout
    assert "subscriber_list.csv" not in listing.stdout.split()  # applied: gone from the home
    stored = served.cluster.home()
    ftp = served.ftp()
    try:
        report, return_file = io.BytesIO(), io.BytesIO()
        ftp.retrbinary("RETR subscriber_list.result.txt", report.write)
        ftp.retrbinary(f"RETR outbox/{returns}", return_file.write)
        ftp.delete(f"outbox/{returns}")
    finally:
        ftp.quit()
    assert report.getvalue() == stored["subscriber_list.result.txt"]
    assert b"applied" in report.getvalue()
    assert return_file.getvalue() == stored[f"outbox/{returns}"]
    assert return_file.getvalue().count(b"@example.org") == 25
    assert f"outbox/{returns}" not in served.cluster.home()


# -- listing ---------------------------------------------------------------------------------


def test_the_home_lists_reports_return_files_and_files_waiting_with_sizes_and_times(
    served: Served,
) -> None:
    report = b"subscriber_list.csv: applied, 40 subscribers\n"
    returns = b"email,opened\na@example.org,3\n" * 10
    served.put("spring.result.txt", report)
    served.put("outbox/spring_returns.csv", returns)
    served.put("spring.csv", b"email\nb@example.org\n")  # uploaded earlier, its sync to come
    # an upload under a client's temporary name, in the spool until it is renamed
    with served.paramiko() as sftp, sftp.open("autumn.csv.filepart", "w") as waiting:
        waiting.write(b"email\n")

    done = served.sftp_batch("ls -l\nls -l outbox\n")
    assert done.returncode == 0, done.stderr
    listed = {
        line.split()[-1]: line.split()
        for line in done.stdout.splitlines()
        if not line.startswith("sftp>")
    }
    assert listed["spring.result.txt"][4] == str(len(report))
    assert listed["spring.csv"][0].startswith("-rw")
    assert listed["outbox"][0].startswith("d")
    assert listed["autumn.csv.filepart"][4] == "6"
    assert listed["spring_returns.csv"][4] == str(len(returns))

    ftp = served.ftp()
    try:
        home = dict(ftp.mlsd("/"))
        outbox = dict(ftp.mlsd("outbox"))
        ftp.cwd("outbox")
        assert ftp.nlst() == sorted(outbox)
        by_list: list[str] = []
        ftp.retrlines("LIST", by_list.append)
    finally:
        ftp.quit()
    stored = served.head("outbox/spring_returns.csv")
    assert stored is not None
    assert outbox["spring_returns.csv"]["type"] == "file"
    assert outbox["spring_returns.csv"]["size"] == str(len(returns))
    assert outbox["spring_returns.csv"]["modify"] == stored["LastModified"].strftime("%Y%m%d%H%M%S")
    assert home["outbox"]["type"] == "dir"
    assert home["spring.result.txt"]["size"] == str(len(report))
    assert home["autumn.csv.filepart"]["size"] == "6"
    assert any(re.search(rf"\s{len(returns)}\s.*spring_returns\.csv$", line) for line in by_list)


# -- reading -------------------------------------------------------------------------------


def test_downloads_give_the_exact_bytes_whole_from_an_offset_and_at_random_offsets(
    served: Served, tmp_path: Path
) -> None:
    data = secrets.token_bytes(3 << 20) + bytes(range(256)) * 7  # reads of every size
    served.put("outbox/returns.bin", data)
    stored = served.head("outbox/returns.bin")
    assert stored is not None

    by_sftp = tmp_path / "by_sftp.bin"
    done = served.sftp_batch(f"get outbox/returns.bin {by_sftp}\n")
    assert done.returncode == 0, done.stderr
    assert by_sftp.read_bytes() == data

    by_curl, tail = tmp_path / "by_curl.bin", tmp_path / "tail.bin"
    for out, options in ((by_curl, ()), (tail, ("-r", "1000001-"))):
        done = subprocess.run(
            served.curl("outbox/returns.bin", "-o", str(out), *options),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    assert by_curl.read_bytes() == data
    assert tail.read_bytes() == data[1000001:]  # REST, then RETR

    with served.paramiko() as sftp, sftp.open("outbox/returns.bin", "rb") as file:
        attributes = file.stat()
        assert attributes.st_size == len(data)
        assert attributes.st_mtime == int(stored["LastModified"].timestamp())
        for offset, length in ((2_500_000, 70_000), (17, 5), (len(data) - 9, 100), (0, 1)):
            file.seek(offset)
            assert file.read(length) == data[offset : offset + length]
        assert sftp.stat("outbox/returns.bin").st_size == len(data)

    ftp = served.ftp()
    try:
        ftp.voidcmd("TYPE I")
        assert ftp.size("outbox/returns.bin") == len(data)
        modified = stored["LastModified"].strftime("%Y%m%d%H%M%S")
        assert ftp.sendcmd("MDTM outbox/returns.bin") == f"213 {modified}"
        got = io.BytesIO()
        ftp.retrbinary("RETR outbox/returns.bin", got.write, rest=3_000_000)
        assert got.getvalue() == data[3_000_000:]
    finally:
        ftp.quit()
    downloads = lines_of(served.log(), "event=download")
    assert len([line for line in downloads if "file=outbox/returns.bin" in line]) >= 5
    assert all("result=ok" in line for line in downloads), downloads


def test_downloads_from_storage_count_against_the_sessions_open_handles(served: Served) -> None:
    served.put("outbox/often.csv", b"email\n")
    most = served.cluster.front.server.max_handles_per_session
    with served.paramiko() as sftp:
        held = [sftp.open("outbox/often.csv", "rb") for _ in range(most)]
        with pytest.raises(OSError, match=f"Refused: at most {most} files and folders may"):
            sftp.open("outbox/often.csv", "rb")
        for file in held:
            file.close()
        with sftp.open("outbox/often.csv", "rb") as file:
            assert file.read() == b"email\n"


# -- removing and renaming -------------------------------------------------------------------


def test_return_files_the_customer_removes_leave_storage(served: Served) -> None:
    served.put("outbox/march_returns.csv", b"email\n")
    served.put("outbox/april_returns.csv", b"email\n")

    done = served.sftp_batch("rm outbox/march_returns.csv\n")
    assert done.returncode == 0, done.stderr
    ftp = served.ftp()
    try:
        assert ftp.delete("outbox/april_returns.csv").startswith("250")
        with pytest.raises(ftplib.error_perm, match="550 No such file"):
            ftp.delete("outbox/april_returns.csv")
        # an upload into a folder that only storage holds so far lands there
        ftp.storbinary("STOR outbox/april_ack.txt", io.BytesIO(b"fetched\n"))
    finally:
        ftp.quit()
    again = served.sftp_batch("rm outbox/march_returns.csv\n")
    assert again.returncode != 0 and "No such file" in again.stderr

    assert served.head("outbox/march_returns.csv") is None
    assert served.head("outbox/april_returns.csv") is None
    assert served.cluster.home()["outbox/april_ack.txt"] == b"fetched\n"
    removed = lines_of(served.log(), "event=remove")
    assert any("file=outbox/march_returns.csv" in line for line in removed)
    assert any("file=outbox/april_returns.csv" in line for line in removed)


def test_a_stored_file_is_renamed_in_storage_and_a_folder_holding_files_is_refused(
    served: Served,
) -> None:
    served.put("outbox/may_returns.csv", b"email\nc@example.org\n")
    ftp = served.ftp()
    try:
        ftp.mkd("fetched")
        ftp.rename("outbox/may_returns.csv", "fetched/may_returns.csv")
        with pytest.raises(ftplib.error_perm) as refused:
            ftp.rename("outbox", "outbox-old")
        listed = ftp.nlst("fetched")
    finally:
        ftp.quit()
    assert str(refused.value) == (
        "550 Refused: a folder that holds files in storage cannot be renamed: move the "
        "files one by one."
    )
    assert listed == ["may_returns.csv"]
    assert served.head("outbox/may_returns.csv") is None

    done = served.sftp_batch("rename fetched/may_returns.csv fetched/may.csv\n")
    assert done.returncode == 0, done.stderr
    home = served.cluster.home()
    assert home["fetched/may.csv"] == b"email\nc@example.org\n"
    assert "fetched/may_returns.csv" not in home
    log = served.log()
    assert re.search(r"event=rename protocol=sftp tenant=acme file=fetched/may_returns.csv", log)


# -- attacks ---------------------------------------------------------------------------------

#: Paths that try to leave acme's home for its neighbour's, or for the cluster's own
#: objects beside the homes (stores/, archive/), or to reach a name no client may use.
ESCAPES = [
    "../other/secret.txt",
    "/../other/secret.txt",
    "../../stores/acme/000000000001-x.db",
    "outbox/../../other/secret.txt",
    "%2e%2e/other/secret.txt",
    "%2e%2e%2fother%2fsecret.txt",
    "..\\other\\secret.txt",
    "/homes/other/secret.txt",
    "other/secret.txt",
    "secret\x00.txt",
    ".planted.0123456789ab.part",
]
#: Names with a line break, for SFTP (FTP cannot even send them as one command).
BROKEN_NAMES = ["../other/secret.txt\n", "outbox/\r\n../../other/secret.txt", "planted\nname.txt"]


def attempts_by_sftp(sftp: paramiko.SFTPClient, path: str) -> dict[str, Callable[[], Any]]:
    return {
        "read": lambda: sftp.open(path, "rb").read(),
        "stat": lambda: sftp.stat(path),
        "lstat": lambda: sftp.lstat(path),
        "listdir": lambda: sftp.listdir(path),
        "remove": lambda: sftp.remove(path),
        "rename from": lambda: sftp.rename(path, "stolen.txt"),
        "rename to": lambda: sftp.rename("mine.txt", path),
        "posix-rename from": lambda: sftp.posix_rename(path, "stolen.txt"),
        "mkdir": lambda: sftp.mkdir(path),
        "rmdir": lambda: sftp.rmdir(path),
        "utime": lambda: sftp.utime(path, (1, 1)),
    }


def attempts_by_ftp(ftp: ftplib.FTP, path: str) -> dict[str, Callable[[], Any]]:
    return {
        "read": lambda: ftp.retrbinary(f"RETR {path}", lambda data: None),
        "size": lambda: ftp.size(path),
        "mdtm": lambda: ftp.sendcmd(f"MDTM {path}"),
        "mlst": lambda: ftp.sendcmd(f"MLST {path}"),
        "remove": lambda: ftp.delete(path),
        "rename from": lambda: ftp.rename(path, "stolen.txt"),
        "rename to": lambda: ftp.rename("mine.txt", path),
        "cwd": lambda: ftp.cwd(path),
        "rmd": lambda: ftp.rmd(path),
        "list": lambda: ftp.retrlines(f"LIST {path}", lambda line: None),
        "mlsd": lambda: ftp.retrlines(f"MLSD {path}", lambda line: None),
    }


def test_paths_that_try_to_leave_the_home_reach_nothing_outside_it(served: Served) -> None:
    secret = b"email\nceo@other.example\n"
    served.put("secret.txt", secret, tenant="other")
    key = f"{served.prefix}/stores/acme/000000000001-x.db"
    served.s3.put_object(Bucket=served.bucket.name, Key=key, Body=b"SQLite format 3\0")
    # names a client cannot use, put by another S3 client: not shown, not reachable
    served.put("planted\nname.txt", b"planted")
    served.put(".planted.0123456789ab.part", b"planted")
    before = {k: v for k, v in served.everything().items() if not k.startswith("homes/acme/")}

    def attempt(name: str, action: Callable[[], Any], errors: Any) -> str:
        if name == "rename to":
            served.put("mine.txt", b"mine")
        try:
            got = action()
        except errors as exc:
            return f"{name}: {exc}"
        assert name not in ("read", "stat", "lstat", "listdir", "size", "mdtm", "mlst")
        assert secret not in repr(got).encode()
        return f"{name}: done"

    answers: list[str] = []
    with served.paramiko() as sftp:
        assert not [name for name in sftp.listdir("/") if "planted" in name]
        for path in ESCAPES + BROKEN_NAMES:
            for name, action in attempts_by_sftp(sftp, path).items():
                answers.append(f"sftp {path!r} " + attempt(name, action, OSError))
        with sftp.open("outbox-%2e%2e", "wb") as planted:  # a strange name stays a name
            planted.write(b"x")
    ftp = served.ftp()
    try:
        ftp.voidcmd("TYPE I")
        for path in ESCAPES:
            for name, action in attempts_by_ftp(ftp, path).items():
                answers.append(f"ftp {path!r} " + attempt(name, action, ftplib.error_perm))
            ftp.cwd("/")
        assert not any("planted" in name for name in ftp.nlst())
    finally:
        ftp.quit()

    after = {k: v for k, v in served.everything().items() if not k.startswith("homes/acme/")}
    assert after == before  # nothing outside acme's home read into existence, changed or gone
    assert served.head("outbox-%2e%2e") is not None
    # only "%2e%2e%2fother%2fsecret.txt", a plain (odd) name in acme's own home, may be
    # made, renamed and listed; every other attempt is refused or finds nothing
    done = [a for a in answers if a.endswith(": done")]
    assert done and all("'%2e%2e%2fother%2fsecret.txt'" in a for a in done), done
    log = served.log()
    assert "Traceback" not in log and "event=storage" not in log
    assert "\x00" not in log and "planted\n" not in log


def test_a_key_outside_the_home_is_never_made(served: Served) -> None:
    from listferry.cluster.serving import HomesInStorage
    from listferry.cluster.storage import Storage
    from listferry.serve.jail import OutsideHome

    homes = HomesInStorage(Storage(served.bucket.url, endpoint_url=served.bucket.endpoint_url))
    assert homes.key("acme", "outbox/x.csv") == "homes/acme/outbox/x.csv"
    for tenant, name in [
        ("acme", "../other/x"),
        ("acme", "outbox/../../other/x"),
        ("acme", "/abs"),
        ("acme", "a//b"),
        ("acme", "./x"),
        ("acme", "x/"),
        ("acme", "a\\..\\b"),
        ("acme", "nul\x00"),
        ("acme", "line\nbreak"),
        ("acme", ".x.1234567890ab.part"),
        ("../other", "x"),
        ("acme/../other", "x"),
        ("", "x"),
    ]:
        with pytest.raises(OutsideHome):
            homes.key(tenant, name)


# -- storage away ----------------------------------------------------------------------------


def test_storage_away_gives_a_clear_error_loses_nothing_and_logs_one_line_each(
    served: Served,
) -> None:
    big = secrets.token_bytes(24 << 20)
    served.put("outbox/june_returns.csv", b"email\nd@example.org\n")
    served.put("outbox/june_big.bin", big)
    logged = len(lines_of(served.log(), "event=storage"))
    spooled = served.cluster.front.spool()
    with served.paramiko() as sftp, sftp.open("outbox/june_big.bin", "rb") as download:
        assert download.read(1 << 20) == big[: 1 << 20]
        ftp = served.ftp()
        try:
            ftp.voidcmd("TYPE I")
            with ftp.transfercmd("RETR outbox/june_big.bin") as data:
                first = data.recv(1 << 16)
                served.gate.close()
                got = first + b"".join(iter(lambda: data.recv(1 << 16), b""))
            assert 0 < len(got) < len(big) and big.startswith(got)
            with pytest.raises(ftplib.error_temp, match=f"451 Transfer cut short: {UNAVAILABLE}"):
                ftp.voidresp()

            download.seek(20 << 20)  # further on: the stream is opened again, and cannot be
            with pytest.raises(OSError, match=UNAVAILABLE):
                download.read(1000)
            with pytest.raises(OSError, match=UNAVAILABLE):
                sftp.listdir("outbox")
            with pytest.raises(OSError, match=UNAVAILABLE):
                sftp.remove("outbox/june_returns.csv")
            for command in ("RETR outbox/june_returns.csv", "LIST outbox"):
                with pytest.raises(ftplib.error_temp, match=f"451 {UNAVAILABLE}"):
                    ftp.retrlines(command, lambda line: None)
            with pytest.raises(ftplib.error_temp, match=f"451 {UNAVAILABLE}"):
                ftp.delete("outbox/june_returns.csv")
        finally:
            served.gate.open()
            ftp.close()
        assert sftp.listdir("outbox").count("june_returns.csv") == 1  # nothing was lost

    log = served.log()
    failed = lines_of(log, "event=storage")[logged:]
    assert len(failed) == 5, failed  # one line for each command, with the reason
    assert all(
        "result=failed" in line and "unreachable: connection refused" in line for line in failed
    ), failed
    cut_short = [line for line in lines_of(log, "event=download") if "result=failed" in line]
    assert len(cut_short) == 2, cut_short  # the FTPS and the SFTP download
    assert all("file=outbox/june_big.bin" in line for line in cut_short), cut_short
    assert served.head("outbox/june_returns.csv") is not None
    assert served.cluster.front.spool() == spooled


def test_an_sftp_upload_resumed_onto_a_stored_file_starts_from_its_bytes(served: Served) -> None:
    served.put("resumed.csv", b"email\ne@example.org\n")
    stored = served.head("resumed.csv")
    assert stored is not None
    with served.paramiko() as sftp:
        with sftp.open("resumed.csv", "a") as more:  # write, create, append: no truncate
            more.write(b"f@example.org\n")
        sftp.utime("resumed.csv", (1, 1))  # taken, not kept: storage keeps the stored time
        attributes = sftp.stat("resumed.csv")

    assert served.cluster.home()["resumed.csv"] == b"email\ne@example.org\nf@example.org\n"
    assert attributes.st_mtime != 1 and attributes.st_size == 34
