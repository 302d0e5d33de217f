"""An SSH server's host key, checked against a known-hosts file and never taken on trust.

The file is OpenSSH's format (hashed host names too); a server on a port other than 22
is listed as ``[host]:port``. An unknown or changed key is refused with its type, its
SHA256 fingerprint (as ``ssh-keygen -lf`` shows it) and the line to add once the
fingerprint is checked with the server's owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import paramiko

from listferry_plugins.remote_home import Refused, RemoteHome

#: A known ``ssh-rsa`` key may be offered under any of these signature algorithms.
RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


def host_id(home: RemoteHome) -> str:
    """The host's name in a known-hosts file."""
    return home.host if home.port == 22 else f"[{home.host}]:{home.port}"


def read_known_hosts(path: Path) -> tuple[paramiko.HostKeys, list[paramiko.PKey]]:
    """The host keys in an OpenSSH known-hosts file, and the keys it marks ``@revoked``.

    Lines paramiko cannot read (a key type it does not know, ``@cert-authority``) are
    skipped rather than failing the whole file: a host whose line is skipped is simply
    not known, and refused.
    """
    known, revoked = paramiko.HostKeys(), []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return known, revoked
    except OSError as exc:
        raise Refused(f"{path}: cannot read the known-hosts file: {exc.strerror}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        marker, line = ("", line.strip()) if not line.startswith("@") else line.split(None, 1)
        if not line or line.startswith("#") or marker not in ("", "@revoked"):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
        except Exception:  # a malformed line: skipped, as OpenSSH skips it
            continue
        if entry is None or entry.key is None:
            continue
        if marker:
            revoked.append(entry.key)
            continue
        for name in entry.hostnames:
            if usable(name):
                known.add(name, entry.key.get_name(), entry.key)
    return known, revoked


def usable(name: str) -> bool:
    """A plain host name, or a hashed one (``|1|salt|hash``) whose salt is readable."""
    if not name.startswith("|1|"):
        return True
    try:
        paramiko.HostKeys.hash_host("x", name)
    except Exception:  # not base64: paramiko's lookup would fail on it
        return False
    return True


def known_keys(home: RemoteHome) -> dict[str, paramiko.PKey]:
    """Key type -> key, for the home's host in its known-hosts file (empty if none)."""
    if home.known_hosts is None:
        return {}
    known, _ = read_known_hosts(home.known_hosts)
    return dict(known.lookup(host_id(home)) or {})


def known_key_types(home: RemoteHome, offered: Sequence[str]) -> list[str]:
    """The host key algorithms to ask for: those of the known keys, in ``offered`` order."""
    wanted = set()
    for key_type in known_keys(home):
        wanted.update(RSA_ALGORITHMS if key_type == "ssh-rsa" else (key_type,))
    return [name for name in offered if name in wanted]


def describe(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def check_host_key(home: RemoteHome, key: paramiko.PKey) -> None:
    """Return when ``key`` is the known key of the home's host; else refuse it."""
    if home.known_hosts is not None:
        _, revoked = read_known_hosts(home.known_hosts)
        if any(key.asbytes() == bad.asbytes() for bad in revoked):
            raise Refused(
                f"{home.where}: the server's host key {describe(key)} is marked @revoked "
                f"in {home.known_hosts}; refused"
            )
    known = known_keys(home)
    if known.get(key.get_name()) is not None and known[key.get_name()].asbytes() == key.asbytes():
        return
    where = home.known_hosts or "a known-hosts file"
    line = f"{host_id(home)} {key.get_name()} {key.get_base64()}"
    if not known:
        raise Refused(
            f"{home.where}: the server's host key is not known: {describe(key)}. "
            f"Check this fingerprint with the server's owner, then add this line to "
            f"{where}{home.words['known_hosts']}: {line}"
        )
    listed = ", ".join(describe(k) for k in known.values())
    raise Refused(
        f"{home.where}: the server's host key has CHANGED: it offers {describe(key)}, but "
        f"{where} lists {listed}. This may be an attack; refused. If the server's owner "
        f"confirms the new key, replace the line for {host_id(home)} in {where} with: {line}"
    )
