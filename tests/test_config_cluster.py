"""``[cluster]`` and ``[storage]``: both or neither, no secret in either, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from listferry.config import parse_config
from listferry.config.shared import tenant_of_row
from listferry.errors import ConfigError

CLUSTER = """\
[listferry]
state = "state"

[cluster]
database = "postgresql://listferry@127.0.0.1:5432/listferry"

[storage]
url = "s3://lists-bucket/nightly"
endpoint_url = "http://127.0.0.1:8333"
"""


def load(tmp_path: Path, text: str) -> object:
    """The config ``text`` means, as a node reads it before it asks its database for
    the tenants (tests/cluster/test_tenants.py has those)."""
    return parse_config(text, tmp_path / "listferry.toml")


def test_a_cluster_config_reads_and_homes_are_in_storage(tmp_path: Path) -> None:
    config = load(tmp_path, CLUSTER)
    assert config.cluster.database == "postgresql://listferry@127.0.0.1:5432/listferry"
    assert config.storage.endpoint_url == "http://127.0.0.1:8333"
    assert tenant_of_row(config, "acme", {}).home == "s3://lists-bucket/nightly/homes/acme/"


def test_tenant_tables_in_a_cluster_config_are_refused_with_their_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, CLUSTER + "\n[tenants.acme]\nstrategy = 'full'\n")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'listferry.toml'} line 11: [tenants.acme]: ")
    assert "listferry cluster import --from" in message and "\n" not in message


def test_a_database_row_is_checked_as_a_tenant_table_would_be(tmp_path: Path) -> None:
    config = load(tmp_path, CLUSTER)
    with pytest.raises(ConfigError, match=r"^database tenant acme: key max_invalid_share: "):
        tenant_of_row(config, "acme", {"max_invalid_share": 2})
    with pytest.raises(ConfigError, match=r"^database tenant acme: unknown key 'stratgy' "):
        tenant_of_row(config, "acme", {"stratgy": "full"})


def test_without_cluster_nothing_changes(tmp_path: Path) -> None:
    config = load(tmp_path, '[listferry]\nstate = "state"\n[tenants.acme]\n')
    assert config.cluster is None and config.storage is None
    assert config.tenants["acme"].home == str(tmp_path / "homes" / "acme")


def test_the_database_url_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LISTFERRY_DATABASE_URL", "postgresql://u:secret@db.internal/lf")
    config = load(
        tmp_path,
        CLUSTER.replace('database = "postgresql://listferry@127.0.0.1:5432/listferry"\n', ""),
    )
    assert config.cluster.database == "postgresql://u:secret@db.internal/lf"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            ("listferry@127.0.0.1", "listferry:pw@127.0.0.1"),
            r"line 5: \[cluster\] database must not hold a password",
        ),
        (
            ("postgresql://", "mysql://"),
            r"line 5: \[cluster\] database .* must be a postgresql:// URL",
        ),
        (
            ('database = "postgresql://listferry@127.0.0.1:5432/listferry"', ""),
            r"line 4: \[cluster\] database is not set, nor is \$LISTFERRY_DATABASE_URL",
        ),
        (
            ("s3://lists-bucket/nightly", "https://lists-bucket"),
            r"line 8: \[storage\] url must be an s3://",
        ),
        (
            ("s3://lists-bucket/nightly", "s3://x/nightly"),
            r"\[storage\] url .* is not a bucket name",
        ),
        (
            ("s3://lists-bucket/nightly", "s3://lists-bucket/../x"),
            r"\[storage\] url .* must not hold",
        ),
        (('url = "s3://lists-bucket/nightly"', ""), r"line 7: \[storage\] needs url"),
        (
            ("[storage]", "[storage]\nregoin = 'x'"),
            r"\[storage\] unknown key 'regoin' \(did you mean 'region'\?\)",
        ),
        (("[cluster]", "[cluster]\nconcurrency = 0"), r"\[cluster\] concurrency"),
    ],
)
def test_bad_cluster_settings_are_named_with_their_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: tuple[str, str], words: str
) -> None:
    monkeypatch.delenv("LISTFERRY_DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match=words):
        load(tmp_path, CLUSTER.replace(*change))


def test_cluster_needs_storage_and_storage_needs_cluster(tmp_path: Path) -> None:
    without_storage = CLUSTER.split("[storage]")[0]
    with pytest.raises(ConfigError, match=r"\[cluster\] needs a \[storage\] table"):
        load(tmp_path, without_storage)
    without_cluster = CLUSTER.replace(
        '[cluster]\ndatabase = "postgresql://listferry@127.0.0.1:5432/listferry"\n', ""
    )
    with pytest.raises(ConfigError, match=r"\[storage\] is used only with a \[cluster\] table"):
        load(tmp_path, without_cluster)
