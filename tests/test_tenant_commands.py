"""`tenant set`, `show` and `remove`: the config file changed in place, comments and all."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import people
from test_crash import listferry_command

from listferry.config import TENANT_KEYS
from listferry.config.passwords import hash_password, verify_password
from listferry.store.locks import EXPORTS, RUNS, tenant_lock
from listferry.testing import Sandbox

HAND_WRITTEN = """\
# listferry for the newsletter platform
[listferry]
state = "state"    # private: stores and archives
homes = "homes"

[defaults]
count_file = "optional"
schedule = ""

# ACME Corp: full lists from Salesforce, nightly
[tenants.acme]
strategy   = "full"          # as agreed in the contract
allow_ips  = [
    "203.0.113.0/24",  # office
    "198.51.100.7",    # home office
]
count_file = "required"
password_hash = "{hash}"

# Beta Ltd: incremental lists
[tenants.beta]
strategy = "incremental"

# the end
"""


@pytest.fixture
def hand_written(ws: Sandbox) -> str:
    """A config an operator wrote by hand: comments, aligned keys, a multi-line list."""
    text = HAND_WRITTEN.replace("{hash}", hash_password("acme-Passw0rd"))
    ws.config_path.write_text(text)
    for name in ("acme", "beta"):
        (ws.root / "homes" / name).mkdir(parents=True)
    return text


def unchanged(ws: Sandbox, before: bytes, inode: int) -> bool:
    return ws.config_path.read_bytes() == before and ws.config_path.stat().st_ino == inode


# -- tenant set ---------------------------------------------------------------------------


def test_set_changes_only_what_it_names_and_keeps_every_comment_and_line(
    ws: Sandbox, hand_written: str
) -> None:
    result = ws.cli(
        "tenant",
        "set",
        "acme",
        "--strategy",
        "incremental",
        "--add-allow-ip",
        "127.0.0.1",
        "--remove-allow-ip",
        "198.51.100.7/32",
        "--unset",
        "count_file",
        "max_invalid_share=0.1",
        "require_tls=true",
    )
    assert result.exit_code == 0, result.output
    expected = (
        hand_written.replace('strategy   = "full"', 'strategy   = "incremental"')
        .replace('    "198.51.100.7",    # home office\n', "")
        .replace("# office\n", '# office\n    "127.0.0.1",\n')
        .replace('count_file = "required"\n', "")
        .replace("\n\n# Beta Ltd", "\nmax_invalid_share = 0.1\nrequire_tls = true\n\n# Beta Ltd")
    )
    assert ws.config_path.read_text() == expected
    acme = ws.tenant
    assert (acme.strategy, acme.count_file, acme.require_tls) == ("incremental", "optional", True)
    assert acme.allow_ips == ("203.0.113.0/24", "127.0.0.1")
    assert acme.max_invalid_share == 0.1
    assert 'acme: allow_ips = ["203.0.113.0/24", "127.0.0.1"]' in result.output
    assert 'acme: count_file unset, now "optional"' in result.output


def test_set_takes_any_tenant_key_as_toml_when_the_key_takes_that_else_as_text(
    ws: Sandbox, hand_written: str
) -> None:
    result = ws.cli(
        "tenant",
        "set",
        "beta",
        "schedule=02:30:00",
        "export_name=2024",
        'export_fields=["email", "status"]',
        "remote_retries=5",
        "settle_seconds=1.5",
        "timezone=Europe/Berlin",
    )
    assert result.exit_code == 0, result.output
    beta = tomllib.loads(ws.config_path.read_text())["tenants"]["beta"]
    assert beta["schedule"] == "02:30:00" and beta["export_name"] == "2024"
    assert beta["export_fields"] == ["email", "status"]
    assert beta["remote_retries"] == 5 and beta["settle_seconds"] == 1.5
    assert beta["timezone"] == "Europe/Berlin"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stratgy=full"], "unknown tenant key 'stratgy' (did you mean 'strategy'?)"),
        (["count_file=maybe"], "count_file must be one of required, optional, off"),
        (['allow_ips=["10.0.0.300"]'], "allow_ips has '10.0.0.300', which is not an IP"),
        (["--strategy", "replace"], "[tenants.acme] strategy: unknown strategy 'replace'"),
        (["--dialect", "nosuch"], "[tenants.acme] dialect: unknown dialect 'nosuch'"),
        (["home=ftp://crm.example:99999/x"], "home 'ftp://crm.example:99999/x'"),
        (["--unset", "nosuch"], "unknown tenant key 'nosuch'"),
        (["--remove-allow-ip", "192.0.2.1"], "192.0.2.1 is not in acme's allow list"),
        (["strategy", "full"], "a setting must be KEY=VALUE"),
    ],
)
def test_a_refused_change_is_one_line_exit_2_and_leaves_the_file_byte_for_byte(
    ws: Sandbox, hand_written: str, args: list[str], message: str
) -> None:
    before, inode = ws.config_path.read_bytes(), ws.config_path.stat().st_ino
    result = ws.cli("tenant", "set", "acme", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert unchanged(ws, before, inode)


def test_set_refuses_a_key_given_twice_or_a_list_given_whole_and_in_parts(
    ws: Sandbox, hand_written: str
) -> None:
    before, inode = ws.config_path.read_bytes(), ws.config_path.stat().st_ino
    for args, message in (
        (["--strategy", "full", "strategy=incremental"], "strategy is given twice"),
        (["--allow-ip", "127.0.0.1", "--add-allow-ip", "127.0.0.2"], "the allow list whole"),
        ([], "nothing to change"),
    ):
        result = ws.cli("tenant", "set", "acme", *args)
        assert result.exit_code == 2, result.output
        assert message in result.stderr and "Traceback" not in result.output
    missing = ws.cli("tenant", "set", "nosuch", "--strategy", "full")
    assert missing.exit_code == 2 and "no tenant 'nosuch'" in missing.stderr
    assert unchanged(ws, before, inode)


def test_set_never_prints_a_secret_and_stores_only_a_hash(ws: Sandbox, hand_written) -> None:
    result = ws.cli(
        "tenant",
        "set",
        "acme",
        "--password-stdin",
        "remote_password=hunter2-Secret",
        input="n3w-Passw0rd\n",
    )
    assert result.exit_code == 0, result.output
    assert "n3w-Passw0rd" not in result.output and "hunter2" not in result.output
    assert "scrypt" not in result.output
    assert "acme: password_hash = set (not shown)" in result.stdout
    assert "remote_password_env" in result.stderr  # a word on passwords in a command line
    text = ws.config_path.read_text()
    assert "n3w-Passw0rd" not in text
    assert verify_password("n3w-Passw0rd", ws.tenant.password_hash)


def test_set_with_what_the_file_says_already_changes_nothing(ws: Sandbox, hand_written) -> None:
    inode = ws.config_path.stat().st_ino
    result = ws.cli("tenant", "set", "beta", "--strategy", "incremental")
    assert result.exit_code == 0
    assert "nothing changed" in result.output
    assert ws.config_path.stat().st_ino == inode


def test_a_change_keeps_the_files_mode_and_owner(ws: Sandbox, hand_written: str) -> None:
    os.chmod(ws.config_path, 0o640)
    owner = (4321, 4321) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(ws.config_path, *owner)  # as root: the service user's file, changed by root
    assert ws.cli("tenant", "set", "acme", "--count-file", "off").exit_code == 0
    after = ws.config_path.stat()
    assert (after.st_mode & 0o777, (after.st_uid, after.st_gid)) == (0o640, owner)


def test_set_edits_a_tenant_written_as_an_inline_table(ws: Sandbox) -> None:
    ws.config_path.write_text(
        '[listferry]\nstate = "state"\n\n[tenants]\n'
        'acme = { strategy = "full" }  # one line per tenant\nbeta = {}\n'
    )
    assert ws.cli("tenant", "set", "acme", "--strategy", "incremental").exit_code == 0
    assert ws.cli("tenant", "set", "beta", "--count-file", "off").exit_code == 0
    text = ws.config_path.read_text()
    assert 'acme = { strategy = "incremental" }  # one line per tenant' in text
    assert ws.app().config.tenant("beta").count_file == "off"


def test_keys_added_to_and_taken_from_an_inline_table_keep_its_layout(ws: Sandbox) -> None:
    ws.config_path.write_text(
        '[listferry]\nstate = "state"\n\n[tenants]\n'
        'acme = { strategy = "incremental", count_file = "off" }  # spaced\n'
        'beta = {strategy="full", count_file="off"}\n'
    )

    for args in (
        ["acme", "max_invalid_share=0.3"],
        ["acme", "--unset", "strategy"],
        ["beta", "max_invalid_share=0.3"],
        ["beta", "--unset", "strategy"],
    ):
        assert ws.cli("tenant", "set", *args).exit_code == 0

    assert ws.config_path.read_text().endswith(
        '[tenants]\nacme = { count_file = "off", max_invalid_share = 0.3 }  # spaced\n'
        'beta = {count_file="off", max_invalid_share=0.3}\n'
    )


def test_tenants_written_inline_are_removed_and_a_table_among_them_is_refused(
    ws: Sandbox,
) -> None:
    ws.config_path.write_text('[tenants]\nacme = { strategy = "full" }\nbeta = {}\n')
    assert ws.cli("tenant", "remove", "acme").exit_code == 0
    assert ws.config_path.read_text() == "[tenants]\nbeta = {}\n"
    ws.config_path.write_text('tenants = { acme = { strategy = "full" } }\n')
    before, inode = ws.config_path.read_bytes(), ws.config_path.stat().st_ino
    result = ws.cli("tenant", "add", "gamma")
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(
        "cannot change safely (dotted keys, inline tables); edit the file by hand"
    )
    assert unchanged(ws, before, inode)


def test_a_tenant_in_dotted_keys_that_tomlkit_would_drop_is_refused(ws: Sandbox) -> None:
    ws.config_path.write_text('tenants.acme.strategy = "full"\n\n[listferry]\nstate = "state"\n')
    before, inode = ws.config_path.read_bytes(), ws.config_path.stat().st_ino
    result = ws.cli("tenant", "set", "acme", "--unset", "strategy")
    assert result.exit_code == 2
    assert "cannot change safely" in result.stderr and "edit the file by hand" in result.stderr
    assert unchanged(ws, before, inode)
    assert ws.cli("tenant", "set", "acme", "--count-file", "off").exit_code == 0
    assert ws.tenant.count_file == "off"


def test_parallel_changes_all_land(ws: Sandbox, hand_written: str) -> None:
    """Each change reads the file under a lock, so none is lost to another's write."""
    base = [*listferry_command(), "--config", str(ws.config_path), "tenant", "set"]
    changes = [
        ["acme", "remote_retries=7"],
        ["beta", "remote_retries=8"],
        ["acme", "--count-file", "off"],
        ["beta", "contact_email=crm@beta.example"],
    ]
    procs = [subprocess.Popen([*base, *args], stdout=subprocess.DEVNULL) for args in changes]
    assert [proc.wait(timeout=60) for proc in procs] == [0, 0, 0, 0]
    config = ws.app().config
    acme, beta = config.tenant("acme"), config.tenant("beta")
    assert (acme.remote_retries, acme.count_file) == (7, "off")
    assert (beta.remote_retries, beta.contact_email) == (8, "crm@beta.example")
    assert "# ACME Corp: full lists from Salesforce, nightly" in config.text


def test_password_and_ssh_keys_go_the_same_way_as_set(ws: Sandbox, hand_written, tmp_path):
    keys = tmp_path / "crm.pub"
    keys.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f crm\n"
    )
    assert ws.cli("tenant", "ssh-keys", "beta", str(keys)).exit_code == 0
    done = ws.cli("tenant", "password", "beta", "--password-stdin", input="beta-Passw0rd\n")
    assert done.exit_code == 0
    assert ws.config_path.read_text().endswith(
        '[tenants.beta]\nstrategy = "incremental"\nssh_keys = ['
        '"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f crm"]\n'
        f'password_hash = "{ws.app().config.tenant("beta").password_hash}"\n\n# the end\n'
    )


# -- tenant add -----------------------------------------------------------------------------


def test_add_puts_the_table_after_the_last_tenant_and_above_the_comments_after_it(
    ws: Sandbox, hand_written: str
) -> None:
    result = ws.cli("tenant", "add", "gamma", "--strategy", "add-only", "--allow-ip", "192.0.2.9")
    assert result.exit_code == 0, result.output
    assert ws.config_path.read_text() == hand_written.replace(
        "\n# the end\n",
        '\n[tenants.gamma]\nstrategy = "add-only"\nallow_ips = ["192.0.2.9"]\n\n# the end\n',
    )
    refused = ws.cli("tenant", "add", "server")
    assert refused.exit_code == 2 and "servers' own keys" in refused.stderr


# -- tenant show ----------------------------------------------------------------------------


def test_show_gives_the_settings_that_apply_and_where_each_comes_from(
    ws: Sandbox, hand_written: str
) -> None:
    assert ws.cli("tenant", "set", "acme", "remote_password=hunter2-Secret").exit_code == 0
    result = ws.cli("tenant", "show", "acme", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["name"] == "acme" and Path(shown["home"]) == ws.root / "homes" / "acme"
    assert shown["strategy"] == "full" and shown["count_file"] == "required"
    assert shown["schedule"] == "" and shown["dialect"] == "default"
    assert shown["allow_ips"] == ["203.0.113.0/24", "198.51.100.7"]
    assert shown["password"] is True and shown["remote_password"] is True
    assert shown["ssh_keys"] == 0
    assert shown["from"]["strategy"] == "tenant" and shown["from"]["schedule"] == "defaults"
    assert shown["from"]["dialect"] == "default"
    assert set(shown["from"]) == set(TENANT_KEYS) - {"password_hash"} | {"password"}
    text = ws.cli("tenant", "show", "acme").stdout
    assert "password_hash" not in result.stdout + text and "scrypt" not in result.stdout + text
    assert "hunter2" not in result.stdout + text
    lines = text.splitlines()
    assert lines[0] == "acme"
    assert any(line.split() == ["schedule", "=", '""', "#", "[defaults]"] for line in lines)
    assert any(line.split() == ["strategy", "=", '"full"'] for line in lines)
    assert "  password: set" in lines and any(line.startswith("  ssh_keys: 0") for line in lines)
    missing = ws.cli("tenant", "show", "nosuch")
    assert missing.exit_code == 2 and "no tenant 'nosuch'" in missing.stderr


# -- tenant remove --------------------------------------------------------------------------


def test_remove_keeps_store_archive_and_home_aside_and_every_other_line(
    ws: Sandbox, hand_written: str
) -> None:
    ws.upload(people(3), tenant="acme", count=3)
    assert [run.status for run in ws.sync_all(tenant="acme")] == ["applied"]
    state, home = ws.root / "state" / "acme", ws.root / "homes" / "acme"
    (home / "waiting.csv").write_text("email\nlate@example.org\n")

    result = ws.cli("tenant", "remove", "acme")
    assert result.exit_code == 0, result.output
    assert ws.config_path.read_text() == hand_written.replace(
        hand_written[hand_written.index("# ACME") : hand_written.index("# Beta")], ""
    )
    assert not state.exists() and not home.exists()
    (aside,) = (ws.root / "state" / "_removed").iterdir()
    assert aside.name.startswith("acme-") and aside.name.endswith("Z")
    assert (aside / "state" / "tenant.db").is_file()
    assert len(list((aside / "state" / "archive").iterdir())) == 2  # the list and its count
    assert (aside / "home" / "waiting.csv").read_text().startswith("email")
    assert f"moved to {aside / 'state'}" in result.stdout
    assert f"moved to {aside / 'home'}" in result.stdout
    gone = ws.cli("sync", "acme")
    assert gone.exit_code == 2 and "no tenant 'acme'" in gone.stderr
    assert ws.cli("tenant", "add", "acme").exit_code == 0  # the name is free again
    assert not (ws.root / "state" / "acme" / "tenant.db").exists()


def test_remove_purge_deletes_the_folders_and_never_touches_a_customer_hosted_home(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme")
    ws.upload(people(2), tenant="acme")
    ws.sync(tenant="acme")
    crm = "sftp://listferry@crm.example.net:22/exports"
    assert ws.cli("tenant", "add", "beta", "--home", crm).exit_code == 0
    result = ws.cli("tenant", "remove", "acme", "--purge")
    assert result.exit_code == 0, result.output
    assert not (ws.root / "state" / "acme").exists() and not (ws.root / "homes" / "acme").exists()
    assert not (ws.root / "state" / "_removed").exists()
    remote = ws.cli("tenant", "remove", "beta", "--purge")
    assert remote.exit_code == 0, remote.output
    assert f"its home {crm}: on the customer's server, not touched" in remote.stdout
    assert "tenants" not in tomllib.loads(ws.config_path.read_text())
    assert ws.app().config.tenants == {}


def test_remove_leaves_a_home_that_is_not_the_tenants_alone(ws: Sandbox) -> None:
    ws.add_tenant("acme", home="shared")
    ws.add_tenant("beta", home="shared/beta")
    result = ws.cli("tenant", "remove", "acme", "--purge")
    assert result.exit_code == 0, result.output
    assert "left in place (shared with tenant beta)" in result.stdout
    assert (ws.root / "shared" / "beta").is_dir()


@pytest.mark.parametrize(("lock", "what"), [(RUNS, "a run"), (EXPORTS, "an export")])
def test_remove_is_refused_while_a_run_or_an_export_holds_the_tenant(
    ws: Sandbox, lock: str, what: str
) -> None:
    ws.add_tenant("acme")
    ws.upload(people(2), tenant="acme")
    ws.sync(tenant="acme")
    before, inode = ws.config_path.read_bytes(), ws.config_path.stat().st_ino
    with tenant_lock(ws.tenant, lock) as held:
        assert held
        result = ws.cli("tenant", "remove", "acme", "--purge")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: acme has {what} in progress; try again when it ends"
    assert unchanged(ws, before, inode)
    assert (ws.root / "state" / "acme" / "tenant.db").is_file()
    assert (ws.root / "homes" / "acme").is_dir()


# -- values that cannot work are refused ---------------------------------------------------------

CANNOT_WORK = [
    ("password_hash=hunter2", "password_hash must be a password hash as"),
    ('ssh_keys=["garbage"]', "ssh_keys item 1 is not an OpenSSH public key"),
    ('ssh_keys=["ssh-ed25519 AAAA-not-base64 crm"]', "ssh_keys item 1 is not an OpenSSH public"),
    ("pattern=", "pattern must not be empty"),
    ("pattern=out/*.csv", "pattern must be a file name pattern"),
    ("home=sftp://127.0.0.1/", "home 'sftp://127.0.0.1/' names no user"),
    ("home=ftps://:2990/", "home 'ftps://:2990/' names no host"),
    ("home=~no-such-user-here/x", "home '~no-such-user-here/x': no user 'no-such-user-here'"),
]


@pytest.mark.parametrize(("setting", "said"), CANNOT_WORK, ids=[s for s, _ in CANNOT_WORK])
def test_set_refuses_a_value_that_cannot_work_and_leaves_the_file(
    ws: Sandbox, hand_written: str, setting: str, said: str
) -> None:
    before, inode = ws.config_path.read_bytes(), ws.config_path.stat().st_ino

    result = ws.cli("tenant", "set", "beta", setting)

    assert result.exit_code == 2, result.output
    assert len(result.stderr.splitlines()) == 1 and said in result.stderr, result.stderr
    assert "hunter2" not in result.stderr  # a password written in by mistake is not shown
    assert unchanged(ws, before, inode)


@pytest.mark.parametrize(("setting", "said"), CANNOT_WORK, ids=[s for s, _ in CANNOT_WORK])
def test_a_hand_edited_config_with_a_value_that_cannot_work_names_its_line(
    ws: Sandbox, hand_written: str, setting: str, said: str
) -> None:
    key, value = setting.split("=", 1)
    value = value if value.startswith("[") else f'"{value}"'
    ws.config_path.write_text(
        hand_written.replace(
            'strategy = "incremental"', f'strategy = "incremental"\n{key} = {value}'
        )
    )
    line = ws.config_path.read_text().splitlines().index(f"{key} = {value}") + 1

    result = ws.cli("tenant", "list")

    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {ws.config_path} line {line}: [tenants.beta] {said}")
    assert len(result.stderr.splitlines()) == 1


def test_add_refuses_a_home_url_without_its_user(ws: Sandbox) -> None:
    result = ws.cli("tenant", "add", "acme", "--home", "sftp://files.example.net/out")
    assert result.exit_code == 2
    assert "home 'sftp://files.example.net/out' names no user" in result.stderr
    assert ws.app().config.tenants == {}


def test_a_home_under_tilde_is_the_home_folder_of_the_user_not_a_folder_named_tilde(
    ws: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "operator"))
    monkeypatch.chdir(tmp_path)
    ws.add_tenant("acme")

    result = ws.cli("tenant", "set", "acme", "home=~/lists/acme")

    assert result.exit_code == 0, result.output
    assert ws.tenant.home == str(tmp_path / "operator" / "lists" / "acme")
    assert (tmp_path / "operator" / "lists" / "acme").is_dir()
    assert not any(p.name == "~" for p in ws.root.rglob("*"))


def test_remote_retries_zero_means_no_retry(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    assert ws.cli("tenant", "set", "acme", "remote_retries=0").exit_code == 0
    assert ws.tenant.remote_retries == 0
    refused = ws.cli("tenant", "set", "acme", "remote_retries=-1")
    assert refused.exit_code == 2 and "remote_retries must be a whole number, 0 or more" in (
        refused.stderr
    )


def test_a_hash_the_tenant_password_command_wrote_and_a_real_key_are_taken(
    ws: Sandbox, tmp_path: Path
) -> None:
    import subprocess

    ws.add_tenant("acme")
    key = tmp_path / "crm"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert ws.cli("tenant", "ssh-keys", "acme", f"{key}.pub").exit_code == 0
    done = ws.cli("tenant", "password", "acme", "--password-stdin", input="s3cret-enough\n")
    assert done.exit_code == 0
    again = ws.cli("tenant", "set", "acme", f"password_hash={ws.tenant.password_hash}")
    assert again.exit_code == 0, again.output


def test_show_gives_the_return_file_template_that_applies_not_null(
    ws: Sandbox, plugin_dir: Path
) -> None:
    from conftest import write_module

    write_module(
        plugin_dir,
        "jsonl_crm_for_test",
        """
        from listferry import hookimpl
        from listferry.dialect import Dialect

        @hookimpl
        def register_dialects(register):
            register(Dialect(name="jsonl-crm", template="jsonl"))
        """,
    )
    text = ws.config_path.read_text().replace(
        'homes = "homes"', 'homes = "homes"\nplugins = ["jsonl_crm_for_test"]'
    )
    ws.config_path.write_text(text)
    ws.add_tenant("acme")
    ws.add_tenant("beta", dialect="jsonl-crm")

    acme = json.loads(ws.cli("tenant", "show", "acme", "--json").stdout)
    beta = json.loads(ws.cli("tenant", "show", "beta", "--json").stdout)
    lines = ws.cli("tenant", "show", "beta").stdout.splitlines()

    assert (acme["export_template"], acme["from"]["export_template"]) == ("csv", "default")
    assert (beta["export_template"], beta["from"]["export_template"]) == ("jsonl", "dialect")
    assert any(
        line.split() == ["export_template", "=", '"jsonl"', "#", "the", "dialect's"]
        for line in lines
    ), lines
