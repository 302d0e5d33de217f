"""What customers trust: ``listferry server keys``, and the FTPS certificate a running
server picks up from disk, against real openssl, ssh-keygen and ftplib on 127.0.0.1."""

from __future__ import annotations

import datetime
import ftplib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_crash import listferry_command

from listferry.config.passwords import hash_password
from listferry.serve.keys import make_tls_certificate
from listferry.testing import Sandbox
from listferry_plugins.ftp.transport import TlsFtp

PASSWORD = "s3cret-Passw0rd"

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")
Issued = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def run(ws: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, so stdout and stderr are seen apart."""
    return subprocess.run(
        [*listferry_command(), "--config", str(ws.config_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def init(ws: Sandbox, server: str = "") -> None:
    if server:
        ws.config_path.write_text(ws.config_path.read_text() + f"\n[server]\n{server}\n")
    assert run(ws, "init").returncode == 0


def openssl_fingerprint(cert: Path) -> str:
    """``AB:CD:...`` as ``openssl x509 -fingerprint -sha256`` prints it (else computed)."""
    if shutil.which("openssl") is None:
        der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        return hashlib.sha256(der).digest().hex(":").upper()
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(cert)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().split("=", 1)[1]


def unverified() -> ssl.SSLContext:
    """A client context that takes any certificate, to see which one is served."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def served_fingerprint(port: int, cafile: Path | None = None) -> str:
    """The SHA-256 fingerprint of the certificate the server at ``port`` offers after
    AUTH TLS; with ``cafile``, the certificate must also verify against it."""
    context = unverified() if cafile is None else ssl.create_default_context(cafile=str(cafile))
    client = ftplib.FTP_TLS(context=context, timeout=10)
    try:
        client.connect("127.0.0.1", port)
        client.auth()
        der = client.sock.getpeercert(binary_form=True)
    finally:
        client.close()
    return hashlib.sha256(der).digest().hex(":").upper()


def issue(name: str, issuer: Issued | None = None, ca: bool = False, days: int = 90) -> Issued:
    """A certificate for ``name`` (and 127.0.0.1), signed by ``issuer`` (else by itself)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    signer_name, signer_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names = [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer_key, hashes.SHA256()), key


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest().hex(":").upper()


def replace_pair(cert: Path, key: Path) -> str:
    """Put a new self-signed pair where ``cert`` and ``key`` are, each file replaced
    whole, as a renewal does; return the new certificate's fingerprint."""
    fresh = cert.parent / "fresh"
    fresh.mkdir(exist_ok=True)
    for old in fresh.iterdir():
        old.unlink()
    make_tls_certificate(fresh / "cert.pem", fresh / "key.pem")
    os.replace(fresh / "key.pem", key)
    os.replace(fresh / "cert.pem", cert)
    return openssl_fingerprint(cert)


# -- listferry server keys ---------------------------------------------------------------


@needs_ssh_keygen
def test_server_keys_prints_the_fingerprints_openssl_and_ssh_keygen_print(ws: Sandbox) -> None:
    init(ws)
    server = ws.app().config.server
    shown = run(ws, "server", "keys")
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    lines = shown.stdout.splitlines()
    assert f"TLS certificate (FTPS, and FTP after AUTH TLS): {server.tls_cert}" in lines
    assert f"  SHA-256 fingerprint: {openssl_fingerprint(server.tls_cert)}" in lines
    assert "  names: " + ", ".join([socket.gethostname(), "localhost", "127.0.0.1"]) in lines

    keygen = subprocess.run(
        ["ssh-keygen", "-lf", str(server.ssh_host_key)], capture_output=True, text=True, check=True
    ).stdout.split()  # "256 SHA256:... comment (ED25519)"
    assert f"  fingerprint: {keygen[1]} (ED25519, 256 bits)" in lines
    kind, blob = Path(f"{server.ssh_host_key}.pub").read_text().split()[:2]
    assert f"  known_hosts: [127.0.0.1]:2222 {kind} {blob}" in lines

    only = run(ws, "server", "keys", "--known-hosts")
    assert only.stdout == f"[127.0.0.1]:2222 {kind} {blob}\n"
    data = json.loads(run(ws, "server", "keys", "--json").stdout)
    assert data["tls_certificate"]["sha256"] == openssl_fingerprint(server.tls_cert)
    assert data["tls_certificate"]["self_signed"] is True
    assert data["ssh_host_keys"][0]["sha256"] == keygen[1]
    assert (data["host"], data["sftp_port"], data["warnings"]) == ("127.0.0.1", 2222, [])


def shape(value: object) -> object:
    """The keys of ``value``'s objects, all the way down."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    return type(value).__name__


def test_the_json_the_operator_guide_shows_is_what_server_keys_prints(ws: Sandbox) -> None:
    init(ws)
    guide = (Path(__file__).parent.parent / "docs" / "operator.md").read_text()
    shown = re.search(r"as `server keys --json` prints them.*?```json\n(.*?)```", guide, re.S)
    assert shown is not None
    printed = json.loads(run(ws, "server", "keys", "--json").stdout)
    assert shape(json.loads(shown[1])) == shape(printed)


def test_serve_show_keys_prints_the_same_and_exits_without_serving(ws: Sandbox) -> None:
    init(ws, 'sftp_port = 22\nhost = "0.0.0.0"')
    shown = run(ws, "serve", "--show-keys", "--host", "files.example.net")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == run(ws, "server", "keys", "--host", "files.example.net").stdout
    assert "listening" not in shown.stdout
    blob = Path(f"{ws.app().config.server.ssh_host_key}.pub").read_text().split()[1]
    assert f"  known_hosts: files.example.net ssh-ed25519 {blob}" in shown.stdout  # port 22


def test_a_wildcard_host_needs_the_public_name(ws: Sandbox) -> None:
    init(ws, 'host = "0.0.0.0"')
    shown = run(ws, "server", "keys")
    assert shown.returncode == 0
    assert "  known_hosts: [PUBLIC-NAME]:2222 ssh-ed25519 " in shown.stdout
    assert "replace PUBLIC-NAME with the name customers connect to" in shown.stderr

    refused = run(ws, "server", "keys", "--known-hosts")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.startswith("Error: [server] host is 0.0.0.0")
    assert "--host NAME" in refused.stderr and len(refused.stderr.splitlines()) == 1

    named = run(ws, "server", "keys", "--known-hosts", "--host", "files.example.net")
    assert named.returncode == 0
    assert named.stdout.startswith("[files.example.net]:2222 ssh-ed25519 AAAA")
    assert "the certificate does not name files.example.net" in named.stderr


@pytest.mark.parametrize("command", [("server", "keys"), ("serve", "--show-keys")])
def test_missing_keys_are_one_line_saying_to_run_init_and_exit_2(
    ws: Sandbox, command: tuple[str, ...]
) -> None:
    done = run(ws, *command)
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("Error: ") and "tls-cert.pem ([server] tls_cert) is missing" in line
    assert "run 'listferry init'" in line


def test_server_keys_warns_of_a_key_that_is_not_the_certificates_and_an_expired_one(
    ws: Sandbox, tmp_path: Path
) -> None:
    cert, _ = issue("files.example.net", days=-1)
    _, other_key = issue("files.example.net")
    (tmp_path / "cert.pem").write_bytes(pem(cert))
    (tmp_path / "key.pem").write_bytes(key_pem(other_key))
    init(ws, f'tls_cert = "{tmp_path / "cert.pem"}"\ntls_key = "{tmp_path / "key.pem"}"')
    data = json.loads(run(ws, "server", "keys", "--json").stdout)
    assert data["tls_certificate"]["sha256"] == fingerprint(cert)
    [expired, mismatch] = data["warnings"]
    assert "the certificate expired on" in expired
    assert f"{tmp_path / 'key.pem'} is not the key of {tmp_path / 'cert.pem'}" in mismatch


# -- a CA's certificate, renewed on disk --------------------------------------------------


def certbot_layout(folder: Path, issuer: Issued, generation: int) -> Issued:
    """``archive/`` files and ``live/`` symbolic links, as certbot keeps them; each
    generation is new files and the links repointed."""
    leaf = issue("localhost", issuer)
    archive, live = folder / "archive", folder / "live"
    archive.mkdir(parents=True, exist_ok=True)
    live.mkdir(exist_ok=True)
    (archive / f"fullchain{generation}.pem").write_bytes(pem(leaf[0]) + pem(issuer[0]))
    (archive / f"privkey{generation}.pem").write_bytes(key_pem(leaf[1]))
    for name in ("privkey", "fullchain"):
        link = live / f"{name}.pem.new"
        link.symlink_to(f"../archive/{name}{generation}.pem")
        os.replace(link, live / f"{name}.pem")
    return leaf


def test_a_ca_chain_is_served_whole_and_a_certbot_renewal_is_picked_up_without_a_restart(
    ws: Sandbox, served, tmp_path: Path, events
) -> None:
    root = issue("Test Root CA", ca=True, days=3650)
    intermediate = issue("Test Intermediate R1", root, ca=True, days=1000)
    (tmp_path / "root.pem").write_bytes(pem(root[0]))
    first = certbot_layout(tmp_path / "le", intermediate, 1)
    live = tmp_path / "le" / "live"
    init(ws, f'tls_cert = "{live / "fullchain.pem"}"\ntls_key = "{live / "privkey.pem"}"')

    data = json.loads(run(ws, "server", "keys", "--json").stdout)
    assert data["tls_certificate"]["sha256"] == fingerprint(first[0])
    assert data["tls_certificate"]["path"] == str(live / "fullchain.pem")
    assert (data["tls_certificate"]["chain"], data["tls_certificate"]["self_signed"]) == (2, False)
    assert data["tls_certificate"]["issuer"] == "CN=Test Intermediate R1"

    server = ws.app().config.server
    with served(["ftps"], tls_cert=server.tls_cert, tls_key=server.tls_key) as s:
        port = s.ports["ftps"]
        # Verifying against the root alone needs the intermediate from the server.
        assert served_fingerprint(port, tmp_path / "root.pem") == fingerprint(first[0])
        second = certbot_layout(tmp_path / "le", intermediate, 2)
        assert served_fingerprint(port, tmp_path / "root.pem") == fingerprint(second[0])
    loaded = events("certificate")
    assert len(loaded) == 2 and all("result=loaded" in line for line in loaded)
    assert f"sha256={fingerprint(second[0])}" in loaded[1]


def test_a_running_ftps_server_serves_a_renewed_certificate_to_new_connections(
    ws: Sandbox, served
) -> None:
    init(ws)
    ws.add_tenant("acme", password_hash=hash_password(PASSWORD))
    server = ws.app().config.server
    before = openssl_fingerprint(server.tls_cert)
    with served(["ftps"]) as s:
        port = s.ports["ftps"]
        assert served_fingerprint(port, server.tls_cert) == before
        session = TlsFtp(context=unverified(), timeout=10)  # resumes its session for data
        session.connect("127.0.0.1", port)
        session.login("acme", PASSWORD)
        session.prot_p()

        after = replace_pair(server.tls_cert, server.tls_key)
        assert after != before
        assert served_fingerprint(port, server.tls_cert) == after  # verified by the new file
        # A session that began before keeps its certificate, for its data connections too.
        data = session.transfercmd("STOR subscriber_list.csv")
        data_cert = data.getpeercert(binary_form=True)
        data.sendall(b"email\r\na@example.org\r\n")
        data.unwrap()
        data.close()
        session.voidresp()
        session.quit()
    assert hashlib.sha256(data_cert).digest().hex(":").upper() == before
    assert (ws.home / "subscriber_list.csv").exists()


def cut_the_new_certificate_short(cert: Path, key: Path) -> None:
    data = cert.read_bytes()
    replace_pair(cert, key)
    cert.write_bytes(cert.read_bytes() + data[: len(data) // 2])  # a chain half written


def write_a_certificate_for_another_key(cert: Path, key: Path) -> None:
    other = cert.parent / "other"
    other.mkdir()
    make_tls_certificate(other / "cert.pem", other / "key.pem")
    os.replace(other / "cert.pem", cert)


def truncate_the_certificate(cert: Path, key: Path) -> None:
    replace_pair(cert, key)
    cert.write_bytes(cert.read_bytes()[:100])


def remove_the_key(cert: Path, key: Path) -> None:
    replace_pair(cert, key)
    key.unlink()


def truncate_the_key(cert: Path, key: Path) -> None:
    replace_pair(cert, key)
    key.write_bytes(key.read_bytes()[:40])


@pytest.mark.parametrize(
    "damage",
    [
        cut_the_new_certificate_short,
        truncate_the_certificate,
        write_a_certificate_for_another_key,
        remove_the_key,
        truncate_the_key,
    ],
)
def test_a_bad_renewal_keeps_the_last_good_pair_and_is_logged_once(
    ws: Sandbox, served, events, damage: Callable[[Path, Path], None]
) -> None:
    init(ws)
    server = ws.app().config.server
    good = openssl_fingerprint(server.tls_cert)
    with served(["ftp", "ftps"]) as s:
        damage(server.tls_cert, server.tls_key)
        for _ in range(2):
            assert served_fingerprint(s.ports["ftps"]) == good
            assert served_fingerprint(s.ports["ftp"]) == good
        [logged] = [line for line in events("certificate") if "result=unusable" in line]
        assert f"serving={good}" in logged
        renewed = replace_pair(server.tls_cert, server.tls_key)
        assert served_fingerprint(s.ports["ftps"]) == renewed
        assert served_fingerprint(s.ports["ftp"]) == renewed
