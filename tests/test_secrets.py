"""No secret shows anywhere: a full scenario, then a search of everything it left.

Tenant passwords (given over stdin, tried wrong and right against the built-in servers),
an SSH key's passphrase, remote homes' passwords (right, wrong, and put into URLs where
they do not belong), sync, push, export, runs. Then every log record (DEBUG and up, the
servers' and paramiko's included), every command's stdout and stderr, every error's
message and every file under the test's folder (the state folder's run records, result
reports, return files, the stores) is searched for each secret. Only the config file,
which holds ``remote_password`` by design, is left out.
"""

from __future__ import annotations

import contextlib
import ftplib
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import paramiko
import pytest
from click.testing import Result
from conftest import csv_text, people
from remote_servers import Remote

from listferry.errors import ListferryError
from listferry.ops.tenants import add_tenant
from listferry.testing import Sandbox

TENANT_PASSWORD = "Tenant-s3cret-for-the-built-in-servers"
WRONG_TENANT_PASSWORD = "Wr0ng-tenant-s3cret"
PASSPHRASE = "Key-passphrase-s3cret"
WRONG_PASSPHRASE = "Wr0ng-key-passphrase"
REMOTE_PASSWORD = "Remote-home-s3cret"
WRONG_REMOTE_PASSWORD = "Wr0ng-remote-s3cret"
URL_PASSWORD = "Url-borne-s3cret"
SECRETS = [
    TENANT_PASSWORD,
    WRONG_TENANT_PASSWORD,
    PASSPHRASE,
    WRONG_PASSPHRASE,
    REMOTE_PASSWORD,
    WRONG_REMOTE_PASSWORD,
    URL_PASSWORD,
]


def sftp_put(port: int, password: str, source: Path) -> None:
    transport = paramiko.Transport(("127.0.0.1", port))
    try:
        transport.connect(username="acme", password=password)
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        sftp.put(str(source), "subscriber_list.csv")
    finally:
        transport.close()


def ftp_login(port: int, password: str) -> None:
    with ftplib.FTP() as ftp:
        ftp.connect("127.0.0.1", port, timeout=10)
        ftp.login("acme", password)


def test_no_secret_shows_in_logs_runs_reports_json_errors_or_state_files(
    ws: Sandbox,
    served: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    shown: list[Result] = []
    errors: list[str] = []

    def cli(*args: str, input: str | None = None) -> Result:
        shown.append(ws.cli("-v", *args, input=input))
        return shown[-1]

    # -- a tenant of the built-in servers, its password over stdin -------------------------
    added = cli(
        "tenant",
        "add",
        "acme",
        "--password-stdin",
        "--allow-ip",
        "127.0.0.1/32",
        input=TENANT_PASSWORD + "\n",
    )
    assert added.exit_code == 0, added.output
    source = tmp_path / "export.csv"
    source.write_text(csv_text(people(20)))
    with served(["ftp", "sftp"], block_seconds=1) as server:
        with pytest.raises(paramiko.AuthenticationException) as refused:
            sftp_put(server.ports["sftp"], WRONG_TENANT_PASSWORD, source)
        errors.append(str(refused.value))
        with pytest.raises(ftplib.error_perm) as refused_ftp:
            ftp_login(server.ports["ftp"], WRONG_TENANT_PASSWORD)
        errors.append(str(refused_ftp.value))
        sftp_put(server.ports["sftp"], TENANT_PASSWORD, source)
    assert cli("sync", "acme", "--json").exit_code == 0

    # -- homes on customers' servers: a key with a passphrase, passwords right and wrong ---
    with contextlib.ExitStack() as stack:
        key = tmp_path / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-f", str(key)], check=True
        )
        remotes = {
            "keyed": Remote(
                stack,
                tmp_path / "r-keyed",
                "sftp",
                REMOTE_PASSWORD,
                client_key=paramiko.PKey.from_path(key, PASSPHRASE.encode()),
            ),
            "sftphome": Remote(stack, tmp_path / "r-sftp", "sftp", REMOTE_PASSWORD),
            "ftphome": Remote(stack, tmp_path / "r-ftp", "ftp", REMOTE_PASSWORD),
        }
        for server in remotes.values():
            (server.folder / "subscriber_list.csv").write_text(csv_text(people(30)))
            (server.folder / "outbox").mkdir()  # where return files go
        own = {"remote_password_env": None, "remote_retries": 1, "export_after_sync": True}
        tenants = {
            "keyed": (
                remotes["keyed"],
                {"remote_key_file": str(key), "remote_password": PASSPHRASE},
            ),
            "badkey": (
                remotes["keyed"],
                {"remote_key_file": str(key), "remote_password": WRONG_PASSPHRASE},
            ),
            "sftphome": (remotes["sftphome"], {"remote_password": REMOTE_PASSWORD}),
            "ftphome": (remotes["ftphome"], {"remote_password": REMOTE_PASSWORD}),
            "wrongsftp": (remotes["sftphome"], {"remote_password": WRONG_REMOTE_PASSWORD}),
            "wrongftp": (remotes["ftphome"], {"remote_password": WRONG_REMOTE_PASSWORD}),
        }
        for name, (server, settings) in tenants.items():
            add_tenant(ws.app(), name, server.tenant_settings(**own, **settings))
        for name in tenants:
            cli("sync", name, "--json")
        ran = zip(tenants, shown[-len(tenants) :], strict=True)
        outcomes = {name: json.loads(result.stdout)[0]["status"] for name, result in ran}
        assert outcomes == {
            "keyed": "applied",
            "badkey": "failed",
            "sftphome": "applied",
            "ftphome": "applied",
            "wrongsftp": "failed",
            "wrongftp": "failed",
        }
        for name in ("acme", "keyed", "ftphome"):
            assert cli("export", name, "--json").exit_code == 0
        assert cli("export", "wrongftp", "--json").exit_code == 1

        # -- push: the password from the environment, wrong, and inside the URL ----------
        ftp = remotes["ftphome"]
        monkeypatch.setenv("LISTFERRY_PASSWORD", REMOTE_PASSWORD)
        assert cli("push", str(source), ftp.url).exit_code == 0
        monkeypatch.setenv("LISTFERRY_PASSWORD", WRONG_REMOTE_PASSWORD)
        assert cli("push", str(source), ftp.url).exit_code == 1
        monkeypatch.delenv("LISTFERRY_PASSWORD")
        in_url = ftp.url.replace("acme@", f"acme:{URL_PASSWORD}@")
        assert cli("push", str(source), in_url).exit_code != 0
        assert cli("export", "ftphome", "--to", in_url).exit_code != 0
        assert cli("tenant", "add", "leaky", "--home", in_url).exit_code != 0
        with pytest.raises(ListferryError) as config_refused:
            add_tenant(ws.app(), "leaky", {"home": in_url})
        errors.append(str(config_refused.value))
        down = remotes["sftphome"]
        down.server.__exit__()
        cli("sync", "sftphome", "--json")  # the server is gone: refused, retried, failed

    for name in ("acme", *tenants):
        assert cli("runs", name, "--json").exit_code == 0
    cli("tenant", "list")
    cli("tenant", "list", "--json")
    cli("sync", "--all", "--json")

    texts = {"log": caplog.text, "errors": "\n".join(errors)}
    texts |= {f"command #{i}": r.output + r.stderr for i, r in enumerate(shown)}
    for secret in SECRETS:
        for where, text in texts.items():
            assert secret not in text, f"{secret!r} shows in {where}"
        for path in tmp_path.rglob("*"):
            if path.is_file() and path != ws.config_path:
                assert secret.encode() not in path.read_bytes(), f"{secret!r} is in {path}"
    reasons = " ".join(
        json.loads(r.stdout)[0]["reason"] or ""
        for r in shown
        if r.stdout.startswith("[") and '"reason"' in r.stdout
    )
    assert "login refused" in reasons and "wrong passphrase" in reasons  # the failures ran


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sftp://acme:s3cret@files.example.net:2222/in", "sftp://acme@files.example.net:2222/in"),
        ("https://hooks.example.net/in?token=s3cret#s3cret", "https://hooks.example.net/in"),
        ("ftps://acme:s3cret@[2001:db8::1]:990/", "ftps://acme@[2001:db8::1]:990/"),
        ("/srv/outbox", "/srv/outbox"),
        ("sftp://acme:s3cret@host:99999/", "sftp://(a URL that does not parse)"),
    ],
)
def test_a_url_is_shown_without_its_secrets(url: str, shown: str) -> None:
    from listferry.text import redact_url

    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)
