"""Opt-out columns never pass unnoticed: a warning when the dialect does not read one, and
``opt_out_columns`` to honour it without writing a plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from listferry.cli import cli
from listferry.dialect import Dialect, looks_like_opt_out
from listferry.errors import ConfigError
from listferry.testing import Sandbox

#: A full list from a CRM without a pack: its consent column is "Do Not Email".
CRM_EXPORT = (
    "Email,First Name,Last Name,Do Not Email,Member Type\r\n"
    "ada@example.org,Ada,Lovelace,no,Fellow\r\n"
    "bob@example.org,Bob,Ray,yes,Member\r\n"
    "cyd@example.org,Cyd,Charisse,No,Member\r\n"
    "dan@example.org,Dan,Brown,YES,Fellow\r\n"
)

LOOK_LIKE_OPT_OUT = [
    "unsubscribed",
    "Unsubscribe",
    "opt_out",
    "Opt-Out",
    "Opted Out",
    "Email Opt Out",
    "EmailOptOut",
    "HasOptedOutOfEmail",
    "Do Not Email",
    "DoNotEmail",
    "Do Not Mail",
    "do_not_contact",
    "Do not allow Bulk Emails",
    "No Email",
    "no_mail",
    "Unsubscribed from all email",
    "Opt Out Status",
    "Email Bounced",
    "IsEmailBounced",
    "Bounced",
    "Hard Bounce",
    "Email Blocked",
    "blocked",
    "Blacklisted",
    "Abgemeldet",
    "Newsletter abgemeldet",
    "Werbesperre",
    "Keine E-Mail",
    "désinscrit",
    "Désabonné",
    "desinscrite",
    "afgemeld",
    "Uitgeschreven",
    "dado de baja",
]

NOT_OPT_OUT = [
    "email",
    "E-Mail",
    "Email Opt In",
    "Subscribed",
    "Newsletter",
    "Status",
    "Notes",
    "Unsubscribe Date",
    "Opt Out Date",
    "Opt-Out Reason",
    "Unsubscribe Link",
    "EmailBouncedReason",
    "EmailBouncedDate",
    "Bounce Count",
    "Blocked Until",
    "Marketing contact status",
    "Do Not Call",
    "DoNotCall",
    "HasOptedOutOfFax",
    "Mailing Street",
    "first name",
    "Nombre",
]


@pytest.mark.parametrize("header", LOOK_LIKE_OPT_OUT)
def test_headers_that_look_like_opt_out_flags_are_recognised(header: str) -> None:
    assert looks_like_opt_out(header)


@pytest.mark.parametrize("header", NOT_OPT_OUT)
def test_dates_reasons_opt_ins_and_other_columns_are_not(header: str) -> None:
    assert not looks_like_opt_out(header)


def result_report(ws: Sandbox) -> str:
    return (ws.home / "subscriber_list.result.txt").read_text()


def check_cli(ws: Sandbox, path: Path, *args: str):
    return CliRunner().invoke(cli, ["--config", str(ws.config_path), "check", str(path), *args])


def opt_out_warnings(data: dict) -> list[str]:
    return [w for w in data["warnings"] if "looks like an opt-out flag" in w]


def test_a_full_list_with_an_unread_opt_out_column_applies_and_warns_naming_it(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme")
    copy = ws.root / "export.csv"
    copy.write_text(CRM_EXPORT)
    for args in ([], ["--tenant", "acme"]):
        text = check_cli(ws, copy, *args)
        assert text.exit_code == 0, text.output
        assert "warning: column 'Do Not Email' looks like an opt-out flag" in text.output
        data = json.loads(check_cli(ws, copy, "--json", *args).output)
        assert data["status"] == "ok"
        (warning,) = opt_out_warnings(data)
        assert "'Do Not Email'" in warning and "dialect 'default' does not read it" in warning
        assert data["notes"] == []

    ws.upload(CRM_EXPORT)
    (run,) = ws.sync_all()
    assert run.status == "applied" and run.added == 4 and run.unsubscribed == 0
    assert set(ws.subscribers("active")) == {
        "ada@example.org",
        "bob@example.org",
        "cyd@example.org",
        "dan@example.org",
    }
    report = result_report(ws)
    assert (
        "  column 'Do Not Email' looks like an opt-out flag, but it is not read as one: its rows "
        "stay subscribed whatever it says. If it should unsubscribe people, ask your operator "
        "to read it as an opt-out column.\n"
    ) in report
    assert "opt_out_columns" not in report and "dialect" not in report  # the operator's words
    assert "'Member Type'" not in report


def test_opt_out_columns_turn_the_column_into_opt_outs_and_silence_the_warning(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme", opt_out_columns=["do_not_email"])
    ws.upload(CRM_EXPORT)
    (run,) = ws.sync_all()
    assert run.status == "applied"
    assert (run.added, run.unsubscribed) == (2, 2)
    assert {email: row["status"] for email, row in ws.subscribers().items()} == {
        "ada@example.org": "active",
        "bob@example.org": "unsubscribed",
        "cyd@example.org": "active",
        "dan@example.org": "unsubscribed",
    }
    assert ws.subscribers()["bob@example.org"]["fields"] == {
        "Do Not Email": "yes",
        "Member Type": "Member",
    }
    assert "looks like an opt-out flag" not in result_report(ws)

    copy = ws.root / "export.csv"
    copy.write_text(CRM_EXPORT.replace("ada@", "eve@"))
    checked = check_cli(ws, copy, "--tenant", "acme")
    assert checked.exit_code == 0, checked.output
    assert "'Do Not Email' -> kept as fields.Do Not Email, and opts out on" in checked.output
    data = json.loads(check_cli(ws, copy, "--tenant", "acme", "--json").output)
    assert opt_out_warnings(data) == []
    assert data["plan"]["unsubscribed"] == 0 and data["plan"]["added"] == 1


def test_a_full_list_cannot_resubscribe_who_its_opt_out_column_unsubscribed(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme", opt_out_columns=["Do Not Email"])
    ws.upload(CRM_EXPORT)
    ws.sync()
    ws.upload(CRM_EXPORT.replace("bob@example.org,Bob,Ray,yes", "bob@example.org,Bob,Ray,no"))
    (run,) = ws.sync_all()
    assert run.status == "applied"
    assert ws.subscribers()["bob@example.org"]["status"] == "unsubscribed"


def test_opt_out_values_name_the_words_of_a_column_that_says_who_is_subscribed(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme", opt_out_columns=["Newsletter"], opt_out_values=["Nein"])
    ws.upload("E-Mail;Vorname;Newsletter\nada@example.org;Ada;ja\nbob@example.org;Bob;nein\n")
    (run,) = ws.sync_all()
    assert (run.added, run.unsubscribed) == (1, 1)
    assert set(ws.subscribers("active")) == {"ada@example.org"}


def test_opt_out_columns_in_defaults_apply_to_every_tenant(ws: Sandbox) -> None:
    text = ws.config_path.read_text()
    ws.config_path.write_text(
        text.replace(
            'count_file = "optional"\n',
            'count_file = "optional"\n'
            'opt_out_columns = ["Do Not Email"]\nopt_out_values = ["yes"]\n',
        )
    )
    ws.add_tenant("acme")
    ws.upload(CRM_EXPORT)
    (run,) = ws.sync_all()
    assert run.unsubscribed == 2
    copy = ws.root / "export.csv"
    copy.write_text(CRM_EXPORT)
    assert opt_out_warnings(json.loads(check_cli(ws, copy, "--json").output)) == []


def test_a_column_the_dialect_reads_is_not_warned_about_and_others_still_are() -> None:
    pack = Dialect(
        name="pack",
        aliases={"email": ("Email",), "opt_out": ("Unsubscribed",)},
        also_opt_out={"Email Bounced": {"true"}},
    )
    header = ["Email", "Unsubscribed", "Email Bounced", "Do Not Email", "Notes"]
    (warning,) = pack.opt_out_warnings(header)
    assert warning.startswith("column 'Do Not Email' looks like an opt-out flag")
    assert pack.with_opt_out_columns(["DO NOT EMAIL"], ["y"]).opt_out_warnings(header) == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('opt_out_columns = "Do Not Email"', "opt_out_columns must be a list of column names"),
        ('opt_out_columns = ["Do Not Email", ""]', "must be a list of column names"),
        (
            'opt_out_columns = ["Do Not Email", "do_not_email"]',
            "names one column twice: 'Do Not Email' and 'do_not_email'",
        ),
        ("opt_out_values = []", "opt_out_values must be a list of one or more words"),
        ('opt_out_values = ["yes", " "]', "an empty cell cannot mean opted out"),
    ],
)
def test_opt_out_settings_that_cannot_work_are_refused_naming_the_line(
    ws: Sandbox, line: str, message: str
) -> None:
    ws.add_tenant("acme")
    ws.config_path.write_text(ws.config_path.read_text() + line + "\n")
    with pytest.raises(ConfigError) as refused:
        ws.app()
    lines = ws.config_path.read_text().count("\n")
    assert f"line {lines}: [tenants.acme] " in str(refused.value)
    assert message in str(refused.value)
