"""Each config key is declared once, and a key of one kind is checked the same way in
every table: ``[listferry]``, ``[server]``, ``[defaults]``, ``[tenants.NAME]`` and
``[notify]`` take their checks from one module."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from listferry.config import LISTFERRY_KEYS, SERVER_KEYS, TENANT_KEYS, parse_config
from listferry.config.keys import REQUIRED, as_attribute, keys_of, setting
from listferry.config.notify import (
    EMAIL_KEYS,
    NOTIFY_KEYS,
    WEBHOOK_KEYS,
    EmailSettings,
    NotifySettings,
    WebhookSettings,
)
from listferry.config.settings import ListferrySettings, ServerSettings, Tenant
from listferry.config.starter import STARTER_CONFIG, example, lay_out
from listferry.errors import ConfigError

#: Every config table: its name, the dataclass that declares its keys, its key table.
TABLES = [
    ("listferry", ListferrySettings, LISTFERRY_KEYS),
    ("tenants.NAME", Tenant, TENANT_KEYS),
    ("server", ServerSettings, SERVER_KEYS),
    ("notify", NotifySettings, NOTIFY_KEYS),
    ("notify.email", EmailSettings, EMAIL_KEYS),
    ("notify.webhook", WebhookSettings, WEBHOOK_KEYS),
]

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
)
def test_a_true_or_false_and_a_time_zone_are_refused_in_the_same_words_in_every_table(
    tmp_path: Path, text: str, problem: str
) -> None:
    assert refusal(tmp_path, text).endswith(problem)


# -- one declaration per key ------------------------------------------------------------


def declaration_problems(settings: type) -> list[str]:
    """What a key ``settings`` declares lacks: a default its own check takes (``None``:
    not set; or :data:`REQUIRED`), a check, a meaning."""
    problems = []
    for key in keys_of(settings).values():
        if not callable(key.check):
            problems.append(f"{key.name} has no check")
        elif key.default is not None and not key.required and key.check(key.default):
            problems.append(f"{key.name}: its check refuses its default {key.default!r}")
        if not key.doc.strip():
            problems.append(f"{key.name} has no meaning")
    return problems


@pytest.mark.parametrize(("table", "settings", "_keys"), TABLES, ids=[t[0] for t in TABLES])
def test_every_key_has_a_default_its_check_takes_and_a_meaning(
    table: str, settings: type, _keys: dict
) -> None:
    assert keys_of(settings), table
    assert declaration_problems(settings) == []


def test_a_key_without_a_meaning_or_with_a_default_its_check_refuses_is_caught() -> None:
    @dataclasses.dataclass(frozen=True)
    class Broken:
        port: int = setting(0, lambda v: None if v else "must not be 0", "A port.")
        host: str = setting("x", lambda v: None, " ")

    assert declaration_problems(Broken) == [
        "port: its check refuses its default 0",
        "host has no meaning",
    ]


@pytest.mark.parametrize(("table", "settings", "keys"), TABLES, ids=[t[0] for t in TABLES])
def test_the_key_tables_are_the_declarations(table: str, settings: type, keys: dict) -> None:
    declared = keys_of(settings)
    assert list(keys) == list(declared)
    for name, (default, check) in keys.items():
        key = declared[name]
        assert check is key.check
        assert default == (None if key.required else key.default)
        assert not isinstance(default, tuple), f"{table} {name}: TOML has lists, not tuples"


@pytest.mark.parametrize(("table", "settings", "keys"), TABLES, ids=[t[0] for t in TABLES])
def test_the_dataclass_defaults_are_the_tables_defaults_with_lists_as_tuples(
    table: str, settings: type, keys: dict
) -> None:
    fields = {field.name: field for field in dataclasses.fields(settings)}
    for key in keys_of(settings).values():
        field = fields[key.attribute]
        if key.required or key.name == "home":
            assert field.default is dataclasses.MISSING, f"{table} {key.name}"
            continue
        assert field.default == key.convert(keys[key.name][0]), f"{table} {key.name}"
        assert not isinstance(field.default, list), f"{table} {key.name}: a list on a dataclass"
    assert as_attribute(["a"]) == ("a",)


def test_a_config_of_empty_tables_reads_as_the_dataclass_defaults(tmp_path: Path) -> None:
    text = "[listferry]\n[server]\n[defaults]\n[tenants.acme]\n[notify]\n" + EMAIL
    text += '[notify.webhook]\nurl = "https://x.example"\n'
    config = parse_config(text, tmp_path / "listferry.toml")
    acme = config.tenant("acme")
    assert acme == Tenant(name="acme", home=acme.home, state_dir=acme.state_dir)
    assert list(acme.export_fields) == TENANT_KEYS["export_fields"][0]
    server = ServerSettings()
    own = config.state_dir / "server"
    assert config.server == dataclasses.replace(
        server,
        tls_cert=own / server.tls_cert,
        tls_key=own / server.tls_key,
        ssh_host_key=own / server.ssh_host_key,
    )
    assert config.server.tls_cert == own / "tls-cert.pem"
    listferry = ListferrySettings()
    assert (config.plugins, config.disable, config.executor) == (
        listferry.plugins,
        listferry.disable,
        listferry.executor,
    )
    assert config.state_dir == tmp_path / listferry.state
    notify = config.notify
    assert dataclasses.replace(notify, email=None, webhook=None) == NotifySettings()
    assert notify.email == EmailSettings(
        smtp_host="smtp.example.net", sender="a@example.net", to=("b@example.net",)
    )
    assert notify.webhook == WebhookSettings(url="https://x.example")


def test_from_is_the_toml_name_of_the_sender() -> None:
    assert "from" in EMAIL_KEYS and "sender" not in EMAIL_KEYS
    assert keys_of(EmailSettings)["from"].attribute == "sender"
    assert REQUIRED is keys_of(EmailSettings)["from"].default


# -- the starter config -----------------------------------------------------------------


def test_each_key_the_starter_config_shows_has_its_default_and_its_declared_comment() -> None:
    shown = re.findall(r"^\[(\w+)\].*\n((?:\w+ = .*\n)+)", STARTER_CONFIG, re.M)
    assert [table for table, _ in shown] == ["listferry", "defaults"]
    for table, lines in shown:
        keys = keys_of(ListferrySettings if table == "listferry" else Tenant)
        for line in lines.splitlines():
            name, value, comment = re.fullmatch(r"(\w+) = (\S+)\s*(?:# (.*))?", line).groups()
            assert json.loads(value) == keys[name].default, line
            assert comment == keys[name].comment, line
    assert "# the clock schedule is read on" in STARTER_CONFIG


def test_the_starter_config_reads_and_so_does_its_notify_example_once_uncommented(
    tmp_path: Path,
) -> None:
    config = parse_config(STARTER_CONFIG, tmp_path / "listferry.toml")
    assert config.tenants == {} and config.notify.email is None
    text = re.sub(r"^# ((?:\[|\w+ = ).*)$", r"\1", STARTER_CONFIG, flags=re.M)
    config = parse_config(text, tmp_path / "listferry.toml")
    assert config.notify.email is not None
    assert config.notify.email.sender == "listferry@example.net"
    assert config.tenant("acme").strategy == "incremental"


def test_an_example_its_key_refuses_cannot_be_in_the_starter_config() -> None:
    with pytest.raises(ValueError, match="smtp_port must be a port number"):
        example(keys_of(EmailSettings)["smtp_port"], 0)


def test_comments_line_up_from_column_18_within_a_block_of_commented_lines() -> None:
    lines = [("[t]", "a table"), ("x = 1", None), ("a = 1", "one"), ("long_key = 22", "two")]
    assert lay_out(lines) == [
        "[t]               # a table",
        "x = 1",
        "a = 1             # one",
        "long_key = 22     # two",
    ]
    assert lay_out([("a_key_longer_than_18 = 1", "x"), ("b = 2", "y")]) == [
        "a_key_longer_than_18 = 1  # x",
        "b = 2                     # y",
    ]
