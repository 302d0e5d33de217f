"""The servers' own keys: a self-signed TLS certificate and an SSH host key.

``listferry init`` makes them when they are missing; an operator may point the
``[server]`` settings at their own instead. Private keys are written mode 600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from listferry.config import ServerSettings


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_tls_certificate(cert: Path, key: Path, days: int = 3650) -> None:
    """A self-signed certificate for this host's name, localhost and 127.0.0.1."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = socket.gethostname() or "localhost"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    alt = x509.SubjectAlternativeName(
        [
            x509.DNSName(name),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(alt, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    _write_private(
        key,
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def make_ssh_host_key(path: Path) -> None:
    """An Ed25519 host key in OpenSSH format, with its ``.pub`` beside it."""
    private = ed25519.Ed25519PrivateKey.generate()
    _write_private(
        path,
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    path.with_name(path.name + ".pub").write_bytes(public + b" listferry-host-key\n")


def public_host_key(private: bytes, where: str) -> bytes:
    """The ``.pub`` line of an OpenSSH private host key (unencrypted): Ed25519, ECDSA, or
    RSA of 3072 bits or more; anything else is one :class:`ListferryError` line."""
    from listferry.errors import ListferryError

    try:
        key = serialization.load_ssh_private_key(private, password=None)
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ListferryError(f"{where}: not an unencrypted OpenSSH private key: {exc}") from None
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 3072:
        raise ListferryError(f"{where}: a host key of RSA {key.key_size} bits: use Ed25519")
    if not isinstance(
        key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ):
        raise ListferryError(f"{where}: a host key of {type(key).__name__}: use Ed25519")
    return public + b" listferry-host-key\n"


def check_tls_pair(key_pem: bytes, chain_pem: bytes, where: str) -> None:
    """That ``key_pem`` is the private key of the first certificate of ``chain_pem``; one
    :class:`ListferryError` line saying what is wrong when not."""
    from listferry.errors import ListferryError

    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        chain = x509.load_pem_x509_certificates(chain_pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ListferryError(f"{where}: not a private key and certificates: {exc}") from None
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(*der) != key.public_key().public_bytes(*der):
        raise ListferryError(f"{where}: the private key is not the certificate's")


def ensure_server_keys(server: ServerSettings) -> list[Path]:
    """Make whichever of the servers' keys is missing; return the files made."""
    made = []
    if not server.tls_cert.exists() and not server.tls_key.exists():
        make_tls_certificate(server.tls_cert, server.tls_key)
        made += [server.tls_cert, server.tls_key]
    if not server.ssh_host_key.exists():
        make_ssh_host_key(server.ssh_host_key)
        made.append(server.ssh_host_key)
    return made
