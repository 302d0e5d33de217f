"""Two ``listferry serve`` nodes behind HAProxy, on one PostgreSQL and one SeaweedFS.

The deployment of docs/cluster.md ("Several serve nodes behind a load balancer"), on
loopback: HAProxy (Debian's ``haproxy``) listens on 127.0.0.1 and passes each connection
on with a PROXY protocol v2 header to node A (127.0.0.11) or node B (127.0.0.12), each
with its own passive FTP ports, forwarded to it alone; a worker node applies the lists.
The customer is 127.0.0.2 (the tenant's allow list); other loopback addresses play a
stranger, a guesser and a client that tries to name its own address. Customers use
OpenSSH ``sftp`` and curl over FTPS through the balancer.

The nodes, the worker and the balancer are started once for the module; the test that
kills a node runs last.
"""

from __future__ import annotations

import ftplib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from listferry.cluster.database import connect
from listferry.cluster.serving import share_server_keys
from listferry.config import Config, load_config
from listferry.config.passwords import hash_password
from listferry.errors import ListferryError
from listferry.serve.keys import ensure_server_keys
from listferry.serve.proxy import header_bytes
from listferry.testing import wait_for

from .conftest import _missing
from .services import ACCESS_KEY, REGION, SECRET_KEY, Missing
from .test_serve_cluster import PASSWORD, Node, list_text

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("curl", "sftp", "ssh-keygen")),
    reason="needs curl, OpenSSH sftp and ssh-keygen (.ci/run installs them)",
)

BALANCER = "127.0.0.1"  # where customers connect, and where the nodes see HAProxy from
NODES = {"a": "127.0.0.11", "b": "127.0.0.12"}
CUSTOMER = "127.0.0.2"  # on the tenant's allow list
STRANGER = "127.0.0.3"  # not on it
SPOOFER = "127.0.0.4"  # sends its own PROXY header
GUESSER = "127.0.0.5"  # tries passwords
PASSIVE = 6  # passive ports per node


def _bindable(port: int) -> bool:
    for host in (BALANCER, *NODES.values()):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` consecutive ports free on the balancer's and the nodes' addresses."""
    for _ in range(500):
        first = random.randint(30000, 59000)
        if all(_bindable(port) for port in range(first, first + count)):
            return list(range(first, first + count))
    raise RuntimeError("no free ports on loopback")


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None
    )
    if found is None:
        raise Missing("HAProxy is not installed: apt-get install haproxy")
    return found


class HA:
    """The balancer, two serve nodes and a worker over one database and one bucket."""

    def __init__(self, root: Path, database_url: str, bucket_url: str, endpoint_url: str) -> None:
        self.root = root
        self.database_url = database_url
        self.bucket_url = bucket_url
        self.storage: Any = None  # a boto3 client of the bucket's server
        self.key = root / "crm_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        ports = iter(free_ports(4 + 2 * 2 + 2 * PASSIVE))
        self.front = {"sftp": next(ports), "ftps": next(ports)}
        self.ports = {name: {"sftp": next(ports), "ftps": next(ports)} for name in NODES}
        self.passive = {name: [next(ports) for _ in range(PASSIVE)] for name in NODES}
        env = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }
        bucket = type("Bucket", (), {"url": bucket_url})
        self.nodes = {}
        for name, host in NODES.items():
            node = Node(root / name, database_url, bucket, endpoint_url, self.key)
            low, high = self.passive[name][0], self.passive[name][-1]
            node.config.write_text(
                node.config.read_text().replace(
                    "[server]\n",
                    f"""[server]
host = "{host}"
sftp_port = {self.ports[name]["sftp"]}
ftps_port = {self.ports[name]["ftps"]}
passive_ports = "{low}-{high}"
masquerade_address = "{BALANCER}"
proxy_protocol_from = ["{BALANCER}"]
delay_after_failures = 50
account_delay_after_failures = 50
block_after_failures = 4
""",
                )
            )
            node.env.update(env)
            self.nodes[name] = node
        self.worker = Node(root / "worker", database_url, bucket, endpoint_url, self.key)
        self.worker.env.update(env)
        init = self.worker.run("cluster", "init")
        assert init.returncode == 0, init.stderr
        settings = {
            "process": "on-upload",
            "password_hash": hash_password(PASSWORD),
            "ssh_keys": [self.key.with_name(self.key.name + ".pub").read_text().strip()],
            "allow_ips": [CUSTOMER],
        }
        with connect(database_url) as conn:
            conn.execute(
                "INSERT INTO listferry_tenants (name, settings) VALUES ('acme', %s)",
                (json.dumps(settings),),
            )
        self.haproxy: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for node in self.nodes.values():
            node.start("serve", "--no-schedule", "--protocols", "ftps,sftp", until="listening sftp")
        self.worker.start("worker", until="worker ")
        config = self.root / "haproxy.cfg"
        config.write_text(self.haproxy_config())
        log = (self.root / "haproxy.log").open("w")
        self.haproxy = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        for port in self.front.values():
            wait_for(lambda port=port: self._answers(port), "HAProxy to listen", timeout=10)

    def haproxy_config(self) -> str:
        """The balancer of docs/cluster.md, on loopback."""
        lines = [
            "global",
            "    maxconn 256",
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    option redispatch",
            "    retries 3",
        ]
        for protocol, port in self.front.items():
            lines += [
                f"frontend {protocol}",
                f"    bind {BALANCER}:{port}",
                f"    default_backend {protocol}_nodes",
                f"backend {protocol}_nodes",
                "    balance roundrobin",
            ]
            lines += [
                f"    server {name} {host}:{self.ports[name][protocol]} send-proxy-v2 "
                f"check inter 300 fall 1 rise 2 source {BALANCER}"
                for name, host in NODES.items()
            ]
        for name, host in NODES.items():
            low, high = self.passive[name][0], self.passive[name][-1]
            lines += [
                f"frontend passive_{name}",
                f"    bind {BALANCER}:{low}-{high}",
                f"    default_backend passive_{name}",
                f"backend passive_{name}",
                f"    server {name} {host} send-proxy-v2 source {BALANCER}",
            ]
        return "\n".join(lines) + "\n"

    def _answers(self, port: int) -> bool:
        try:
            socket.create_connection((BALANCER, port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            self.haproxy.wait(timeout=10)
        for node in [*self.nodes.values(), self.worker]:
            node.stop()

    # -- the customer's side

    def known_hosts(self) -> Path:
        """The customer's ``known_hosts``: the cluster's one host key, for the balancer
        and for each node's own address."""
        public = self.nodes["a"].server.ssh_host_key.with_name("ssh_host_ed25519_key.pub")
        key = " ".join(public.read_text().split()[:2])
        places = [f"[{BALANCER}]:{self.front['sftp']}"]
        places += [f"[{host}]:{self.ports[name]['sftp']}" for name, host in NODES.items()]
        path = self.root / "known_hosts"
        path.write_text("".join(f"{place} {key}\n" for place in places))
        return path

    def sftp(self, batch: str, source: str = CUSTOMER, host: str = BALANCER, port: int = 0):
        (self.root / "batch").write_text(batch)
        command = [
            "sftp",
            *("-b", str(self.root / "batch"), "-P", str(port or self.front["sftp"])),
            *("-i", str(self.key), "-o", f"BindAddress={source}"),
            *("-o", f"UserKnownHostsFile={self.known_hosts()}", "-o", "StrictHostKeyChecking=yes"),
            *("-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"),
            f"acme@{host}",
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    def curl(self, source_file: Path, source: str = CUSTOMER):
        cert = self.nodes["a"].server.tls_cert
        command = [
            *("curl", "-sS", "-v", "--cacert", str(cert), "--ssl-reqd"),
            *("--interface", source, "--user", f"acme:{PASSWORD}", "-T", str(source_file)),
            f"ftp://{BALANCER}:{self.front['ftps']}/",
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    def runs(self) -> list[tuple]:
        with connect(self.database_url) as conn:
            return conn.execute(
                "SELECT status, sha256 FROM listferry_runs "
                "WHERE tenant = 'acme' AND status <> 'idle' ORDER BY id"
            ).fetchall()

    def home(self) -> list[str]:
        """The names in acme's home in storage."""
        bucket, prefix = self.bucket_url.removeprefix("s3://").split("/", 1)
        found = self.storage.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/homes/acme/")
        return [item["Key"].rsplit("/", 1)[1] for item in found.get("Contents", [])]

    def logs(self) -> str:
        return "".join(node.log("serve") for node in self.nodes.values())


@pytest.fixture(scope="module")
def ha(postgres, seaweed, shared_bucket, tmp_path_factory) -> Iterator[HA]:
    try:
        haproxy_binary()
    except Missing as exc:
        _missing(exc)
    database_url = postgres.create_database()
    bucket_url = f"s3://{shared_bucket}/ha-{os.getpid()}-{random.randrange(1 << 30)}"
    made = HA(tmp_path_factory.mktemp("ha"), database_url, bucket_url, seaweed.endpoint_url)
    made.storage = seaweed.client()
    try:
        made.start()
        yield made
    finally:
        made.stop()
        postgres.drop_database(database_url)
    assert "Traceback" not in made.logs()


def node_config(
    root: Path, database_url: str, bucket_url: str, endpoint_url: str, server: str = ""
) -> Config:
    root.mkdir()
    path = root / "listferry.toml"
    path.write_text(
        f'[listferry]\nstate = "state"\n\n[server]\n{server}\n'
        f'[cluster]\ndatabase = "{database_url}"\n\n'
        f'[storage]\nurl = "{bucket_url}"\nendpoint_url = "{endpoint_url}"\n'
    )
    return load_config(path)


def test_every_node_serves_the_key_and_certificate_stored_first_and_keeps_them_when_storage_is_away(
    tmp_path: Path, database_url: str, bucket
) -> None:
    first = node_config(tmp_path / "first", database_url, bucket.url, bucket.endpoint_url)
    second = node_config(tmp_path / "second", database_url, bucket.url, bucket.endpoint_url)
    said = share_server_keys(first)
    assert said[0].startswith("SSH host key: shared from this node as s3://")
    assert said[1].startswith("TLS certificate: shared from this node as s3://")
    ensure_server_keys(second.server)  # its own, as `listferry init` made them
    mine = second.server.ssh_host_key.read_bytes()
    said = share_server_keys(second)
    assert [line.split(":")[1].strip().split(" s3")[0] for line in said] == ["taken from"] * 2
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "tls-cert.pem", "tls-key.pem"):
        here, there = first.state_dir / "server" / name, second.state_dir / "server" / name
        assert here.read_bytes() == there.read_bytes(), name
    assert second.server.ssh_host_key.read_bytes() != mine
    assert oct(second.server.tls_key.stat().st_mode & 0o777) == "0o600"

    # Storage away: the second node serves what it took before; a new node will not start.
    away = f"http://127.0.0.1:{free_ports(1)[0]}"
    second = node_config(tmp_path / "second-again", database_url, bucket.url, away)
    shutil.copytree(tmp_path / "second" / "state", tmp_path / "second-again" / "state")
    said = share_server_keys(second)
    assert all("serving the one taken from storage before" in line for line in said), said
    new = node_config(tmp_path / "new", database_url, bucket.url, away)
    with pytest.raises(ListferryError, match="has not taken the cluster's from storage before"):
        share_server_keys(new)
    # A node whose [server] names its own files keeps them, and storage is not asked.
    own_keys = 'ssh_host_key = "k"\ntls_cert = "c"\ntls_key = "p"\n'
    own = node_config(tmp_path / "own", database_url, bucket.url, away, own_keys)
    assert share_server_keys(own) == []


def test_keys_in_storage_that_do_not_check_replace_nothing_and_say_why(
    tmp_path: Path, database_url: str, bucket
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    made = node_config(tmp_path / "maker", database_url, bucket.url, bucket.endpoint_url)
    ensure_server_keys(made.server)
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    weak = rsa.generate_private_key(65537, 1024).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    client = bucket.server.client()
    prefix = bucket.url.split("/", 3)[3]
    cases = {
        "the private key is not the certificate's": (
            None,
            other + made.server.tls_cert.read_bytes(),
        ),
        "a host key of RSA 1024 bits": (weak, None),
    }
    for n, (reason, (host_key, pair)) in enumerate(cases.items()):
        where = f"{prefix}/case{n}/server"
        if host_key is not None:
            client.put_object(
                Bucket=bucket.name, Key=f"{where}/ssh_host_ed25519_key", Body=host_key
            )
        if pair is not None:
            client.put_object(Bucket=bucket.name, Key=f"{where}/tls.pem", Body=pair)
        node = node_config(
            tmp_path / f"node{n}", database_url, f"{bucket.url}/case{n}", bucket.endpoint_url
        )
        ensure_server_keys(node.server)
        before = {path: path.read_bytes() for path in (node.state_dir / "server").iterdir()}
        with pytest.raises(ListferryError, match=reason):
            share_server_keys(node)
        after = {path: path.read_bytes() for path in (node.state_dir / "server").iterdir()}
        assert after == before  # the node's own keys, untouched; nothing marked


def test_uploads_through_the_balancer_land_and_are_applied_with_one_host_key_and_certificate(
    ha: HA,
) -> None:
    sent = ha.root / "subscriber_list.csv"
    sent.write_bytes(list_text(30))
    done = ha.sftp(f"put {sent}\n")
    assert done.returncode == 0, done.stderr
    first = hashlib.sha256(list_text(30)).hexdigest()
    wait_for(lambda: ("applied", first) in ha.runs(), "the SFTP upload to be applied", 120)
    wait_for(  # the report, in storage (put after the run is indexed)
        lambda: any(name.endswith(".result.txt") for name in ha.home()), "the report", 30
    )

    second = ha.root / "ftps" / "subscriber_list.csv"
    second.parent.mkdir()
    second.write_bytes(list_text(50))
    done = ha.curl(second)
    assert done.returncode == 0, done.stderr
    assert "< 226" in done.stderr
    # The passive reply named the balancer (masquerade_address) and a port of a node's own.
    data_port = int(re.findall(rf"Connecting to {BALANCER} \S+ port (\d+)", done.stderr)[-1])
    assert data_port in ha.passive["a"] + ha.passive["b"]
    digest = hashlib.sha256(list_text(50)).hexdigest()
    wait_for(lambda: ("applied", digest) in ha.runs(), "the FTPS upload to be applied", 120)

    # Both nodes saw the customer, not the balancer.
    logs = ha.logs()
    assert f"event=login protocol=sftp tenant=acme ip={CUSTOMER}" in logs
    assert f"event=login protocol=ftps tenant=acme ip={CUSTOMER}" in logs
    # Whichever node answers, the customer sees the same host key and certificate; the
    # known_hosts line to hand the customer says where the balancer is.
    line = ha.worker.run(
        "server", "keys", "--known-hosts", "--host", BALANCER, "--port", str(ha.front["sftp"])
    )
    assert line.returncode == 0, line.stderr
    assert line.stdout.splitlines()[0] == ha.known_hosts().read_text().splitlines()[0]
    a, b = (ha.nodes[name].server for name in NODES)
    assert a.tls_cert.read_bytes() == b.tls_cert.read_bytes()
    for name, host in NODES.items():
        listed = ha.sftp("ls\n", host=host, port=ha.ports[name]["sftp"])
        assert listed.returncode == 0, listed.stderr  # StrictHostKeyChecking, one key
        answer = _ftps_login(host, ha.ports[name]["ftps"], CUSTOMER, PASSWORD, a.tls_cert)
        assert answer.startswith("230"), answer  # the certificate verified


def test_the_allow_list_holds_for_the_customers_real_address(ha: HA) -> None:
    sent = ha.root / "stranger" / "subscriber_list.csv"
    sent.parent.mkdir()
    sent.write_bytes(list_text(5))
    refused = ha.sftp(f"put {sent}\n", source=STRANGER)
    assert refused.returncode != 0
    refused = ha.curl(sent, source=STRANGER)
    assert "< 530" in refused.stderr
    logs = ha.logs()
    assert f"ip={STRANGER} method=publickey result=refused" in logs
    assert 'reason="address not in the tenant\'s allow list"' in logs


def test_a_proxy_header_from_a_client_is_refused_and_the_balancer_must_send_one(ha: HA) -> None:
    node = NODES["a"]
    spoofed = header_bytes(CUSTOMER, 40000, (node, ha.ports["a"]["sftp"]))
    # SFTP: the client names an allowed address itself.
    with socket.create_connection(
        (node, ha.ports["a"]["sftp"]), timeout=10, source_address=(SPOOFER, 0)
    ) as sock:
        sock.sendall(spoofed + b"SSH-2.0-OpenSSH_9.2\r\n")
        assert b"SSH-2.0-OpenSSH" not in _until_closed(sock)
    # FTPS: after the greeting, the header is refused.
    with socket.create_connection(
        (node, ha.ports["a"]["ftps"]), timeout=10, source_address=(SPOOFER, 0)
    ) as sock:
        assert sock.recv(1024).startswith(b"220")
        sock.sendall(header_bytes(CUSTOMER, 40000, (node, ha.ports["a"]["ftps"])))
        assert b"421 Connection refused" in _until_closed(sock)
    # From the balancer's address, a connection without a header is refused.
    with socket.create_connection(
        (node, ha.ports["a"]["ftps"]), timeout=10, source_address=(BALANCER, 0)
    ) as sock:
        sock.sendall(b"USER acme\r\n")
        assert _until_closed(sock) == b""
    refused = f"ip={SPOOFER} reason='a PROXY header from an address not in proxy_protocol_from'"
    log = wait_for(
        lambda: (log := ha.nodes["a"].log("serve")).count(refused) == 2 and log,
        "both refusals to be logged",
    )
    assert f"ip={SPOOFER} method" not in log  # never as far as a login
    assert f"ip={BALANCER} reason='from the balancer: no PROXY header (version 2)'" in log


def _until_closed(sock: socket.socket) -> bytes:
    """What the server sent until it closed the connection (within 10 s)."""
    got = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            return got
        if not data:
            return got
        got += data
    raise AssertionError(f"the server did not close the connection; it sent {got!r}")


def _ftps_login(host: str, port: int, source: str, password: str, cert: Path) -> str:
    """Log in over FTPS from ``source``; the server's answer to the login (or to the
    connection, when it was refused before)."""
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    client = ftplib.FTP_TLS(context=context, timeout=10)
    try:
        client.connect(host, port, source_address=(source, 0))
        client.auth()
        return client.login("acme", password)
    except ftplib.Error as exc:
        return str(exc)
    finally:
        client.close()


def test_failed_logins_on_one_node_block_the_address_on_the_other_until_unblocked(
    ha: HA,
) -> None:
    cert = ha.nodes["a"].server.tls_cert
    a, b = (NODES["a"], ha.ports["a"]["ftps"]), (NODES["b"], ha.ports["b"]["ftps"])
    for _ in range(4):  # block_after_failures, all on node A, straight to it
        answer = _ftps_login(*a, GUESSER, "wrong-password", cert)
        assert answer.startswith("530"), answer
    # Node B never saw this address fail, and turns it away.
    answer = wait_for(
        lambda: (got := _ftps_login(*b, GUESSER, PASSWORD, cert)).startswith("421") and got,
        "node B to refuse the address blocked on node A",
    )
    assert "blocked after repeated failed logins" in answer
    # So does the balancer's way in, whichever node takes it.
    for _ in range(2):
        answer = _ftps_login(BALANCER, ha.front["ftps"], GUESSER, PASSWORD, cert)
        assert "blocked" in answer, answer
    blocked = ha.worker.run("server", "blocked", "--json")
    assert [block["source"] for block in json.loads(blocked.stdout)] == [GUESSER]
    lifted = ha.worker.run("server", "unblock", GUESSER)
    assert lifted.returncode == 0, lifted.stderr
    for host, port in (a, b):
        wait_for(
            lambda host=host, port=port: "530" in _ftps_login(host, port, GUESSER, PASSWORD, cert),
            "the block to be lifted on every node (the address is not on the allow list: 530)",
        )


def test_a_node_killed_mid_upload_leaves_no_list_and_the_retry_lands_on_the_other(
    ha: HA,
) -> None:
    import paramiko

    wait_for(lambda: "subscriber_list.csv" not in ha.home(), "the lists applied to leave", 30)
    before = ha.runs()
    body = list_text(60_000)  # about 2.5 MB
    sock = socket.create_connection(
        (BALANCER, ha.front["sftp"]), timeout=10, source_address=(CUSTOMER, 0)
    )
    transport = paramiko.Transport(sock)
    transport.connect(username="acme", pkey=paramiko.PKey.from_path(ha.key))
    sftp = paramiko.SFTPClient.from_transport(transport)
    upload = sftp.open("subscriber_list.csv", "w")
    upload.write(body[: len(body) // 2])
    upload.flush()
    # The node holding the upload's first half in its spool dies.
    holder = wait_for(
        lambda: next((name for name, node in ha.nodes.items() if node.spool()), None),
        "the upload to reach a node's spool",
    )
    process = ha.nodes[holder].processes[0]  # its serve
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    with pytest.raises((OSError, EOFError, paramiko.SSHException)):
        upload.write(body[len(body) // 2 :])
        upload.close()
    transport.close()
    time.sleep(0.5)
    assert ha.runs() == before  # nothing of the cut upload became a list
    assert "subscriber_list.csv" not in ha.home()  # nor waits in storage to become one

    sent = ha.root / "retry" / "subscriber_list.csv"
    sent.parent.mkdir()
    sent.write_bytes(body)
    done = ha.sftp(f"put {sent}\n")
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(body).hexdigest()
    wait_for(lambda: ("applied", digest) in ha.runs(), "the retried upload to be applied", 120)
    assert ha.runs()[: len(before)] == before and len(ha.runs()) == len(before) + 1
    other = "b" if holder == "a" else "a"
    assert ha.nodes[other].log("serve").count("event=upload") >= 1
