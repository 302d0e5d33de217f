"""``listferry serve`` in cluster mode, with real clients, PostgreSQL and S3 storage.

The servers run as a ``listferry serve`` process on one node (a state folder of its
own), a ``listferry worker`` on another; customers upload with OpenSSH ``sftp`` and
curl over FTPS on 127.0.0.1. A completed upload lands in the tenant's home in storage
and a worker applies it; a cut upload and a storage that does not answer leave nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue

import pytest

from listferry.cluster.database import connect
from listferry.config import load_config
from listferry.config.passwords import hash_password
from listferry.serve.keys import ensure_server_keys
from listferry.testing import wait_for

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("curl", "sftp", "ssh-keygen")),
    reason="needs curl, OpenSSH sftp and ssh-keygen (.ci/run installs them)",
)

PASSWORD = "a-long-password"
HEADER = "email,first_name,last_name,segment_code"


def list_text(n: int, first: int = 0) -> bytes:
    rows = [f"p{i}@example.org,First{i},Last{i},GOLD" for i in range(first, first + n)]
    return ("\r\n".join([HEADER, *rows]) + "\r\n").encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def paramiko_put(port: int, key: Path, source: Path) -> None:
    """Upload ``source`` as acme with paramiko, and close the file with a request of its
    own: paramiko's ``SFTPFile.close`` drops the answer, which holds the server's message."""
    import paramiko
    from paramiko.sftp import CMD_CLOSE

    with paramiko.Transport(("127.0.0.1", port)) as transport:
        transport.connect(username="acme", pkey=paramiko.PKey.from_path(key))
        with paramiko.SFTPClient.from_transport(transport) as sftp:
            upload = sftp.open(source.name, "w")
            upload.write(source.read_bytes())
            upload.flush()
            sftp._request(CMD_CLOSE, upload.handle)


class Node:
    """A machine of the cluster: a folder with its own ``listferry.toml`` and state."""

    def __init__(self, root: Path, database_url: str, bucket, endpoint_url: str, key: Path):
        self.root = root
        self.config = root / "listferry.toml"
        root.mkdir(parents=True)
        self.config.write_text(
            f"""\
[listferry]
state = "state"

[server]
upload_grace = 0.5

[cluster]
database = "{database_url}"

[storage]
url = "{bucket.url}"
endpoint_url = "{endpoint_url}"

[defaults]
count_file = "optional"
strategy = "full"
"""
        )
        self.env = {**os.environ, "LISTFERRY_LOAD_PLUGINS": ""}
        self.processes: list[subprocess.Popen[str]] = []

    @property
    def server(self):  # the [server] settings, once the cluster's tables exist
        return load_config(self.config).server

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "listferry", "--config", str(self.config), *args]
        return subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=120)

    def start(self, *args: str, until: str) -> Queue[str]:
        """Start ``listferry ARGS``; its stdout lines, once one starts with ``until``."""
        command = [sys.executable, "-m", "listferry", "--config", str(self.config), *args]
        log = self.root / f"{args[0]}.log"
        with log.open("w") as stderr:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=self.env
            )
        self.processes.append(process)
        lines: Queue[str] = Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in process.stdout], daemon=True).start()
        seen = []
        while not seen or not seen[-1].startswith(until):
            try:
                seen.append(lines.get(timeout=60))
            except Empty:
                raise AssertionError(f"{args[0]} did not start:\n{log.read_text()}") from None
        for line in seen:
            lines.put(line)
        return lines

    def serve(self) -> dict[str, int]:
        """Start ``listferry serve`` (FTPS and SFTP on free ports); its ports."""
        ensure_server_keys(self.server)
        lines = self.start(
            "serve",
            "--no-schedule",
            "--protocols",
            "ftps,sftp",
            "--ftps-port",
            "0",
            "--sftp-port",
            "0",
            until="listening sftp",
        )
        ports = {}
        while not lines.empty():
            if found := re.fullmatch(r"listening (ftps|sftp) 127\.0\.0\.1:(\d+)\n", lines.get()):
                ports[found[1]] = int(found[2])
        return ports

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text()

    def spool(self) -> list[str]:
        folder = self.root / "state" / "server" / "spool" / "acme"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Cluster:
    """A serve node and a worker node over one database and one bucket."""

    def __init__(self, tmp_path: Path, database_url: str, bucket, endpoint_url: str) -> None:
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.bucket = bucket
        self.key = tmp_path / "crm_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        self.front = Node(tmp_path / "front", database_url, bucket, endpoint_url, self.key)
        self.back = Node(tmp_path / "back", database_url, bucket, bucket.endpoint_url, self.key)
        init = self.back.run("cluster", "init")
        assert init.returncode == 0, init.stderr
        settings = {  # the tenant every node shares, as `tenant add` would keep it
            "process": "on-upload",
            "password_hash": hash_password(PASSWORD),
            "ssh_keys": [self.key.with_name(self.key.name + ".pub").read_text().strip()],
            "allow_ips": ["127.0.0.1"],
        }
        with connect(database_url) as conn:
            conn.execute(
                "INSERT INTO listferry_tenants (name, settings) VALUES ('acme', %s)",
                (json.dumps(settings),),
            )

    def home(self) -> dict[str, bytes]:
        """The objects of acme's home in storage, by name below it, and their bytes."""
        client = self.bucket.server.client()
        prefix = self.bucket.url.split("/", 3)[3] + "/homes/acme/"
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket.name, Prefix=prefix
        ):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=self.bucket.name, Key=item["Key"])["Body"]
                found[item["Key"][len(prefix) :]] = body.read()
        return found

    def sql(self, query: str) -> list[tuple]:
        with connect(self.database_url) as conn:
            return conn.execute(query).fetchall()

    def runs(self) -> list[tuple]:
        return self.sql(
            "SELECT status, file, sha256, node FROM listferry_runs "
            "WHERE tenant = 'acme' AND status <> 'idle' ORDER BY id"
        )

    def sftp(self, port: int, batch: str, *options: str) -> list[str]:
        known_hosts = self.tmp_path / "known_hosts"
        private = self.front.server.ssh_host_key
        host_key = private.with_name(private.name + ".pub")
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.read_text()}")
        (self.tmp_path / "batch").write_text(batch)
        return [
            "sftp",
            "-b",
            str(self.tmp_path / "batch"),
            "-P",
            str(port),
            "-i",
            str(self.key),
            *("-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"),
            *("-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"),
            *options,
            "acme@127.0.0.1",
        ]

    def curl(self, port: int, source: Path, *options: str) -> list[str]:
        return [
            "curl",
            "-sS",
            "-v",
            "--cacert",
            str(self.front.server.tls_cert),
            "--ssl-reqd",
            "--user",
            f"acme:{PASSWORD}",
            "-T",
            str(source),
            *options,
            f"ftp://127.0.0.1:{port}/",
        ]


@pytest.fixture
def cluster(tmp_path: Path, database_url: str, bucket) -> Iterator[Cluster]:
    made = Cluster(tmp_path, database_url, bucket, bucket.endpoint_url)
    try:
        yield made
    finally:
        made.front.stop()
        made.back.stop()
    for node in (made.front, made.back):
        for process in node.processes:
            assert process.returncode == 0, node.log("serve" if node is made.front else "worker")
    assert "Traceback" not in made.front.log("serve")


def test_uploads_by_sftp_and_ftps_land_whole_in_storage_and_a_worker_on_another_node_applies_them(
    cluster: Cluster,
) -> None:
    ports = cluster.front.serve()
    cluster.back.start("worker", until="worker ")
    first = cluster.tmp_path / "subscriber_list.csv"
    first.write_bytes(list_text(40))
    done = subprocess.run(
        cluster.sftp(ports["sftp"], f"put {first}\n"), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr

    sha = hashlib.sha256(list_text(40)).hexdigest()
    applied = wait_for(lambda: cluster.runs(), "the worker's run of the SFTP upload", timeout=120)
    assert applied == [("applied", "subscriber_list.csv", sha, applied[0][3])]

    second = cluster.tmp_path / "second" / "subscriber_list.csv"
    second.parent.mkdir()
    second.write_bytes(list_text(60))
    done = subprocess.run(
        cluster.curl(ports["ftps"], second), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "< 226" in done.stderr

    sha2 = hashlib.sha256(list_text(60)).hexdigest()
    runs = wait_for(lambda: cluster.runs()[1:], "the worker's run of the FTPS upload", timeout=120)
    assert [(status, file, digest) for status, file, digest, _ in runs] == [
        ("applied", "subscriber_list.csv", sha2)
    ]
    # Applied on the worker's node, from storage: nothing is left in this node's spool,
    # and the sync removed each applied list from the home (its report stays).
    serve_pid = cluster.front.processes[0].pid
    assert all(not node.endswith(f":{serve_pid}") for *_, node in cluster.runs())
    assert cluster.front.spool() == []
    wait_for(lambda: "subscriber_list.csv" not in cluster.home(), "the list to leave the home")
    log = cluster.front.log("serve")
    assert log.count("event=upload") == 2 and log.count("result=ok") >= 2
    assert re.search(r"event=queued tenant=acme job=\d+", log)


@pytest.mark.parametrize("client", ["sftp", "curl"])
def test_an_upload_cut_mid_transfer_leaves_nothing_in_storage_and_no_run(
    cluster: Cluster, client: str
) -> None:
    ports = cluster.front.serve()
    cluster.back.start("worker", until="worker ")
    big = cluster.tmp_path / "subscriber_list.csv"
    big.write_bytes(list_text(400_000))  # about 18 MB, sent at 1 MB/s
    if client == "sftp":
        command = cluster.sftp(ports["sftp"], f"put {big}\n", "-l", "8000")
    else:
        command = cluster.curl(ports["ftps"], big, "--limit-rate", "1M")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    spool = cluster.front.root / "state" / "server" / "spool" / "acme"

    def under_way() -> int:
        return sum(p.stat().st_size for p in spool.glob(".*.part")) if spool.exists() else 0

    try:
        wait_for(lambda: under_way() > 2 << 20, "the upload to be under way", timeout=60)
        assert cluster.home() == {}  # half a file is never in storage
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    wait_for(lambda: cluster.front.spool() == [], "the cut upload to leave the spool", timeout=30)
    # The server drops the part file, then logs the upload's end: wait for the line.
    cut = r"event=upload .*file=subscriber_list.csv .*result=(aborted|incomplete)"
    wait_for(lambda: re.search(cut, cluster.front.log("serve")), "the cut upload's log line")
    log = cluster.front.log("serve")
    assert cluster.home() == {}
    assert cluster.runs() == []
    assert "event=queued" not in log
    assert cluster.sql("SELECT count(*) FROM procrastinate_jobs") == [(0,)]


def test_storage_that_does_not_answer_fails_the_upload_with_a_clear_error_and_keeps_nothing(
    tmp_path: Path, database_url: str, bucket
) -> None:
    cluster = Cluster(tmp_path, database_url, bucket, f"http://127.0.0.1:{free_port()}")
    # Its own server keys (storage, where the cluster's are, never answers this node).
    text = cluster.front.config.read_text()
    cluster.front.config.write_text(
        text.replace(
            "[server]\n",
            '[server]\nssh_host_key = "keys/host_key"\n'
            'tls_cert = "keys/cert.pem"\ntls_key = "keys/key.pem"\n',
        )
    )
    try:
        ports = cluster.front.serve()
        listing = tmp_path / "subscriber_list.csv"
        listing.write_bytes(list_text(10))
        by_sftp = subprocess.run(
            cluster.sftp(ports["sftp"], f"put {listing}\n"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        by_ftps = subprocess.run(
            cluster.curl(ports["ftps"], listing), capture_output=True, text=True, timeout=120
        )
        with pytest.raises(OSError) as by_paramiko:
            paramiko_put(ports["sftp"], cluster.key, listing)
    finally:
        cluster.front.stop()
    assert by_sftp.returncode != 0
    # OpenSSH's client shows the status code alone; the message is in the status, as a
    # client that shows it (paramiko, WinSCP, FileZilla) does.
    assert "close remote: Failure" in by_sftp.stderr
    assert "Upload not kept: storage did not take it; try again later" in str(by_paramiko.value)
    assert by_ftps.returncode != 0
    assert "< 451 Upload not kept: storage did not take it; try again later." in by_ftps.stderr
    for told in (str(by_paramiko.value), by_ftps.stderr):  # where storage is: not theirs
        assert "http://" not in told, told
    log = cluster.front.log("serve")
    failed = [line for line in log.splitlines() if "result=failed" in line]
    assert len(failed) == 3, log
    assert all("storage did not take it: storage http://127.0.0.1" in line for line in failed)
    assert "Traceback" not in log
    assert cluster.front.spool() == []
    assert cluster.home() == {}  # the real storage got nothing either
    assert cluster.runs() == []
    assert cluster.front.processes[0].returncode == 0, log
