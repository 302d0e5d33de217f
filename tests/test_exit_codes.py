"""Every command's errors: one line on stderr, exit 2 for a usage or config error, exit 1
for a refused operation or a voided or failed run; and each names the right place."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import people

from listferry.testing import Sandbox

PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f crm@acme\n"
)
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nxxx\n-----END OPENSSH PRIVATE KEY-----\n"


def file_in(ws: Sandbox, name: str, text: str) -> str:
    path = ws.root / name
    path.write_text(text)
    return str(path)


def voided_list(ws: Sandbox) -> None:
    ws.upload(people(3), count=4)


def config_with_unknown_key(ws: Sandbox) -> None:
    ws.config_path.write_text(ws.config_path.read_text() + "workers = 2\n")


def notify_less(ws: Sandbox) -> None:
    assert "\n[notify" not in ws.config_path.read_text()


#: (command, situation, set-up, arguments, stdin, exit code, words the error holds).
#: ``{root}`` in an argument is the sandbox folder.
CASES: list[tuple[str, str, Callable[[Sandbox], object] | None, list[str], str | None, int, str]]
CASES = [
    (
        "tenant add",
        "the tenant exists already",
        None,
        ["tenant", "add", "acme"],
        None,
        1,
        "exists already",
    ),
    (
        "tenant add",
        "an --allow-ip that is no address",
        None,
        ["tenant", "add", "bob", "--allow-ip", "1.2.3.x"],
        None,
        2,
        "[tenants.bob] allow_ips has '1.2.3.x'",
    ),
    (
        "tenant add",
        "an unknown --dialect",
        None,
        ["tenant", "add", "bob", "--dialect", "nope"],
        None,
        2,
        "[tenants.bob] dialect: unknown dialect 'nope'",
    ),
    (
        "tenant add",
        "an unknown --strategy",
        None,
        ["tenant", "add", "bob", "--strategy", "nope"],
        None,
        2,
        "[tenants.bob] strategy: unknown strategy 'nope'",
    ),
    (
        "tenant add",
        "a --home URL with a password",
        None,
        ["tenant", "add", "bob", "--home", "sftp://u:pw@example.net/in"],
        None,
        2,
        "[tenants.bob] home must not hold a password",
    ),
    (
        "tenant add",
        "a --home with no transport",
        None,
        ["tenant", "add", "bob", "--home", "gopher://example.net/in"],
        None,
        2,
        "[tenants.bob] home: no transport for gopher://",
    ),
    (
        "tenant add",
        "a name that could be a path",
        None,
        ["tenant", "add", "../evil"],
        None,
        2,
        "is not allowed",
    ),
    (
        "tenant add",
        "a name the servers use",
        None,
        ["tenant", "add", "server"],
        None,
        2,
        "holds the servers' own keys",
    ),
    (
        "tenant add",
        "--password-stdin with nothing on stdin",
        None,
        ["tenant", "add", "bob", "--password-stdin"],
        "",
        2,
        "no password on stdin",
    ),
    (
        "tenant add",
        "a private key as --ssh-key",
        lambda ws: file_in(ws, "id", PRIVATE_KEY),
        ["tenant", "add", "bob", "--ssh-key", "{root}/id"],
        None,
        2,
        "this is a private key",
    ),
    (
        "tenant add",
        "an --ssh-key file with no key",
        lambda ws: file_in(ws, "id.pub", "x\n"),
        ["tenant", "add", "bob", "--ssh-key", "{root}/id.pub"],
        None,
        2,
        "not an OpenSSH public key",
    ),
    (
        "tenant add",
        "a --count-file policy that does not exist",
        None,
        ["tenant", "add", "bob", "--count-file", "maybe"],
        None,
        2,
        "'maybe' is not one of",
    ),
    (
        "tenant set",
        "an unknown key",
        None,
        ["tenant", "set", "acme", "stratgy=full"],
        None,
        2,
        "unknown tenant key 'stratgy'",
    ),
    (
        "tenant set",
        "a value the key does not take",
        None,
        ["tenant", "set", "acme", "opt_out_columns=Do Not Email"],
        None,
        2,
        "opt_out_columns must be a list of column names",
    ),
    (
        "tenant set",
        "an unknown dialect",
        None,
        ["tenant", "set", "acme", "dialect=nope"],
        None,
        2,
        "unknown dialect 'nope'",
    ),
    (
        "tenant set",
        "an --allow-ip that is no address",
        None,
        ["tenant", "set", "acme", "--allow-ip", "1.2.3.x"],
        None,
        2,
        "allow_ips has '1.2.3.x'",
    ),
    (
        "tenant show",
        "an unknown tenant",
        None,
        ["tenant", "show", "nobody"],
        None,
        2,
        "no tenant 'nobody'",
    ),
    (
        "tenant remove",
        "an unknown tenant",
        None,
        ["tenant", "remove", "nobody"],
        None,
        2,
        "no tenant 'nobody'",
    ),
    (
        "tenant password",
        "nothing on stdin",
        None,
        ["tenant", "password", "acme", "--password-stdin"],
        "",
        2,
        "no password on stdin",
    ),
    (
        "tenant password",
        "an unknown tenant",
        None,
        ["tenant", "password", "nobody", "--password-stdin"],
        "pw\n",
        2,
        "no tenant 'nobody'",
    ),
    (
        "tenant ssh-keys",
        "a private key",
        lambda ws: file_in(ws, "id", PRIVATE_KEY),
        ["tenant", "ssh-keys", "acme", "{root}/id"],
        None,
        2,
        "this is a private key",
    ),
    ("sync", "no tenant and no --all", None, ["sync"], None, 2, "--all"),
    ("worker", "no [cluster] table", None, ["worker"], None, 2, "cluster mode is off"),
    (
        "cluster init",
        "no [cluster] table",
        None,
        ["cluster", "init"],
        None,
        2,
        "no [cluster] table in",
    ),
    (
        "cluster import",
        "no [cluster] table",
        None,
        ["cluster", "import", "--from", "{root}/listferry.toml"],
        None,
        2,
        "no [cluster] table in",
    ),
    ("cluster import", "no --from", None, ["cluster", "import"], None, 2, "'--from'"),
    (
        "cluster status",
        "no [cluster] table",
        None,
        ["cluster", "status", "--json"],
        None,
        2,
        "(see docs/cluster.md)",
    ),
    ("sync", "an unknown tenant", None, ["sync", "nobody"], None, 2, "no tenant 'nobody'"),
    ("sync", "a run is voided", voided_list, ["sync", "acme"], None, 1, "record count mismatch"),
    (
        "sync",
        "a config with an unknown key",
        config_with_unknown_key,
        ["sync", "--all"],
        None,
        2,
        "unknown key 'workers'",
    ),
    (
        "status",
        "the last run was voided",
        lambda ws: (voided_list(ws), ws.sync_all()),
        ["status"],
        None,
        1,
        "record count mismatch",
    ),
    ("runs", "an unknown tenant", None, ["runs", "nobody"], None, 2, "no tenant 'nobody'"),
    (
        "runs",
        "a run the tenant does not have",
        None,
        ["runs", "acme", "9"],
        None,
        1,
        "acme has no run 9",
    ),
    (
        "replay",
        "a run the tenant does not have",
        None,
        ["replay", "acme", "9"],
        None,
        1,
        "acme has no run 9",
    ),
    (
        "subscribers",
        "an unknown tenant",
        None,
        ["subscribers", "nobody"],
        None,
        2,
        "no tenant 'nobody'",
    ),
    (
        "events load",
        "a line with an unknown type",
        lambda ws: file_in(ws, "events.csv", "email,type,at\na@example.org,opne,2026-11-29\n"),
        ["events", "load", "acme", "{root}/events.csv"],
        None,
        1,
        "type 'opne' is not one of",
    ),
    (
        "export",
        "a --to folder that does not exist",
        None,
        ["export", "acme", "--to", "{root}/nowhere"],
        None,
        1,
        "no such folder",
    ),
    (
        "export",
        "a --to URL with no transport",
        None,
        ["export", "acme", "--to", "gopher://example.net/x"],
        None,
        2,
        "no transport for gopher://",
    ),
    (
        "check",
        "an unknown --dialect",
        lambda ws: file_in(ws, "l.csv", "email\na@example.org\n"),
        ["check", "{root}/l.csv", "--dialect", "nope"],
        None,
        2,
        "unknown dialect 'nope'",
    ),
    (
        "check",
        "the file would be voided",
        lambda ws: file_in(ws, "l.csv", "name\nAda\n"),
        ["check", "{root}/l.csv"],
        None,
        1,
        "void: missing column",
    ),
    (
        "push",
        "an unknown --dialect",
        lambda ws: file_in(ws, "l.csv", "email\na@example.org\n"),
        ["push", "{root}/l.csv", "{root}", "--dialect", "nope"],
        None,
        2,
        "--dialect: unknown dialect",
    ),
    (
        "push",
        "a URL with no transport",
        lambda ws: file_in(ws, "l.csv", "email\na@example.org\n"),
        ["push", "{root}/l.csv", "gopher://example.net/in"],
        None,
        2,
        "no transport for gopher://",
    ),
    (
        "push",
        "--password-stdin with nothing on stdin",
        lambda ws: file_in(ws, "l.csv", "email\na@example.org\n"),
        ["push", "{root}/l.csv", "{root}", "--password-stdin"],
        "",
        2,
        "no password on stdin",
    ),
    (
        "push",
        "a file that cannot be read",
        lambda ws: file_in(ws, "l.csv", 'email\n"a@b.org\n'),
        ["push", "{root}/l.csv", "{root}/in"],
        None,
        1,
        "not uploaded",
    ),
    (
        "push",
        "a folder that cannot be written to",
        lambda ws: file_in(ws, "l.csv", "email\na@example.org\n"),
        ["push", "{root}/l.csv", "{root}/missing/in"],
        None,
        1,
        "missing",
    ),
    (
        "serve",
        "an unknown protocol",
        None,
        ["serve", "--protocols", "gopher"],
        None,
        2,
        "unknown server 'gopher'",
    ),
    ("server keys", "no key files yet", None, ["server", "keys"], None, 2, "tls-cert.pem"),
    (
        "server keys",
        "--json with --known-hosts",
        None,
        ["server", "keys", "--json", "--known-hosts"],
        None,
        2,
        "do not go together",
    ),
    (
        "digest",
        "--send with no [notify.email]",
        notify_less,
        ["digest", "--send"],
        None,
        2,
        "--send needs a [notify.email] table",
    ),
    (
        "operator add",
        "a name that is not allowed",
        None,
        ["operator", "add", "Ada Lovelace"],
        None,
        2,
        "operator name 'Ada Lovelace' must be lower-case",
    ),
    (
        "operator add",
        "an operator that exists",
        lambda ws: ws.cli("operator", "add", "ada"),
        ["operator", "add", "ada"],
        None,
        1,
        "operator 'ada' exists already",
    ),
    (
        "operator password",
        "no such operator",
        None,
        ["operator", "password", "nobody"],
        None,
        1,
        "no operator 'nobody'",
    ),
    (
        "operator role",
        "a role that does not exist",
        None,
        ["operator", "role", "ada", "root"],
        None,
        2,
        "'root' is not one of 'viewer', 'admin'",
    ),
    (
        "operator revoke",
        "no such token",
        None,
        ["operator", "revoke", "7"],
        None,
        1,
        "no API token 7",
    ),
    (
        "new-plugin",
        "a name that is not allowed",
        None,
        ["new-plugin", "My CRM", "--dir", "{root}/pack"],
        None,
        2,
        "is not allowed",
    ),
    (
        "new-plugin",
        "a folder that exists",
        lambda ws: (ws.root / "pack").mkdir(),
        ["new-plugin", "mycrm", "--dir", "{root}/pack"],
        None,
        1,
        "exists already",
    ),
]


@pytest.mark.parametrize(
    ("command", "situation", "setup", "args", "stdin", "code", "words"),
    CASES,
    ids=[f"{case[0]}: {case[1]}" for case in CASES],
)
def test_each_error_is_one_line_with_the_exit_code_the_rule_gives(
    ws: Sandbox,
    command: str,
    situation: str,
    setup: Callable[[Sandbox], object] | None,
    args: list[str],
    stdin: str | None,
    code: int,
    words: str,
) -> None:
    ws.add_tenant("acme")
    if setup is not None:
        setup(ws)
    result = ws.cli(*[arg.replace("{root}", str(ws.root)) for arg in args], input=stdin)
    assert result.exit_code == code, result.output
    assert words in (result.stderr or result.stdout)  # a voided run is a result: on stdout
    assert "Traceback" not in result.output
    if "Usage:" not in result.stderr:  # click's own usage errors show the usage too
        assert result.stderr.strip().count("\n") == 0, result.stderr


#: A FILE argument that names no readable regular file: (command, the file, what is said).
NOT_A_FILE = [
    (["check", "{file}"], "", "no file named: the file name is empty"),
    (["check", "{file}"], "nope.csv", "nope.csv: no such file"),
    (["check", "{file}"], "folder", "folder: a folder, not a file"),
    (["check", "{file}"], "fifo", "fifo: not a regular file (a pipe, socket or device)"),
    (["events", "load", "acme", "{file}"], "nope.csv", "nope.csv: no such file"),
    (["events", "load", "acme", "{file}"], "folder", "folder: a folder, not a file"),
    (
        ["events", "load", "acme", "{file}"],
        "fifo",
        "fifo: not a regular file (a pipe, socket or device)",
    ),
    (["events", "load", "acme", "{file}"], "", "no file named: the file name is empty"),
    (["push", "{file}", "{root}/in"], "nope.csv", "nope.csv: no such file"),
    (["push", "{file}", "{root}/in"], "folder", "folder: a folder, not a file"),
    (
        ["push", "{file}", "{root}/in"],
        "fifo",
        "fifo: not a regular file (a pipe, socket or device)",
    ),
]


@pytest.mark.parametrize(
    ("args", "name", "said"), NOT_A_FILE, ids=[f"{a[0]} {n or 'empty'}" for a, n, _ in NOT_A_FILE]
)
def test_a_file_argument_that_is_no_readable_file_is_one_line_and_exit_2(
    ws: Sandbox, monkeypatch: pytest.MonkeyPatch, args: list[str], name: str, said: str
) -> None:
    import os
    import subprocess
    import sys

    ws.add_tenant("acme")
    (ws.root / "folder").mkdir()
    os.mkfifo(ws.root / "fifo")  # opened for reading, it would wait for a writer for ever
    monkeypatch.chdir(ws.root)
    command = [sys.executable, "-m", "listferry", "--config", str(ws.config_path)]
    command += [a.replace("{file}", name).replace("{root}", str(ws.root)) for a in args]

    done = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert (done.returncode, done.stderr) == (2, f"Error: {said}\n")


def test_a_refused_tenant_add_leaves_the_config_as_it_was(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    before = ws.config_path.read_text()
    for args in (["--dialect", "nope"], ["--allow-ip", "1.2.3.x"], ["--strategy", "x"]):
        assert ws.cli("tenant", "add", "bob", *args).exit_code == 2
    assert ws.config_path.read_text() == before


def test_a_refused_tenant_add_names_no_line_the_file_does_not_have(ws: Sandbox) -> None:
    result = ws.cli("tenant", "add", "bob", "--dialect", "nope")
    assert result.exit_code == 2
    assert "is left as it was: [tenants.bob] dialect: unknown dialect 'nope'" in result.stderr
    assert " line " not in result.stderr
    assert " line " not in result.stderr


# -- [defaults] ----------------------------------------------------------------------------


def set_default(ws: Sandbox, line: str) -> int:
    """Put ``line`` under ``[defaults]``; returns its line number."""
    lines = ws.config_path.read_text().splitlines(keepends=True)
    at = next(i for i, text in enumerate(lines) if text.startswith("[defaults]")) + 1
    lines.insert(at, line + "\n")
    ws.config_path.write_text("".join(lines))
    return at + 1


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('dialect = "nope"', "dialect: unknown dialect 'nope'"),
        ('strategy = "replace"', "strategy: unknown strategy 'replace'"),
        ('export_template = "nope"', "export_template: unknown template 'nope'"),
        ('export_to = "gopher://example.net/x"', "export_to: no transport for gopher://"),
        ('ca_file = "https://[x/"', "ca_file 'https://[x/'"),
    ],
)
def test_a_bad_value_in_defaults_names_defaults_and_its_line(
    ws: Sandbox, line: str, words: str
) -> None:
    ws.add_tenant("acme")
    ws.add_tenant("beta")
    key = line.split(" ", 1)[0]
    text = re.sub(rf"^{key} = .*\n", "", ws.config_path.read_text(), flags=re.M)
    ws.config_path.write_text(text)
    number = set_default(ws, line)
    result = ws.cli("tenant", "list")
    assert result.exit_code == 2
    assert f"listferry.toml line {number}: [defaults] {words}" in result.stderr
    assert "tenants.acme" not in result.stderr


def test_a_bad_default_is_blamed_on_defaults_when_one_tenant_overrides_it(ws: Sandbox) -> None:
    ws.add_tenant("acme", dialect="default")
    ws.add_tenant("beta")
    text = ws.config_path.read_text().replace(
        'dialect = "default"\nstrategy', 'dialect = "x"\nstrategy'
    )
    ws.config_path.write_text(text)
    assert tomllib.loads(text)["defaults"]["dialect"] == "x"
    result = ws.cli("tenant", "list")
    assert result.exit_code == 2
    assert "[defaults] dialect: unknown dialect 'x'" in result.stderr


def test_tenant_add_under_a_bad_default_names_defaults(ws: Sandbox) -> None:
    set_default(ws, 'export_template = "nope"')
    result = ws.cli("tenant", "add", "acme")
    assert result.exit_code == 2
    assert "[defaults] export_template: unknown template 'nope'" in result.stderr
    assert "tenants.acme" not in result.stderr


# -- wording -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "2am",
            "schedule '2am' is neither a time of day ('02:00') nor a cron expression of "
            "five fields ('30 2 * * 1-5')",
        ),
        ("61 2 * * *", "schedule '61 2 * * *': minute: '61' is outside 0-59"),
        ("0 0 31 2 *", "schedule '0 0 31 2 *' is never due"),
    ],
)
def test_a_schedule_that_cannot_be_read_is_said_in_plain_english(
    ws: Sandbox, value: str, message: str
) -> None:
    ws.add_tenant("acme")
    ws.config_path.write_text(ws.config_path.read_text() + f'schedule = "{value}"\n')
    result = ws.cli("tenant", "list")
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(f"[tenants.acme] {message}")


def test_the_exit_code_rule_is_written_where_the_cli_starts() -> None:
    import listferry.cli

    doc = listferry.cli.__doc__ or ""
    assert "2 a usage or config error" in doc and "1 a refused operation" in doc
    assert Path(__file__).name in doc
