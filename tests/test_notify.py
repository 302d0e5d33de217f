"""Notifications: a voided run mailed (STARTTLS, login) and posted to a signed webhook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import people
from notify_servers import SmtpServer, WebhookServer

from listferry.ops.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from listferry.testing import Sandbox

SECRET = "whsec-7d1c0a"


def notify_config(
    ws: Sandbox,
    smtp: SmtpServer | None,
    hook: WebhookServer | None,
    on: str = '["voided", "failed"]',
) -> None:
    text = f"\n[notify]\non = {on}\n"
    if smtp is not None:
        text += (
            "\n[notify.email]\n"
            f'smtp_host = "127.0.0.1"\nsmtp_port = {smtp.port}\nsecurity = "starttls"\n'
            f'ca_file = "{smtp.ca_file}"\nusername = "mailer"\n'
            'password_env = "TEST_SMTP_PASSWORD"\nfrom = "listferry@platform.example"\n'
            'to = ["ops@platform.example"]\n'
        )
    if hook is not None:
        text += (
            f'\n[notify.webhook]\nurl = "{hook.url}"\nsecret_env = "TEST_WEBHOOK_SECRET"\n'
            "attempts = 4\nbackoff = 0.05\n"
        )
    with open(ws.config_path, "a", encoding="utf-8") as f:
        f.write(text)


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret-smtp")
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)


def test_a_voided_run_is_mailed_to_the_operator_and_the_tenants_contact_and_posted_signed(
    ws: Sandbox, tmp_path: Path, secrets: None
) -> None:
    ws.add_tenant("acme", contact_email="crm-admin@acme.example")
    ws.add_tenant("beta")
    with SmtpServer(tmp_path) as smtp, WebhookServer(fail_first=2) as hook:
        notify_config(ws, smtp, hook)
        ws.upload(people(5), tenant="beta")
        ws.upload("name;phone\nAda;123\n", tenant="acme")  # no e-mail column: voided
        assert [r.status for r in ws.sync_all(tenant="beta")] == ["applied"]
        (voided,) = ws.sync_all(tenant="acme")
        assert voided.status == "voided"

        (rcpts, message), *more = smtp.mailbox.wait(1)
        assert more == []  # the applied run is not one [notify] on names
        assert rcpts == ["ops@platform.example", "crm-admin@acme.example"]
        assert smtp.mailbox.logins == ["mailer"]
        assert message["Subject"] == "listferry: acme voided subscriber_list.csv"
        body = message.get_payload(decode=True).decode()
        assert voided.reason in body and "the last good list stands" in body

        assert len(hook.requests) == 3  # two 503s, then accepted
        headers, raw = hook.requests[-1]
        assert json.loads(raw) == voided.to_json()
        assert verify(SECRET.encode(), headers[TIMESTAMP_HEADER], raw, headers[SIGNATURE_HEADER])
        assert not verify(b"wrong", headers[TIMESTAMP_HEADER], raw, headers[SIGNATURE_HEADER])
        tampered = raw.replace(b"voided", b"applied")
        assert not verify(
            SECRET.encode(), headers[TIMESTAMP_HEADER], tampered, headers[SIGNATURE_HEADER]
        )


def test_a_webhook_that_keeps_failing_is_one_log_line_and_changes_nothing(
    ws: Sandbox, tmp_path: Path, secrets: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.add_tenant("acme")
    with WebhookServer(fail_first=100) as hook:
        notify_config(ws, None, hook, on='["applied"]')
        ws.upload(people(3))
        result = ws.cli("sync", "acme", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["status"] == "applied"
    assert len(hook.requests) == 4
    assert "webhook http://127.0.0.1" in result.stderr and "after 4 attempt(s): HTTP 503" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and SECRET not in result.stderr
    assert len(ws.subscribers("active")) == 3


def test_a_wrong_smtp_password_is_reported_without_the_password(
    ws: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "not-the-password")
    ws.add_tenant("acme")
    with SmtpServer(tmp_path) as smtp:
        notify_config(ws, smtp, None, on='["applied"]')
        ws.upload(people(3))
        result = ws.cli("sync", "acme")
    assert result.exit_code == 0
    assert "mail to ops@platform.example" in result.stderr and "535" in result.stderr
    assert "not-the-password" not in result.stderr
    assert smtp.mailbox.messages == []


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[notify]\non = ["maybe"]', "[notify] on must be a list of run outcomes"),
        ('[notify.email]\nsmtp_host = "x"\nto = ["a@b.c"]', "[notify.email] needs from"),
        (
            '[notify.email]\nsmtp_host = "x"\nfrom = "a@b.c"\nto = ["not an address"]',
            "[notify.email] to must be one e-mail address",
        ),
        ('[notify.webhook]\nurl = "ftp://x"', "[notify.webhook] url must be an http://"),
        ('[notify.webhook]\nurl = "https://x"\nattempts = 0', "attempts must be a whole number"),
        ('[notify]\ndigest_at = "25:00"', "[notify] digest_at schedule '25:00'"),
        ('[notify.email]\nsmtp_hots = "x"', "unknown key 'smtp_hots' (did you mean 'smtp_host'?)"),
    ],
)
def test_notify_settings_are_checked_with_the_line(ws: Sandbox, table: str, message: str) -> None:
    with open(ws.config_path, "a", encoding="utf-8") as f:
        f.write("\n" + table + "\n")
    result = ws.cli("tenant", "list")
    assert result.exit_code == 2
    assert message in result.stderr and " line " in result.stderr
