"""Each config key is declared once, and a key of one kind is checked the same way in
every table: ``[listferry]``, ``[server]``, ``[defaults]``, ``[tenants.NAME]`` and
``[notify]`` take their checks from one module."""

from __future__ import annotations

from pathlib import Path

import pytest

from listferry.config import parse_config
from listferry.errors import ConfigError

EMAIL = (
    '[notify.email]\nsmtp_host = "smtp.example.net"\nfrom = "a@example.net"\n'
    'to = ["b@example.net"]\n'
)
ZONE = 'must be an IANA time zone name such as "Europe/Berlin"'


def refusal(tmp_path: Path, text: str) -> str:
    """The one line ``text`` is refused with."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "listferry.toml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_notify_smtp_port_refuses_0_while_the_ftp_server_takes_it_for_any_free_port(
    tmp_path: Path,
) -> None:
    assert (
        parse_config("[server]\nftp_port = 0\n", tmp_path / "listferry.toml").server.ftp_port == 0
    )
    assert refusal(tmp_path, EMAIL + "smtp_port = 0\n").endswith(
        "line 5: [notify.email] smtp_port must be a port number (1-65535)"
    )
    assert refusal(tmp_path, "[server]\nftp_port = 65536\n").endswith(
        "line 2: [server] ftp_port must be a port number from 0 to 65535 (0: any free port)"
    )


@pytest.mark.parametrize(
    "text",
    [EMAIL + "timeout = inf\n", '[notify.webhook]\nurl = "https://x.example"\nbackoff = 1e400\n'],
    ids=["email-timeout", "webhook-backoff"],
)
def test_notify_seconds_are_at_most_a_year_as_every_setting_in_seconds(
    tmp_path: Path, text: str
) -> None:
    assert "must be a number of seconds above 0, at most 31536000" in refusal(tmp_path, text)


def test_a_digest_that_is_never_due_is_refused_as_a_schedule_is(tmp_path: Path) -> None:
    message = refusal(tmp_path, '[notify]\ndigest_at = "0 0 30 2 *"\n')
    assert message.endswith("line 2: [notify] digest_at schedule '0 0 30 2 *' is never due")
    message = refusal(tmp_path, '[tenants.acme]\nschedule = "0 0 30 2 *"\n')
    assert message.endswith("line 2: [tenants.acme] schedule '0 0 30 2 *' is never due")


def test_a_nul_in_a_notify_file_name_is_refused_with_its_line(tmp_path: Path) -> None:
    message = refusal(tmp_path, EMAIL + 'ca_file = "ca\\u0000.pem"\n')
    assert message.endswith("line 5: [notify.email] ca_file must not hold a NUL character")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[tenants.acme]\nrequire_tls = "yes"\n', "require_tls must be true or false"),
        (EMAIL + 'tenant_contacts = "yes"\n', "tenant_contacts must be true or false"),
        ("[defaults]\ntimezone = 1\n", f"[defaults] timezone {ZONE}"),
        ("[notify]\ndigest_timezone = 1\n", f"[notify] digest_timezone {ZONE}"),
    ],
)  # fmt: skip
def test_a_true_or_false_and_a_time_zone_are_refused_in_the_same_words_in_every_table(
    tmp_path: Path, text: str, problem: str
) -> None:
    assert refusal(tmp_path, text).endswith(problem)
