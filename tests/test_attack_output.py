"""Attacks on what listferry shows people: control characters a customer puts in a file
name, a CSV value, a path or a user name never reach a terminal, a log line, a report or
a mail raw (issue #14, finding 11). JSON keeps the true value, escaped."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import paramiko
import pytest
from notify_servers import SmtpServer
from test_ftp_server import PASSWORD, add_tenant, ftp
from test_notify import notify_config
from test_sftp_server import LOCAL, session

from listferry.testing import Sandbox

#: An OSC sequence (sets a terminal's title), a CSI in its C1 form, a right-to-left
#: override: a list file name as a customer's CRM could write it into a local home.
NAME = "list\x1b]0;owned\x07\x9b31m\u202e.csv"
SHOWN = "list\\x1b]0;owned\\x07\\x9b31m\\u202e.csv"
#: An address with an OSC sequence, quoted in the report's list of invalid records.
BAD_ADDRESS = "bad\x1b]0;t\x07@x"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r", "\x00")


def raw_controls(text: str) -> list[str]:
    return [c for c in RAW if c in text]


def osc_list(ws: Sandbox) -> None:
    ws.add_tenant(count_file="optional")
    ws.upload([("ok@example.org", "A", "B", "G"), (BAD_ADDRESS, "C", "D", "G")], name=NAME)


def test_controls_in_a_list_name_and_a_value_show_escaped_in_runs_status_digest_and_report(
    ws: Sandbox,
) -> None:
    """Finding 11: a list named with an OSC sequence in a local home, whose bad address
    holds ESC ] 0 ; ... BEL: `sync -v`, `runs`, `runs RUN_ID`, `status`, `digest` and the
    report in the home show both escaped; `runs --json` is valid JSON with the true name."""
    osc_list(ws)
    synced = ws.cli("-v", "sync", "acme")
    assert synced.exit_code == 1, synced.output  # voided: half the addresses are bad
    outputs = {
        "sync": synced.output,
        "runs": ws.cli("runs", "acme").output,
        "report": ws.cli("runs", "acme", "1").output,
        "status": ws.cli("status").output,
        "digest": ws.cli("digest").output,
        "home report": ws.home.joinpath(NAME.replace(".csv", ".result.txt")).read_text(),
    }
    for where, text in outputs.items():
        assert raw_controls(text) == [], (where, text)
        if where not in ("status",):
            assert SHOWN in text, (where, text)
    assert "bad\\x1b]0;t\\x07@x" in outputs["report"]
    assert "bad\\x1b]0;t\\x07@x" in outputs["home report"]
    assert "\\\\x1b" not in "".join(outputs.values())  # escaped once, never twice

    listed = ws.cli("runs", "acme", "--json").output
    assert raw_controls(listed) == []
    (run,) = json.loads(listed)
    assert run["file"] == NAME
    one = json.loads(ws.cli("runs", "acme", "1", "--json").output)
    assert BAD_ADDRESS in one["report"] or "bad\\x1b]0;t\\x07@x" in one["report"]


def test_json_log_lines_of_a_run_with_controls_are_valid_json_with_the_true_name(
    ws: Sandbox,
) -> None:
    """Finding 11: with `--log-format json` each log line is one JSON object holding no raw
    control character (C1 and bidirectional ones included), and its run keeps the true
    name."""
    osc_list(ws)
    result = ws.cli("--log-format", "json", "-v", "sync", "acme", "--json")
    assert result.exit_code == 1
    assert raw_controls(result.output) == [], result.output
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    runs = [entry["run"] for entry in logged if "run" in entry]
    assert [r["file"] for r in runs] == [NAME]
    assert all(SHOWN in entry["message"] for entry in logged if "run" in entry)


def test_a_mail_about_a_run_shows_a_control_file_name_escaped_in_subject_and_body(
    ws: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 11: the mail [notify] sends for a run of a file named with an OSC sequence
    and a line break is sent (a raw line break in a subject made it fail) with the name
    escaped in its subject and body."""
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret-smtp")
    name = "x\x1b]0;owned\x07\nBcc: evil@example.org.csv"
    ws.add_tenant(count_file="optional")
    with SmtpServer(tmp_path) as smtp:
        notify_config(ws, smtp, None)
        ws.upload([(BAD_ADDRESS, "C", "D", "G")], name=name)
        (run,) = ws.sync_all()  # failed: a name with a line break is not a plain file name
        assert run.status == "failed"
        (rcpts, message), *more = smtp.mailbox.wait(1)
    assert more == [] and rcpts == ["ops@platform.example"]
    assert message["Bcc"] is None
    subject = str(message["Subject"])
    assert subject == "listferry: acme failed x\\x1b]0;owned\\x07\\nBcc: evil@example.org.csv"
    body = message.get_payload(decode=True).decode().replace("\r\n", "\n")  # the wire's
    assert raw_controls(body) == [] and "x\\x1b]0;owned\\x07\\nBcc" in body
    assert not [line for line in body.splitlines() if line.startswith("Bcc")]


def test_ftp_and_sftp_log_control_paths_and_user_names_escaped_exactly_once(
    ws: Sandbox, served, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 11: a path with ESC refused over FTP and over SFTP, and user names with ESC,
    BEL and a CR typed at an FTP and an SFTP login, are logged escaped once (`\\x1b`,
    never `\\\\x1b`), on lines with no raw control character."""
    caplog.set_level(logging.INFO, logger="listferry.server")
    add_tenant(ws, allow_ips=LOCAL)
    with served(["ftp", "sftp"]) as s:
        client = ftp(s.ports["ftp"])
        client.sock.sendall(b"MKD red\x1b[31m\r\n")
        assert client.getmultiline().startswith("553")
        client.quit()
        with session(s.ports["sftp"], password=PASSWORD) as sftp, pytest.raises(OSError):
            sftp.mkdir("blue\x1b[34m")
        stranger = ftp(s.ports["ftp"], user=None)
        stranger.sock.sendall(b"USER evil\x1b[2J\x07\rname\r\n")
        stranger.getmultiline()
        stranger.sock.sendall(b"PASS guess\r\n")
        stranger.getmultiline()
        stranger.close()
        mallory = "mallory\x1b]0;owned\x07"
        with (
            pytest.raises(paramiko.AuthenticationException),
            session(s.ports["sftp"], user=mallory, password="guess"),
        ):
            pass
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("listferry")]
    assert [line for line in lines if raw_controls(line)] == []
    for shown in (
        "red\\x1b[31m",
        "blue\\x1b[34m",
        "evil\\x1b[2J\\x07\\rname",
        "mallory\\x1b]0;owned\\x07",
    ):
        assert [line for line in lines if shown in line], (shown, lines)
    assert [line for line in lines if "\\\\x1b" in line] == []


def unsupported_method(data: bytes) -> bytes:
    """A zip whose one member says it is packed with PPMd (98), which Python cannot read."""
    local, central = data.index(b"PK\x03\x04") + 8, data.index(b"PK\x01\x02") + 10
    for at in (local, central):
        data = data[:at] + (98).to_bytes(2, "little") + data[at + 2 :]
    return data


def test_a_zip_member_name_with_controls_shows_escaped_in_runs_and_the_report(
    ws: Sandbox,
) -> None:
    """Finding 11: a zipped list whose member is named with an OSC sequence, and cannot be
    read, is voided with a reason naming the member: `runs` and the report show it
    escaped, `runs --json` keeps the true name."""
    ws.add_tenant(count_file="optional")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("m\x1b]0;owned\x07.csv", "email\r\nada@example.org\r\n")
    ws.upload(unsupported_method(out.getvalue()), name="members.csv.zip")
    (run,) = ws.sync_all()
    assert run.status == "voided" and "m\x1b]0;owned\x07.csv" in run.reason
    listed, report = ws.cli("runs", "acme").output, ws.cli("runs", "acme", "1").output
    home_report = (ws.home / "members.csv.result.txt").read_text()
    for text in (listed, report, home_report):
        assert raw_controls(text) == [] and "m\\x1b]0;owned\\x07.csv" in text, text
    (as_json,) = json.loads(ws.cli("runs", "acme", "--json").output)
    assert as_json["reason"] == run.reason


def test_subscribers_check_and_status_show_customer_values_with_controls_escaped(
    ws: Sandbox, tmp_path: Path
) -> None:
    """Finding 11: a CSV value (a first name with an OSC sequence) and a header (with a
    CSI) show escaped in `subscribers` and `check`; a file no pattern takes, named with
    an OSC sequence, shows escaped in `status`; each `--json` keeps the true value."""
    ws.add_tenant(count_file="optional")
    header = ("email", "first_name", "last_name", "segment_code", "Notes\x1b[31m")
    rows = [("ada@example.org", "Ada\x1b]0;owned\x07", "L", "G", "x\ry")]
    listed = ws.upload(rows, header=header)
    checked = ws.cli("check", str(listed), "--tenant", "acme")
    assert checked.exit_code == 0, checked.output
    assert raw_controls(checked.output) == [] and "Notes\\x1b[31m" in checked.output
    assert ws.sync().status == "applied"
    (ws.home / "notes\x1b]0;owned\x07.txt").write_text("not a list")

    shown = ws.cli("subscribers", "acme").output
    assert raw_controls(shown) == [] and "Ada\\x1b]0;owned\\x07 L" in shown, shown
    (row,) = json.loads(ws.cli("subscribers", "acme", "--json").output)
    assert row["first_name"] == "Ada\x1b]0;owned\x07"

    status = ws.cli("status").output
    assert raw_controls(status) == [] and "notes\\x1b]0;owned\\x07.txt" in status, status
    (item,) = json.loads(ws.cli("status", "--json").output)
    assert item["ignored"] == ["notes\x1b]0;owned\x07.txt"]
