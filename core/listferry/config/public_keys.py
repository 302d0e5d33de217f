"""OpenSSH public key lines, as ``authorized_keys`` holds them and ``ssh_keys`` takes them."""

from __future__ import annotations

import base64
import binascii

#: The key types OpenSSH writes start so (``ssh-ed25519``, ``ecdsa-sha2-nistp256``,
#: ``sk-ssh-ed25519@openssh.com``...).
KEY_TYPES = ("ssh-", "ecdsa-", "sk-")


def public_key_problem(line: str) -> str | None:
    """Why ``line`` is not an OpenSSH public key line (``TYPE BASE64 [COMMENT]``, the key's
    own blob naming ``TYPE`` as OpenSSH checks), or ``None``. A login compares the base64
    text, so a key that does not parse here could never log in."""
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith(KEY_TYPES):
        return "not an OpenSSH public key (a type such as ssh-ed25519, then the key)"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return f"not an OpenSSH public key: its {parts[0]} key is not base64"
    size = int.from_bytes(blob[:4], "big")
    if len(blob) < 4 + size or blob[4 : 4 + size] != parts[0].encode("ascii", "replace"):
        return f"not an OpenSSH public key: its key data is not a {parts[0]} key"
    return None
