"""OpenPGP: lists that arrive encrypted, and return files encrypted to the customer.

A list named ``*.pgp``, ``*.gpg`` or ``*.asc`` is decrypted with the tenant's secret key
(``pgp_key_file``, its passphrase in the environment variable ``pgp_passphrase_env``)
into the tenant's private work folder before it is read, and the plaintext is removed
when the run ends. A file that does not decrypt (another key, damaged, not OpenPGP) is
voided with the reason. With ``pgp_recipient_key_file`` (the customer's public key),
return files are encrypted to it and get ``.pgp`` on their name.

GnuPG does the work (through python-gnupg and the ``gpg`` program), in a keyring made
for each decryption or encryption in a folder of its own (mode 700) in the system's
temporary folder, and removed with its agent after it: keys are imported from the files
each time, so replacing a key file is all it takes to rotate a key, and no secret key
stays behind (the keyring of a run killed meanwhile is removed by the next). Not below
the state folder: GnuPG's agent listens on a socket in the keyring's folder, and a
socket's path may not be longer than 107 bytes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from listferry.errors import ConfigError, ListferryError, Void, secret_from_env

if TYPE_CHECKING:
    from listferry.config import Tenant


@contextmanager
def _gpg(tenant: Tenant) -> Iterator[Any]:
    """A GnuPG keyring of its own for one operation; removed, with its agent, after."""
    try:
        import gnupg
    except ImportError:
        raise ListferryError(
            "OpenPGP needs python-gnupg: pip install python-gnupg (and the gpg program)"
        ) from None
    if shutil.which("gpg") is None:
        raise ListferryError("OpenPGP needs the gpg program (Debian: apt install gnupg)")
    # the keyring of earlier versions, with the secret key imported into it: not needed
    shutil.rmtree(tenant.state_dir / "gnupg", ignore_errors=True)
    _remove_stale_keyrings()
    # mode 700; the process's number in its name says whose it is
    home = tempfile.mkdtemp(prefix=f"{KEYRING}{os.getpid()}-", dir=_short_temp())
    try:
        gpg = gnupg.GPG(gnupghome=home, options=["--batch", "--no-tty", "--trust-model", "always"])
        try:
            yield gpg
        finally:
            _stop_agent(gpg)
    finally:
        shutil.rmtree(home, ignore_errors=True)


#: How the keyrings' folders are named in the temporary folder: ``listferry-gpg-PID-...``.
KEYRING = "listferry-gpg-"
#: The longest temporary folder taken: its keyring's agent socket must fit in 107 bytes.
SHORT = 60


def _short_temp() -> str:
    """The system's temporary folder, or /tmp when its path is too long for a socket."""
    folder = tempfile.gettempdir()
    return folder if len(folder) <= SHORT else "/tmp"


def _remove_stale_keyrings() -> None:
    """Remove the keyrings (and stop the agents) of runs that were killed meanwhile (a
    ``sync_timeout``, SIGKILL): a keyring holds the tenant's secret key."""
    for folder in Path(_short_temp()).glob(f"{KEYRING}*-*"):
        try:
            pid = int(folder.name.removeprefix(KEYRING).split("-", 1)[0])
            os.kill(pid, 0)
            continue  # its process is alive
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):  # not ours, or another user's
            continue
        _stop_agent_at(str(folder))
        shutil.rmtree(folder, ignore_errors=True)


def _import(gpg: Any, path: str, what: str, secret: bool) -> list[str]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the tenant's {what}: {exc.strerror}") from None
    result = gpg.import_keys(data)
    fingerprints = [f for f in result.fingerprints if f]
    if not fingerprints:
        raise ConfigError(f"{path}: no OpenPGP key in the tenant's {what}")
    if (
        secret
        and not result.sec_imported
        and not any(key["fingerprint"] in fingerprints for key in gpg.list_keys(secret=True))
    ):
        raise ConfigError(f"{path}: the tenant's {what} holds no secret key")
    return fingerprints


def _passphrase(tenant: Tenant) -> str | None:
    return secret_from_env(tenant.pgp_passphrase_env, "pgp_passphrase_env")


def _stop_agent(gpg: Any) -> None:
    """GnuPG leaves an agent running per keyring: stop it, so none outlives the run."""
    _stop_agent_at(gpg.gnupghome)


def _stop_agent_at(home: str) -> None:
    import subprocess

    if shutil.which("gpgconf"):
        subprocess.run(
            ["gpgconf", "--homedir", home, "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
            timeout=30,
        )


def decrypt(tenant: Tenant, source: Path, target: Path, name: str) -> None:
    """Decrypt ``source`` (received as ``name``) into ``target``; a :class:`Void` if it
    does not decrypt, naming why. A tenant without ``pgp_key_file`` is the operator's to
    fix, not the file's: a :class:`ListferryError`, so the run fails and the file waits."""
    if not tenant.pgp_key_file:
        raise ListferryError(
            f"{name}: the file is encrypted, and no pgp_key_file is set for {tenant.name}"
        )
    with _gpg(tenant) as gpg:
        _decrypt(gpg, tenant, source, target, name)


def _decrypt(gpg: Any, tenant: Tenant, source: Path, target: Path, name: str) -> None:
    _import(gpg, tenant.pgp_key_file, "pgp_key_file", secret=True)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with source.open("rb") as f:
        result = gpg.decrypt_file(f, passphrase=_passphrase(tenant), output=str(target))
    if not result.ok:
        target.unlink(missing_ok=True)
        why = result.status or "not OpenPGP data"
        said = (result.stderr or "").lower()
        if "bad passphrase" in said:  # the operator's to fix: the file waits in the home
            raise ListferryError(f"{name}: the PGP passphrase for {tenant.name}'s key is wrong")
        if "no secret key" in said or why == "no secret key":
            why = "it was encrypted to another key than the tenant's"
        raise Void(f"{name}: the file does not decrypt: {why}")
    os.chmod(target, 0o600)


def encrypt(tenant: Tenant, source: Path, target: Path) -> None:
    """Encrypt ``source`` to the tenant's public key (``pgp_recipient_key_file``)."""
    with _gpg(tenant) as gpg:
        _encrypt(gpg, tenant, source, target)


def _encrypt(gpg: Any, tenant: Tenant, source: Path, target: Path) -> None:
    recipients = _import(
        gpg, tenant.pgp_recipient_key_file or "", "pgp_recipient_key_file", secret=False
    )
    with source.open("rb") as f:
        result = gpg.encrypt_file(f, recipients, output=str(target), armor=False)
    if not result.ok:
        target.unlink(missing_ok=True)
        raise ListferryError(f"encrypting the return file failed: {result.status}")
