"""OpenPGP: an encrypted list is decrypted with the tenant's key; return files are encrypted.

Real keys made by GnuPG (through python-gnupg) in the test's folder: the platform's key
for the tenant, with a passphrase, and the customer's own key pair, which encrypts the
list and decrypts the return file, as the customer's side would.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import csv_text, people

from listferry.testing import Sandbox

gnupg = pytest.importorskip("gnupg")
pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="needs the gpg program")

PASSPHRASE = "correct horse battery staple"


def keypair(home: Path, email: str, passphrase: str | None) -> tuple[object, str, str]:
    """A fresh key in its own keyring: (gpg, armored public key, armored secret key)."""
    home.mkdir(mode=0o700)
    gpg = gnupg.GPG(gnupghome=str(home))
    # RSA, not Curve25519: GnuPG 2.2 now and then fails to export a fresh cv25519 secret
    # subkey ("Corrupted protection"), which left a key file without its decryption key.
    spec = gpg.gen_key_input(
        key_type="RSA",
        key_length=2048,
        subkey_type="RSA",
        subkey_length=2048,
        name_email=email,
        passphrase=passphrase,
        no_protection=passphrase is None,
    )
    key = gpg.gen_key(spec)
    assert key.fingerprint, key.stderr
    public = gpg.export_keys(key.fingerprint)
    secret = gpg.export_keys(
        key.fingerprint, secret=True, passphrase=passphrase, expect_passphrase=bool(passphrase)
    )
    assert "PRIVATE KEY BLOCK" in secret, f"gpg exported no secret key for {email}"
    return gpg, public, secret


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("pgp")
    _, platform_public, platform_secret = keypair(
        root / "platform", "lists@platform.example", PASSPHRASE
    )
    customer_gpg, customer_public, _ = keypair(root / "customer", "crm@acme.example", None)
    customer_gpg.import_keys(platform_public)
    _, other_public, _ = keypair(root / "other", "someone@else.example", None)
    customer_gpg.import_keys(other_public)
    (root / "platform-secret.asc").write_text(platform_secret)
    (root / "customer-public.asc").write_text(customer_public)
    yield {
        "root": root,
        "customer": customer_gpg,
        "platform": platform_public,
        "other": other_public,
    }
    for home in ("platform", "customer", "other"):  # no gpg-agent outlives the tests
        subprocess.run(
            ["gpgconf", "--homedir", str(root / home), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )


def encrypted(keys: dict, data: bytes, to: str = "lists@platform.example") -> bytes:
    result = keys["customer"].encrypt(data, to, always_trust=True, armor=False)
    assert result.ok, result.status
    return result.data


def tenant(ws: Sandbox, keys: dict, monkeypatch: pytest.MonkeyPatch, **extra) -> None:
    monkeypatch.setenv("ACME_PGP_PASSPHRASE", PASSPHRASE)
    ws.add_tenant(
        "acme",
        pgp_key_file=str(keys["root"] / "platform-secret.asc"),
        pgp_passphrase_env="ACME_PGP_PASSPHRASE",
        **extra,
    )


def test_an_encrypted_list_is_decrypted_read_and_no_plaintext_is_left(
    ws: Sandbox, keys: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant(ws, keys, monkeypatch, count_file="required")
    plain = csv_text(people(250)).encode()
    ws.upload(encrypted(keys, plain), name="members.csv.pgp")
    (ws.home / "members_count.txt").write_text("250\n")
    (run,) = ws.sync_all()
    assert (run.status, run.added, run.file) == ("applied", 250, "members.csv.pgp"), run.reason
    state = ws.tenant.state_dir
    assert not [p for p in state.rglob("*") if p.is_file() and p.read_bytes() == plain]
    archived = [p for p in (state / "archive").iterdir()]
    assert archived and all(b"p1@example.org" not in p.read_bytes() for p in archived)


def test_an_encrypted_gzipped_list_is_read_too(
    ws: Sandbox, keys: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant(ws, keys, monkeypatch)
    ws.upload(encrypted(keys, gzip.compress(csv_text(people(40)).encode())), name="l.csv.gz.gpg")
    (run,) = ws.sync_all()
    assert (run.status, run.added) == ("applied", 40), run.reason


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda keys: encrypted(keys, b"email\nx@y.org\n", to="someone@else.example"),
            "encrypted to another key",
        ),
        (lambda keys: b"email\nx@y.org\n", "does not decrypt"),
        (lambda keys: encrypted(keys, csv_text(people(50)).encode())[:-40], "does not decrypt"),
    ],
)
def test_a_file_that_does_not_decrypt_is_voided_and_the_list_stands(
    ws: Sandbox, keys: dict, monkeypatch: pytest.MonkeyPatch, make, reason: str
) -> None:
    tenant(ws, keys, monkeypatch)
    ws.upload(people(3))
    ws.sync()
    ws.upload(make(keys), name="members.csv.asc")
    (run,) = ws.sync_all()
    assert run.status == "voided" and reason in run.reason, run.reason
    assert len(ws.subscribers("active")) == 3


def test_a_wrong_passphrase_fails_the_run_without_showing_it(
    ws: Sandbox, keys: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant(ws, keys, monkeypatch)
    monkeypatch.setenv("ACME_PGP_PASSPHRASE", "not the passphrase")
    ws.upload(encrypted(keys, csv_text(people(5)).encode()), name="members.csv.pgp")
    (run,) = ws.sync_all()
    assert run.status == "failed" and "passphrase" in run.reason
    assert "not the passphrase" not in run.reason
    assert (ws.home / "members.csv.pgp").exists(), "the file waits for the fixed key"


def test_return_files_are_encrypted_to_the_customers_key(
    ws: Sandbox, keys: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tenant(ws, keys, monkeypatch, pgp_recipient_key_file=str(keys["root"] / "customer-public.asc"))
    ws.upload(people(4))
    ws.sync()
    out = tmp_path / "to-crm"
    out.mkdir()
    result = ws.cli("export", "acme", "--to", str(out), "--json")
    assert result.exit_code == 0, result.output
    files = sorted((p.name for p in out.iterdir()), key=lambda name: name.endswith(".pgp"))
    assert len(files) == 2 and files[0].endswith("_count.txt") and files[1].endswith(".csv.pgp")
    data = (out / files[1]).read_bytes()
    assert b"p1@example.org" not in data
    plain = keys["customer"].decrypt(data)
    assert plain.ok, plain.status
    assert plain.data.decode().splitlines()[1].startswith("p0@example.org,")
    assert (out / files[0]).read_text() == "4\n"


def test_a_key_file_the_platform_cannot_read_fails_the_run_and_the_report_names_no_path(
    ws: Sandbox, keys: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = keys["root"] / "no-such-key.asc"
    ws.add_tenant("acme", pgp_key_file=str(missing))
    ws.upload(encrypted(keys, csv_text(people(5)).encode()), name="members.csv.pgp")

    (run,) = ws.sync_all()

    assert run.status == "failed"
    assert run.reason.startswith(f"{missing}: cannot read the tenant's pgp_key_file")
    assert (ws.home / "members.csv.pgp").exists()
    report = (ws.home / "members.csv.result.txt").read_text()
    assert str(keys["root"]) not in report and "pgp_key_file" not in report
    assert "the operator has been told" in report
    runs = ws.cli("runs", "acme").output  # the operator keeps the detail
    assert f"{missing}: cannot read the tenant's pgp_key_file" in runs

    ws.cli(
        "tenant",
        "set",
        "acme",
        f"pgp_key_file={keys['root'] / 'platform-secret.asc'}",
        "pgp_passphrase_env=ACME_PGP_PASSPHRASE",
    )
    monkeypatch.setenv("ACME_PGP_PASSPHRASE", PASSPHRASE)
    (again,) = ws.sync_all()
    assert (again.status, again.added) == ("applied", 5), again.reason


def test_an_encrypted_list_that_decrypts_past_max_list_size_is_voided_unread(
    ws: Sandbox, keys: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant(ws, keys, monkeypatch, max_list_size="1 MiB")
    plain = csv_text(people(40)).encode() + b"\n" * (2 << 20)
    ws.upload(encrypted(keys, plain), name="members.csv.pgp")
    (run,) = ws.sync_all()
    assert (run.status, run.received) == ("voided", 0)
    assert run.reason == (
        "members.csv.pgp unpacks to 2 MiB; a list may be at most 1 MiB (max_list_size), "
        "so it was not taken"
    )


def test_a_state_folder_deep_in_the_file_system_decrypts_and_keeps_no_keyring(
    tmp_path: Path, keys: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GnuPG's agent listens on a socket in its keyring's folder, and a socket's path may
    not pass 107 bytes: a keyring below a deep state folder could not hold a secret key
    ("holds no secret key"). The keyring is made elsewhere, for the run alone."""
    deep = tmp_path / ("deep-" * 12) / ("state-folder-" * 4)
    ws = Sandbox.from_starter(deep)
    tenant(ws, keys, monkeypatch)
    ws.upload(encrypted(keys, csv_text(people(5)).encode()), name="members.csv.pgp")
    (run,) = ws.sync_all()
    assert (run.status, run.added) == ("applied", 5), run.reason
    assert not list(ws.tenant.state_dir.rglob("*.kbx")) and not list(deep.rglob("S.gpg-agent*"))


def test_a_killed_runs_keyring_is_removed_and_a_long_temporary_folder_is_not_used(
    ws: Sandbox, keys: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Review findings: a sync killed mid-decryption left its keyring, the secret key in
    it, in the temporary folder; a temporary folder with a long path brought back the
    agent socket's limit."""
    import tempfile

    dead = subprocess.Popen(["true"])
    dead.wait()
    left = Path(tempfile.gettempdir()) / f"listferry-gpg-{dead.pid}-killed"
    left.mkdir()
    (left / "secret.key").write_text("a secret key")
    long_temp = tmp_path / ("t" * 90)
    long_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long_temp))
    tenant(ws, keys, monkeypatch)
    ws.upload(encrypted(keys, csv_text(people(3)).encode()), name="members.csv.pgp")
    (run,) = ws.sync_all()
    assert (run.status, run.added) == ("applied", 3), run.reason
    assert not left.exists()
    assert list(long_temp.iterdir()) == []
