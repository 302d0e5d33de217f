"""A broken config stops every command with exit 2 and one line naming the file, line and key.

Malformed TOML, bytes that are not UTF-8, tables that are not tables, unknown keys, and a
value of the wrong type, out of range or endless for every key of ``[listferry]``,
``[server]``, ``[defaults]`` and ``[tenants.NAME]``: never a traceback, never exit 1.
Generated values (hypothesis, derandomized) go through the same door as the written ones.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listferry.cli import cli
from listferry.config import LISTFERRY_KEYS, SERVER_KEYS, TENANT_KEYS

TABLES = {
    "listferry": LISTFERRY_KEYS,
    "server": SERVER_KEYS,
    "defaults": {k: v for k, v in TENANT_KEYS.items() if k != "home"},
    "tenants.acme": TENANT_KEYS,
}
GOOD_TENANT = '[tenants.acme]\nstrategy = "full"\n'


def commands(folder: Path) -> list[list[str]]:
    """Every command that reads the config, with arguments that would otherwise work."""
    listing = folder / "list.csv"
    listing.write_text("email\nada@example.org\n")
    events = folder / "events.csv"
    events.write_text("email,type,at\nada@example.org,open,2024-01-01T00:00:00Z\n")
    return [
        ["init"],
        ["tenant", "list"],
        ["tenant", "add", "beta"],
        ["sync", "--all"],
        ["sync", "acme", "--json"],
        ["runs", "acme"],
        ["subscribers", "acme"],
        ["events", "load", "acme", str(events)],
        ["export", "acme"],
        ["check", str(listing)],
        ["push", str(listing), "sftp://acme@127.0.0.1:1/"],
        ["plugins"],
        ["serve", "--protocols", "none-such"],
    ]


def run(path: Path, args: list[str]) -> Result:
    return CliRunner().invoke(cli, ["--config", str(path), *args])


def assert_config_error(result: Result, path: Path, *words: str) -> str:
    """Exit 2, and on stderr one line that names the config file and each of ``words``."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1, result.stderr
    line = result.stderr.strip()
    assert line.startswith(f"Error: {path}"), line
    for word in words:
        assert word in line, (word, line)
    return line


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "listferry.toml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize(
    "content, words",
    [
        ('[listferry]\nstate = "state"\n[tenants.acme\n', ["not valid TOML", "line 3"]),
        ("[tenants.acme]\nstrategy = \n", ["not valid TOML", "line 2"]),
        ('[tenants.acme]\nstrategy = "full"\nstrategy = "full"\n', ["not valid TOML", "line 3"]),
        ('[tenants.acme]\nhome = "C:\\data"\n', ["not valid TOML", "line 2"]),
        ('[tenants.acme]\nstrategy = "full\n', ["not valid TOML", "line 2"]),
        (b'[tenants.acme]\nstrategy = "full"\n# caf\xe9\n', ["not UTF-8", "line 3"]),
        (b"\xff\xfe[\x00l\x00", ["not UTF-8", "line 1"]),
        ("[listferry]\nstate = 3\n", ["line 2", "[listferry] state"]),
        ('[listferry]\nstaet = "state"\n', ["line 2", "'staet'", "did you mean 'state'"]),
        ("[server]\nftp_port = 70000\n", ["line 2", "[server] ftp_port"]),
        ("[server]\nstop_timeout = inf\n", ["line 2", "[server] stop_timeout"]),
        ("[server]\nidle_timeout = -1\n", ["line 2", "[server] idle_timeout"]),
        ("[tenants.acme]\nremote_timeout = nan\n", ["line 2", "remote_timeout"]),
        ("[tenants.acme]\nstable_seconds = 1e400\n", ["line 2", "stable_seconds"]),
        (
            "[tenants.acme]\nsettle_seconds = 99999999999999999999999\n",
            ["line 2", "settle_seconds"],
        ),
        ("[tenants.acme]\nmax_invalid_share = 2\n", ["line 2", "max_invalid_share"]),
        ("[listferry]\nworkers = -4\n", ["line 2", "[listferry] workers"]),
        ("[weird]\nx = 1\n", ["line 1", "unknown table [weird]"]),
        ("[defaults]\nhome = 'x'\n", ["line 2", "[defaults] unknown key 'home'"]),
        ("tenants = 3\n", ["tenants must be a table"]),
        ('server = "yes"\n', ["server must be a table"]),
        ("[tenants]\nacme = 5\n", ["line 2", "tenants.acme must be a table"]),
        ('[tenants."acme\\n"]\n', ["tenant name 'acme\\n'"]),
        ('[tenants."../etc"]\n', ["tenant name '../etc'"]),
        ('[tenants.acme]\nhome = "sftp://u@[::1/x"\n', ["line 2", "[tenants.acme] home"]),
        ('[tenants.acme]\nhome = "sftp://u@host:99999/x"\n', ["line 2", "[tenants.acme] home"]),
        ('[tenants.acme]\nexport_to = "sftp://u@[x/"\n', ["line 2", "[tenants.acme] export_to"]),
        ('[tenants.acme]\nknown_hosts = "~no-such-user-here/kh"\n', ["line 2", "known_hosts"]),
        ('[tenants.acme]\nca_file = "ca\\u0000.pem"\n', ["line 2", "ca_file"]),
        ('[listferry]\nstate = "st\\u0000ate"\n', ["line 2", "[listferry] state"]),
        ('[server]\ntls_cert = "\\u0000"\n', ["line 2", "[server] tls_cert"]),
    ],
)
def test_every_command_stops_at_a_broken_config_in_one_line(
    tmp_path: Path, content: str | bytes, words: list[str]
) -> None:
    path = write(tmp_path, content)
    for args in commands(tmp_path):
        assert_config_error(run(path, args), path, *words)


@pytest.mark.parametrize(
    "content, words",
    [
        ('[tenants.acme]\nstrategy = "replace"\n', ["line 2", "unknown strategy 'replace'"]),
        ('[tenants.acme]\nhome = "gopher://x/y"\n', ["line 2", "no transport for gopher://"]),
        ('[listferry]\nplugins = ["no_such_module_here"]\n', ["line 2", "plugins"]),
        ('[listferry]\ndisable = ["no-such-plugin"]\n', ["line 2", "no-such-plugin"]),
    ],
)
def test_names_no_plugin_provides_stop_every_command_that_loads_plugins(
    tmp_path: Path, content: str, words: list[str]
) -> None:
    path = write(tmp_path, content)
    for args in commands(tmp_path)[1:]:  # init loads no plugin, so it cannot know the names
        assert_config_error(run(path, args), path, *words)


# Wrong types, per key --------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """``value`` written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("-" if value < 0 else "") + "inf" if math.isinf(value) else repr(value)
    if isinstance(value, int | str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


def wrong_value(default: Any, check: Any) -> Any:
    """The first of a few values, each of another type than ``default``, that ``check`` refuses."""
    candidates = (5, "five", True, ["five"], {"five": 5})
    return next(v for v in candidates if type(v) is not type(default) and check(v))


@pytest.mark.parametrize(
    "table, key",
    [(table, key) for table, keys in TABLES.items() for key in keys],
)
def test_wrong_type_for_any_key_is_one_line_naming_it(tmp_path: Path, table: str, key: str) -> None:
    value = wrong_value(*TABLES[table][key])
    path = write(tmp_path, f"# a comment\n[{table}]\n{key} = {toml_value(value)}\n")
    result = run(path, ["tenant", "list"])
    assert_config_error(result, path, "line 3", f"[{table}] {key}")


# Generated values ------------------------------------------------------------------------

text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x7f"), max_size=12
)
scalars = st.one_of(
    text,
    st.sampled_from(["", "full", "off", "0.0.0.0", "10.0.0.0/8", "60000-60099", "-1", "~"]),
    st.integers(-(2**70), 2**70),
    st.integers(-3, 70000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(timezones=st.just(UTC)),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), scalars, max_size=2),
)


#: The generated arguments of :func:`any_value_loads_or_is_one_line_naming_it`.
any_value_for_any_key = {
    "table": st.sampled_from(sorted(TABLES)),
    "data": st.data(),
    "value": values,
}


def any_value_loads_or_is_one_line_naming_it(
    folder: Path, table: str, data: st.DataObject, value: Any
) -> int:
    """``value`` for a key of ``table`` drawn from ``data``: it loads, or exit 2 in one line.

    Returns the exit code of ``listferry tenant list``: 0 or 2.
    """
    key = data.draw(st.sampled_from(sorted(TABLES[table])), label="key")
    extra = "" if table == "tenants.acme" else GOOD_TENANT
    path = write(folder, f"{extra}[{table}]\n{key} = {toml_value(value)}\n")
    line = extra.count("\n") + 2
    refused = TABLES[table][key][1](value)
    result = run(path, ["tenant", "list"])
    if result.exit_code == 0:
        assert not refused
        return 0
    message = assert_config_error(result, path)
    if refused:
        assert f"line {line}: [{table}] {key} {refused}" in message
    else:  # a good type that names something no plugin provides
        assert key in message
    return 2


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(**any_value_for_any_key)
def test_any_value_for_any_key_loads_or_is_one_line_naming_it(
    tmp_path: Path, table: str, data: st.DataObject, value: Any
) -> None:
    any_value_loads_or_is_one_line_naming_it(tmp_path, table, data, value)
