"""What a customer needs to trust the built-in servers (``listferry server keys``).

The TLS certificate's SHA-256 fingerprint as ``openssl x509 -fingerprint -sha256``,
curl, lftp and FileZilla show it (``3B:1F:...``), and each SSH host key's as
``ssh-keygen -lf`` shows it (``SHA256:...``), with the ``known_hosts`` line a
customer's SFTP client needs. Everything is read from the files the ``[server]``
settings name; no name is looked up and nothing is contacted.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from listferry.config import ServerSettings
from listferry.errors import ConfigError
from listferry.times import iso

#: Listening addresses that are no address a customer can connect to.
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
#: What stands for the server's public name when the config only says ``0.0.0.0``.
PLACEHOLDER = "PUBLIC-NAME"
#: A certificate this close to its end is worth a warning.
EXPIRY_WARNING = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Certificate:
    """The first certificate of ``tls_cert`` (the server's own; a chain follows it)."""

    path: str
    sha256: str
    subject: str
    names: list[str]
    issuer: str
    self_signed: bool
    not_before: str
    not_after: str
    chain: int  # certificates in the file, the server's own included


@dataclass(frozen=True)
class HostKey:
    """An SSH host key, and the ``known_hosts`` line for the host customers connect to."""

    path: str
    type: str
    bits: int
    sha256: str
    known_hosts: str


def tls_fingerprint(certificate: x509.Certificate) -> str:
    """``AB:CD:...``: SHA-256 of the DER certificate, as ``openssl x509 -fingerprint``."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def ssh_fingerprint(blob: bytes) -> str:
    """``SHA256:...``: SHA-256 of the public key blob, unpadded base64, as ``ssh-keygen -lf``."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def known_hosts_host(host: str, port: int) -> str:
    """The host as a known-hosts file names it: ``[host]:port`` unless the port is 22."""
    return host if port == 22 else f"[{host}]:{port}"


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path} ([server] {key}) is missing: run 'listferry init' to make the server keys"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path} ([server] {key}): cannot read it: {exc.strerror}") from None


def _names(certificate: x509.Certificate) -> list[x509.DNSName | x509.IPAddress]:
    try:
        alt = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [name for name in alt.value if isinstance(name, x509.DNSName | x509.IPAddress)]


def names_host(certificate: x509.Certificate, host: str) -> bool:
    """Whether a client that checks names accepts ``certificate`` for ``host``."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    wanted = host.lower().rstrip(".")
    for name in _names(certificate):
        if isinstance(name, x509.IPAddress):
            if name.value == address:
                return True
            continue
        pattern = name.value.lower().rstrip(".")
        if address is None and (
            pattern == wanted
            or (pattern.startswith("*.") and wanted.partition(".")[2] == pattern[2:])
        ):
            return True
    return False


def read_certificate(cert: Path, key: Path, host: str | None) -> tuple[Certificate, list[str]]:
    """The server's certificate, and what an operator should know about it."""
    try:
        chain = x509.load_pem_x509_certificates(_read(cert, "tls_cert"))
    except ValueError:
        raise ConfigError(f"{cert} ([server] tls_cert): not a PEM certificate") from None
    own = chain[0]
    warnings = []
    now = datetime.datetime.now(datetime.UTC)
    if own.not_valid_after_utc < now:
        warnings.append(f"{cert}: the certificate expired on {_when(own.not_valid_after_utc)}")
    elif own.not_valid_after_utc - now < EXPIRY_WARNING:
        warnings.append(f"{cert}: the certificate expires on {_when(own.not_valid_after_utc)}")
    try:
        private = serialization.load_pem_private_key(_read(key, "tls_key"), None)
    except (ValueError, TypeError):
        warnings.append(f"{key}: not an unencrypted PEM private key; the servers cannot use it")
    else:
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if private.public_key().public_bytes(*spki) != own.public_key().public_bytes(*spki):
            warnings.append(
                f"{key} is not the key of {cert}: the servers cannot use this pair (a running "
                "server keeps its last good one)"
            )
    names = [str(name.value) for name in _names(own)]
    if host is not None and not names_host(own, host):
        warnings.append(
            f"the certificate does not name {host} (it names {', '.join(names) or 'nothing'}): "
            "clients that check names (curl, lftp, FileZilla) refuse it; use a certificate "
            "for that name ([server] tls_cert and tls_key)"
        )
    found = Certificate(
        path=str(cert),
        sha256=tls_fingerprint(own),
        subject=own.subject.rfc4514_string(),
        names=names,
        issuer=own.issuer.rfc4514_string(),
        self_signed=own.issuer == own.subject,
        not_before=_when(own.not_valid_before_utc),
        not_after=_when(own.not_valid_after_utc),
        chain=len(chain),
    )
    return found, warnings


def _when(moment: datetime.datetime) -> str:
    return iso(moment)


def read_host_key(path: Path, host: str, port: int) -> HostKey:
    """The SSH host key in ``path`` (OpenSSH or PEM private key), as customers see it."""
    data = _read(path, "ssh_host_key")
    unusable = ConfigError(f"{path} ([server] ssh_host_key): not an unencrypted SSH private key")
    try:
        private = serialization.load_ssh_private_key(data, None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            private = serialization.load_pem_private_key(data, None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise unusable from None
    public = private.public_key()
    try:
        line = public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    except ValueError:  # a key type SSH has no name for
        raise unusable from None
    kind, encoded = line.decode().split()[:2]
    if isinstance(public, ed25519.Ed25519PublicKey):
        bits = 256
    elif isinstance(public, ec.EllipticCurvePublicKey):
        bits = public.curve.key_size
    else:
        bits = public.key_size
    return HostKey(
        path=str(path),
        type=kind,
        bits=bits,
        sha256=ssh_fingerprint(base64.b64decode(encoded)),
        known_hosts=f"{known_hosts_host(host, port)} {kind} {encoded}",
    )


def server_keys(
    settings: ServerSettings, host: str | None = None, require_host: bool = False
) -> dict[str, Any]:
    """What ``server keys --json`` prints. ``host``: the name customers connect to
    (default: ``[server] host``; when that is ``0.0.0.0``, a placeholder, or an error
    with ``require_host``)."""
    named = host or (settings.host if settings.host not in WILDCARDS else None)
    if named is None and require_host:
        raise ConfigError(
            f"[server] host is {settings.host or 'empty'} (every address): give the name "
            "customers connect to with --host NAME"
        )
    certificate, warnings = read_certificate(settings.tls_cert, settings.tls_key, named)
    host_key = read_host_key(settings.ssh_host_key, named or PLACEHOLDER, settings.sftp_port)
    if named is None:
        warnings.append(
            f"[server] host is {settings.host or 'empty'} (every address): replace "
            f"{PLACEHOLDER} with the name customers connect to, or run "
            "'listferry server keys --host NAME'"
        )
    return {
        "host": named,
        "ftp_port": settings.ftp_port,
        "ftps_port": settings.ftps_port,
        "sftp_port": settings.sftp_port,
        "tls_certificate": asdict(certificate),
        "ssh_host_keys": [asdict(host_key)],
        "warnings": warnings,
    }


SSH_LABELS = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA", "ssh-dss": "DSA"}


def describe(keys: dict[str, Any]) -> list[str]:
    """``keys`` (as :func:`server_keys` returns it) as the lines ``server keys`` prints."""
    cert = keys["tls_certificate"]
    if cert["self_signed"]:
        issuer = "self-signed: customers trust this file (curl --cacert, lftp ssl:ca-file) or "
        issuer += "this fingerprint"
    else:
        issuer = cert["issuer"]
    lines = [
        f"TLS certificate (FTPS, and FTP after AUTH TLS): {cert['path']}",
        f"  SHA-256 fingerprint: {cert['sha256']}",
        f"  subject: {cert['subject']}",
        f"  names: {', '.join(cert['names']) or 'none'}",
        f"  issuer: {issuer}",
        f"  valid until: {cert['not_after']}",
    ]
    if cert["chain"] > 1:
        lines.append(f"  chain: {cert['chain'] - 1} more certificate(s) after it in the file")
    for key in keys["ssh_host_keys"]:
        label = SSH_LABELS.get(key["type"], "ECDSA" if key["type"].startswith("ecdsa") else "")
        lines += [
            f"SSH host key (SFTP): {key['path']}",
            f"  fingerprint: {key['sha256']} ({label or key['type']}, {key['bits']} bits)",
            f"  known_hosts: {key['known_hosts']}",
        ]
    return lines
