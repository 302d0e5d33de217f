"""The FTP servers' TLS certificate and key, read again when either changes on disk.

Every new connection asks :meth:`TLSFiles.context` for its TLS context. The two files
are looked at with ``stat`` (device, inode, size, modification time; symbolic links are
followed, so a renewal that points certbot's ``live/`` links at new files counts) and,
when that changed, read once and checked: a certificate (its chain may follow it, as in
Let's Encrypt's ``fullchain.pem``) and the unencrypted private key that belongs to it.
A pair that cannot be used (a half-written or missing file, a key that is not the
certificate's) is logged once, in one line, and the last good pair stays until the files
change again. A session keeps the context it started with, so its data connections can
resume its TLS session.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from weakref import WeakValueDictionary

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL

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


def make_context(pair: Pair, session_id: bytes) -> SSL.Context:
    """A server context for ``pair``: TLS 1.2 or newer, no compression."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION)
    context.set_session_id(session_id)
    try:
        context.use_certificate(pair.chain[0])
        for issuer in pair.chain[1:]:
            context.add_extra_chain_cert(issuer)
        context.use_privatekey(pair.key)
        context.check_privatekey()
    except (SSL.Error, TypeError, ValueError) as exc:
        raise Unusable(f"OpenSSL cannot use the pair: {exc}") from None
    return context


class TLSFiles:
    """One certificate and key pair, watched; a context per TLS session id, made from the
    last good pair. Thread-safe: connections are accepted in more than one thread."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self._lock = threading.Lock()
        self._seen: Signature | None = None
        self._pair: Pair | None = None
        self._problem = ""
        self._contexts: dict[bytes, SSL.Context] = {}

    def context(self, session_id: bytes) -> SSL.Context:
        """The context for a new connection. Raises :class:`ListferryError` only while no
        pair has ever been good (at the start of the server)."""
        with self._lock:
            self._refresh(session_id)
            if self._pair is None:
                raise ListferryError(
                    f"{self.cert}, {self.key}: not a usable TLS certificate and key "
                    f"({self._problem})"
                )
            if session_id not in self._contexts:  # a server that started after a bad renewal
                self._contexts[session_id] = make_context(self._pair, session_id)
            return self._contexts[session_id]

    def _refresh(self, session_id: bytes) -> None:
        now = signature(self.cert, self.key)
        if now == self._seen:
            return
        self._seen = now
        try:
            pair = read_pair(self.cert, self.key)
            contexts = {sid: make_context(pair, sid) for sid in {*self._contexts, session_id}}
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
        self._pair, self._contexts = pair, contexts
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
