"""The FTP servers' TLS certificate and key, read again when either changes on disk.

Every new connection asks :meth:`TLSFiles.context` for its TLS context. The two files
are looked at with ``stat`` (device, inode, size, modification time; symbolic links are
followed, so a renewal that points certbot's ``live/`` links at new files counts) and,
when that changed, read once and checked: a certificate (its chain may follow it, as in
Let's Encrypt's ``fullchain.pem``) and the unencrypted private key that belongs to it.
A pair that cannot be used (a half-written or missing file, a key that is not the
certificate's) is logged once, in one line, and the last good pair stays until the files
change again. Each control connection gets a context of its own (its own session cache,
ticket keys and session id context), kept for its data connections: a data connection
can resume that connection's TLS session and no other (:func:`resumed` tells).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from weakref import WeakValueDictionary

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL
from OpenSSL._util import lib as openssl

from listferry import ListferryError
from listferry.serve.fingerprints import tls_fingerprint
from listferry.serve.log import event

Signature = tuple[tuple[int, int, int, int] | str, ...]
SPKI = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


class Unusable(Exception):
    """The files do not make a usable pair; the message says why, in one line."""


@dataclass(frozen=True)
class Pair:
    """A certificate (with the chain after it) and its private key, as read once."""

    chain: list[x509.Certificate]
    key: PrivateKeyTypes

    @property
    def sha256(self) -> str:
        return tls_fingerprint(self.chain[0])


def signature(*paths: Path) -> Signature:
    """What changes when a file is replaced or rewritten; a file that cannot be seen
    counts as its error."""
    found: list[tuple[int, int, int, int] | str] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError as exc:
            found.append(f"{path}: {exc.strerror}")
            continue
        found.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


def read_pair(cert: Path, key: Path) -> Pair:
    """Read and check the pair; :class:`Unusable` says what is wrong with it."""
    try:
        cert_data, key_data = cert.read_bytes(), key.read_bytes()
    except OSError as exc:
        raise Unusable(f"cannot read {exc.filename}: {exc.strerror}") from None
    # A certificate cut off after the first one would be read as a shorter chain.
    if cert_data.count(b"-----BEGIN ") != cert_data.count(b"-----END "):
        raise Unusable(f"{cert} is incomplete (half written?)")
    try:
        chain = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise Unusable(f"{cert} holds no readable PEM certificate (half written?)") from None
    try:
        private = serialization.load_pem_private_key(key_data, None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise Unusable(f"{key} is not an unencrypted PEM private key (half written?)") from None
    if private.public_key().public_bytes(*SPKI) != chain[0].public_key().public_bytes(*SPKI):
        raise Unusable(f"{key} is not the key of {cert}")
    return Pair(chain, private)


def make_context(pair: Pair) -> SSL.Context:
    """A server context for ``pair``: TLS 1.2 or newer, no compression, a session cache,
    and session tickets and a session id context that no other context shares."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION)
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    context.set_session_id(secrets.token_bytes(16))
    try:
        context.use_certificate(pair.chain[0])
        for issuer in pair.chain[1:]:
            context.add_extra_chain_cert(issuer)
        context.use_privatekey(pair.key)
        context.check_privatekey()
    except (SSL.Error, TypeError, ValueError) as exc:
        raise Unusable(f"OpenSSL cannot use the pair: {exc}") from None
    return context


def resumed(connection: SSL.Connection) -> bool:
    """Whether ``connection``'s handshake resumed a session rather than making a new one
    (pyOpenSSL does not wrap OpenSSL's ``SSL_session_reused``)."""
    return bool(openssl.SSL_session_reused(connection._ssl))


class TLSFiles:
    """One certificate and key pair, watched; a new context per control connection, made
    from the last good pair. Thread-safe: connections are accepted in more than one thread."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self._lock = threading.Lock()
        self._seen: Signature | None = None
        self._pair: Pair | None = None
        self._problem = ""

    def context(self) -> SSL.Context:
        """A new context for a new control connection. Raises :class:`ListferryError` only
        while no pair has ever been good (at the start of the server)."""
        with self._lock:
            self._refresh()
            if self._pair is None:
                raise ListferryError(
                    f"{self.cert}, {self.key}: not a usable TLS certificate and key "
                    f"({self._problem})"
                )
            pair = self._pair
        return make_context(pair)

    def _refresh(self) -> None:
        now = signature(self.cert, self.key)
        if now == self._seen:
            return
        self._seen = now
        try:
            pair = read_pair(self.cert, self.key)
            make_context(pair)  # OpenSSL takes it
        except Unusable as exc:
            self._problem = str(exc)
            if self._pair is not None:
                event(
                    "certificate",
                    level=logging.WARNING,
                    result="unusable",
                    cert=self.cert,
                    reason=str(exc),
                    serving=self._pair.sha256,
                )
            return
        self._pair = pair
        event(
            "certificate",
            result="loaded",
            cert=self.cert,
            sha256=pair.sha256,
            expires=pair.chain[0].not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )


_watched: WeakValueDictionary[tuple[Path, Path], TLSFiles] = WeakValueDictionary()
_watched_lock = threading.Lock()


def watched(cert: Path, key: Path) -> TLSFiles:
    """The process's one :class:`TLSFiles` for this pair, shared by the FTP and FTPS
    servers so that a bad renewal is logged once; it goes when they do."""
    where = (Path(os.path.abspath(cert)), Path(os.path.abspath(key)))
    with _watched_lock:
        found = _watched.get(where)
        if found is None:
            found = _watched[where] = TLSFiles(*where)
        return found
