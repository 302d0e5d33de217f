"""A bad config is one line naming the file, the line and the key, before any run starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from listferry.app import open_app
from listferry.config import checks, load_config, parse_config
from listferry.errors import ConfigError
from listferry.text import size_text


def config_error(text: str, tmp_path: Path) -> str:
    path = tmp_path / "listferry.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        open_app(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_misspelled_tenant_key_is_named_with_its_line_and_a_suggestion(tmp_path: Path) -> None:
    message = config_error('[tenants.acme]\ndialect = "default"\nstratgy = "full"\n', tmp_path)
    assert "line 3" in message
    assert "'stratgy'" in message
    assert "did you mean 'strategy'" in message


def test_unknown_strategy_is_named_with_the_known_ones(tmp_path: Path) -> None:
    message = config_error('[tenants.acme]\nstrategy = "replace"\n', tmp_path)
    assert "line 2" in message and "unknown strategy 'replace'" in message
    assert "incremental" in message


def test_unknown_dialect_is_refused(tmp_path: Path) -> None:
    message = config_error('[tenants.acme]\ndialect = "salesforse"\n', tmp_path)
    assert "unknown dialect 'salesforse'" in message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[tenants.acme]\ncount_file = "sometimes"\n', "count_file must be one of"),
        ("[tenants.acme]\nmax_shrink_share = 5\n", "max_shrink_share must be a number from 0 to 1"),
        ("[tenants.acme]\nmax_invalid_share = true\n", "max_invalid_share must be a number"),
        ('[tenants.acme]\nallow_ips = ["10.0.0.300"]\n', "not an IP address or CIDR"),
        ('[tenants.acme]\nallow_ips = "10.0.0.1"\n', "allow_ips must be a list of strings"),
        ("[tenants.acme]\nsettle_seconds = -1\n", "settle_seconds must be a number of seconds"),
        (
            "[tenants.acme]\nremote_timeout = 0\n",
            "remote_timeout must be a number of seconds above 0",
        ),
        ("[listferry]\nstate = 7\n", "state must be a str"),
        ('[listferry]\nplugins = "x"\n', "plugins must be a list of strings"),
        ('[tenant.acme]\nstrategy = "full"\n', "unknown table [tenant]"),
        ('[tenants."Bad/Name"]\n', "tenant name 'Bad/Name'"),
        ('[tenants.acme]\nstrategy = "full\n', "not valid TOML"),
        ("tenants = 3\n", "tenants must be a table"),
        ('[listferry]\ndisable = ["no-such-plugin"]\n', "unknown plugin(s): no-such-plugin"),
        ('[listferry]\nplugins = ["no_such_module_here"]\n', "cannot be imported"),
        ('[tenants.acme]\nhome = "gopher://x/y"\n', "no transport for gopher://"),
        (
            "[server]\nftp_port = 3321\nsftp_port = 3321\n",
            "line 3: [server] sftp_port is 3321, as ftp_port is: each protocol needs a port",
        ),
        ("[server]\nftps_port = 990\nimplicit_ftps_port = 990\n", "as ftps_port is"),
    ],
)
def test_bad_values_are_refused_with_the_key(tmp_path: Path, text: str, words: str) -> None:
    assert words in config_error(text, tmp_path)


def test_missing_config_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="listferry init"):
        load_config(tmp_path / "nope.toml")


def test_non_utf8_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "listferry.toml"
    path.write_bytes(b'[tenants.acme]\nstrategy = "full"\n# \xff\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_defaults_apply_to_every_tenant_unless_it_says_otherwise(tmp_path: Path) -> None:
    text = (
        '[defaults]\nstrategy = "incremental"\ncount_file = "required"\n'
        '[tenants.acme]\n[tenants.beta]\nstrategy = "full"\n'
    )
    config = parse_config(text, tmp_path / "listferry.toml")
    assert config.tenant("acme").strategy == "incremental"
    assert config.tenant("beta").strategy == "full"
    assert config.tenant("beta").count_file == "required"


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    text = '[listferry]\nstate = "s"\nhomes = "h"\n[tenants.acme]\n[tenants.beta]\nhome = "x/b"\n'
    config = parse_config(text, tmp_path / "listferry.toml")
    assert config.tenant("acme").home == str(tmp_path / "h" / "acme")
    assert config.tenant("beta").home == str(tmp_path / "x" / "b")
    assert config.tenant("acme").database == tmp_path / "s" / "acme" / "tenant.db"


def test_config_is_found_through_the_environment(tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from listferry.cli import cli

    path = tmp_path / "elsewhere.toml"
    path.write_text("[tenants.acme]\n")
    monkeypatch.setenv("LISTFERRY_CONFIG", str(path))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["tenant", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert '"name": "acme"' in result.output


def test_a_home_url_with_a_password_in_it_is_refused(tmp_path: Path) -> None:
    message = config_error('[tenants.acme]\nhome = "sftp://acme:s3cret@127.0.0.1/in"\n', tmp_path)
    assert "line 2" in message and "must not hold a password" in message
    assert "s3cret" not in message


def test_key_and_ca_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    text = (
        '[tenants.acme]\nhome = "sftp://acme@127.0.0.1/in"\n'
        'known_hosts = "keys/known_hosts"\nca_file = "ca.pem"\nremote_key_file = "/abs/key"\n'
    )
    tenant = parse_config(text, tmp_path / "listferry.toml").tenant("acme")
    assert tenant.known_hosts == str(tmp_path / "keys" / "known_hosts")
    assert tenant.ca_file == str(tmp_path / "ca.pem")
    assert tenant.remote_key_file == "/abs/key"


@pytest.mark.parametrize(
    ("value", "size"),
    [(0, 0), (4096, 4096), ("500 MB", 500_000_000), ("2 GiB", 2 << 30), ("1.5kb", 1500)],
)
def test_a_size_is_bytes_or_a_number_and_a_unit(value: object, size: int) -> None:
    assert checks.byte_size(value) is None
    assert checks.bytes_of(value) == size


@pytest.mark.parametrize("value", [-1, "x", "5 XB", "MB", True, 1.5, "1e9"])
def test_a_size_without_a_known_unit_is_refused(value: object) -> None:
    assert "must be a size" in checks.byte_size(value)


@pytest.mark.parametrize("value", ["10 GB", "2 GiB", "300 KB", "1 MiB", "1 TiB", "64 KB"])
def test_a_size_is_shown_as_the_operator_wrote_it(value: str) -> None:
    """Limit messages name sizes one way, the way the config wrote them."""
    assert size_text(checks.bytes_of(value)) == value
