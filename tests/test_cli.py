"""The command line as CLI.md promises it: names, exit codes, JSON fields, one-line errors."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import people
from test_crash import listferry_command

from listferry.cli import cli
from listferry.config.passwords import verify_password
from listferry.testing import Sandbox

RUN_FIELDS = {
    "tenant",
    "run_id",
    "status",
    "file",
    "strategy",
    "reason",
    "received",
    "added",
    "updated",
    "removed",
    "unchanged",
    "invalid",
    "started_at",
    "finished_at",
}


def run_cli(*args: str, config: Path | None = None, input: str | None = None):
    prefix = ["--config", str(config)] if config else []
    return CliRunner().invoke(cli, [*prefix, *args], input=input)


def test_init_writes_config_and_folders_and_is_safe_twice(tmp_path: Path) -> None:
    config = tmp_path / "listferry.toml"
    first = run_cli("init", config=config)
    assert first.exit_code == 0, first.output
    assert (tmp_path / "state").is_dir() and (tmp_path / "homes").is_dir()
    config.write_text(config.read_text() + "\n# my comment\n")
    second = run_cli("init", config=config)
    assert second.exit_code == 0
    assert "# my comment" in config.read_text()


def test_init_says_which_folders_it_created_and_which_existed(tmp_path: Path) -> None:
    config = tmp_path / "listferry.toml"
    first = run_cli("init", config=config)
    assert f"created folder {tmp_path / 'state'}\n" in first.output
    assert f"created folder {tmp_path / 'homes'}\n" in first.output
    config.write_text(config.read_text() + "\n[tenants.acme]\n")
    second = run_cli("init", config=config)
    assert f"folder {tmp_path / 'state'} exists already\n" in second.output
    assert f"folder {tmp_path / 'homes'} exists already\n" in second.output
    assert f"created folder {tmp_path / 'homes' / 'acme'}\n" in second.output
    assert (tmp_path / "homes" / "acme").is_dir()
    assert "created" not in run_cli("init", config=config).output


def test_tenant_add_stores_only_a_salted_hash_and_creates_the_home(ws: Sandbox) -> None:
    result = ws.cli(
        "tenant",
        "add",
        "acme",
        "--password-stdin",
        "--allow-ip",
        "203.0.113.0/24",
        "--strategy",
        "incremental",
        "--count-file",
        "required",
        input="s3cret-Passw0rd\n",
    )
    assert result.exit_code == 0, result.output
    text = ws.config_path.read_text()
    assert "s3cret-Passw0rd" not in text
    stored = tomllib.loads(text)["tenants"]["acme"]["password_hash"]
    assert verify_password("s3cret-Passw0rd", stored)
    assert not verify_password("wrong", stored)
    assert ws.home.is_dir()
    again = ws.cli("tenant", "add", "beta", "--password-stdin", input="s3cret-Passw0rd\n")
    assert again.exit_code == 0
    other = tomllib.loads(ws.config_path.read_text())["tenants"]["beta"]["password_hash"]
    assert other != stored  # salted


@pytest.mark.parametrize(
    "name", ["../evil", "a/b", "a\\b", ".hidden", "..", "a\x00b", "Acme", "", "x" * 64]
)
def test_tenant_add_refuses_names_that_could_be_paths(ws: Sandbox, name: str) -> None:
    before = ws.config_path.read_text()
    result = ws.cli("tenant", "add", name)
    assert result.exit_code != 0
    assert "not allowed" in result.output
    assert ws.config_path.read_text() == before


def test_tenant_add_with_unknown_strategy_leaves_config_untouched(ws: Sandbox) -> None:
    before = ws.config_path.read_text()
    result = ws.cli("tenant", "add", "acme", "--strategy", "replace")
    assert result.exit_code == 2
    assert "unknown strategy 'replace'" in result.output
    assert ws.config_path.read_text() == before


def test_tenant_add_twice_is_refused(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    result = ws.cli("tenant", "add", "acme")
    assert result.exit_code == 1
    assert "exists already" in result.output


#: The base64 of an Ed25519 public key (32 bytes 0..31), as OpenSSH writes one.
ED25519_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"


def test_tenant_add_takes_a_public_key_and_refuses_a_private_one(ws: Sandbox, tmp_path) -> None:
    public = tmp_path / "id.pub"
    public.write_text(f"ssh-ed25519 {ED25519_KEY} crm@acme\n")
    assert ws.cli("tenant", "add", "acme", "--ssh-key", str(public)).exit_code == 0
    private = tmp_path / "id"
    private.write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nxxx\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    result = ws.cli("tenant", "add", "beta", "--ssh-key", str(private))
    assert result.exit_code == 2 and "private key" in result.output


def test_tenant_list_json_has_the_contract_fields_and_no_secret(ws: Sandbox) -> None:
    ws.cli(
        "tenant",
        "add",
        "acme",
        "--password-stdin",
        "--allow-ip",
        "198.51.100.7",
        input="pw-long-enough\n",
    )
    result = ws.cli("tenant", "list", "--json")
    assert result.exit_code == 0
    [tenant] = json.loads(result.output)
    assert {"name", "home", "dialect", "strategy", "count_file", "allow_ips"} <= set(tenant)
    assert tenant["allow_ips"] == ["198.51.100.7"]
    assert Path(tenant["home"]).is_absolute()
    assert "scrypt" not in result.output and "password_hash" not in result.output


def test_sync_json_prints_runs_and_exits_0_when_applied(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(people(3), count=3)
    result = ws.cli("sync", "acme", "--json")
    assert result.exit_code == 0, result.output
    [run] = json.loads(result.output)
    assert set(run) >= RUN_FIELDS
    assert run["status"] == "applied" and run["reason"] is None
    assert run["received"] == 3 and run["added"] == 3
    assert run["started_at"].endswith("Z") and run["finished_at"].endswith("Z")


def test_sync_exits_1_when_a_run_is_voided_and_names_the_reason(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.add_tenant("beta")
    ws.upload(people(3), tenant="acme", count=4)
    ws.upload(people(2), tenant="beta")
    result = ws.cli("sync", "--all")
    assert result.exit_code == 1
    assert "acme: voided" in result.output and "count file says 4, file has 3" in result.output
    assert "beta: applied" in result.output


def test_sync_with_nothing_pending_is_idle_and_exits_0(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    result = ws.cli("sync", "acme", "--json")
    assert result.exit_code == 0
    [run] = json.loads(result.output)
    assert run["status"] == "idle" and run["reason"] is None and run["run_id"] is None


def test_sync_needs_a_tenant_or_all(ws: Sandbox) -> None:
    result = ws.cli("sync")
    assert result.exit_code == 2 and "--all" in result.output


def test_unknown_tenant_is_one_line(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    result = ws.cli("runs", "nobody")
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "no tenant 'nobody'" in result.output and "acme" in result.output


def test_runs_are_listed_newest_first_with_a_limit(ws: Sandbox) -> None:
    ws.add_tenant("acme", strategy="incremental")
    for i in range(3):
        ws.upload(people(2, start=i * 2))
        ws.sync()
    result = ws.cli("runs", "acme", "--json", "--limit", "2")
    runs = json.loads(result.output)
    assert [r["run_id"] for r in runs] == [3, 2]
    assert set(runs[0]) >= RUN_FIELDS


def test_subscribers_json_has_the_contract_shape(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(
        "E-Mail;Given Name;Surname;Segment;Member Type\n"
        " ADA@Example.org ;Ada;Lovelace;GOLD;Fellow\n"
    )
    ws.sync()
    result = ws.cli("subscribers", "acme", "--json")
    assert json.loads(result.output) == [
        {
            "email": "ada@example.org",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "segment_code": "GOLD",
            "status": "active",
            "fields": {"Member Type": "Fellow"},
        }
    ]
    assert json.loads(ws.cli("subscribers", "acme", "--json", "--status", "removed").output) == []


def test_events_load_stores_each_event_once(ws: Sandbox, tmp_path: Path) -> None:
    ws.add_tenant("acme")
    ws.upload(people(2))
    ws.sync()
    events = tmp_path / "events.csv"
    events.write_text(
        "email,type,at,topic\n"
        "p0@example.org,open,2026-11-29T08:00:00Z,News\n"
        "P0@example.org,open,2026-11-29T09:00:00+01:00,News\n"
        "p1@example.org,unsubscribe,2026-11-29T10:00:00Z,\n"
    )
    result = ws.cli("events", "load", "acme", str(events))
    assert result.exit_code == 0, result.output
    assert "2 events stored, 1 already known" in result.output
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text('{"email": "p0@example.org", "type": "click", "at": "2026-11-29T08:01:00Z"}\n')
    assert "1 events stored" in ws.cli("events", "load", "acme", str(jsonl)).output
    assert set(ws.subscribers("unsubscribed")) == {"p1@example.org"}


def test_events_load_says_how_many_events_name_addresses_not_on_the_list(
    ws: Sandbox, tmp_path: Path
) -> None:
    ws.add_tenant("acme")
    ws.upload(people(3))
    ws.sync()
    ws.upload(people(2))
    ws.sync()  # p2 is removed
    events = tmp_path / "events.csv"
    events.write_text(
        "email,type,at\n"
        "p0@example.org,open,2026-11-29T08:00:00Z\n"
        "p2@example.org,open,2026-11-29T08:00:00Z\n"
        "stranger@example.org,unsubscribe,2026-11-29T08:00:00Z\n"
        "stranger@example.org,open,2026-11-29T09:00:00Z\n"
        "P1@example.org,click,2026-11-29T08:00:00Z\n"
    )
    result = ws.cli("events", "load", "acme", str(events))
    assert result.exit_code == 0, result.output
    assert result.output == (
        "acme: 5 events stored, 0 already known; events for addresses not on the list: 3\n"
    )
    again = ws.cli("events", "load", "acme", str(events))
    assert "0 events stored, 5 already known; events for addresses not on the list: 1" in (
        again.output
    )  # the stranger is on the list now, unsubscribed; p2 was removed from it


def test_events_load_with_a_bad_line_names_it_and_stores_nothing(ws: Sandbox, tmp_path) -> None:
    ws.add_tenant("acme")
    events = tmp_path / "events.csv"
    events.write_text(
        "email,type,at,topic\np0@example.org,open,2026-11-29T08:00:00Z,\n"
        "p0@example.org,opne,2026-11-29T08:00:00Z,\n"
    )
    result = ws.cli("events", "load", "acme", str(events))
    assert result.exit_code == 1
    assert f"{events} line 3: type 'opne' is not one of" in result.output
    with ws.store() as store:
        assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0


def test_check_json_shape_and_exit_code(tmp_path: Path) -> None:
    good = tmp_path / "list.csv"
    rows = "".join(f"p{i}@example.org,P{i},x\n" for i in range(20))
    good.write_text(f"Email Address,First Name,Notes\n{rows}bad@,B,y\n")
    result = run_cli("check", str(good), "--json", config=tmp_path / "none.toml")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {
        "file",
        "tenant",
        "status",
        "reason",
        "records",
        "invalid",
        "dialect",
        "mapping",
        "columns",
        "warnings",
        "plan",
    } <= set(data)
    assert data["status"] == "ok" and data["records"] == 21 and data["invalid"] == 1
    assert data["tenant"] is None and data["plan"] is None and data["dialect"] == "default"
    assert data["columns"] == {"Email Address": "email", "First Name": "first_name", "Notes": None}
    (tmp_path / "list_count.txt").write_text("5\n")
    voided = run_cli("check", str(good), "--json", config=tmp_path / "none.toml")
    assert voided.exit_code == 1
    assert json.loads(voided.output)["reason"].startswith("record count mismatch")


def test_plugins_all_lists_built_ins_with_their_hooks(ws: Sandbox) -> None:
    result = ws.cli("plugins", "--all", "--json")
    plugins = {p["name"]: p for p in json.loads(result.output)}
    assert plugins["csv"]["builtin"] and plugins["csv"]["enabled"]
    assert plugins["csv"]["hooks"] == ["register_readers"]
    only = json.loads(ws.cli("plugins", "--all", "--json", "--hook", "check_plan").output)
    assert [p["name"] for p in only] == ["plan-checks"]


def test_plugins_without_all_leaves_the_built_ins_out(ws: Sandbox) -> None:
    listed = json.loads(ws.cli("plugins", "--json").output)
    assert not any(p["builtin"] for p in listed)
    assert json.loads(ws.cli("plugins", "--json", "--hook", "check_plan").output) == []
    text = ws.cli("plugins", "--hook", "check_plan")
    assert text.exit_code == 0 and text.stdout == ""
    assert "--all lists those" in text.stderr


def test_installed_executable_reports_bad_config_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "listferry.toml"
    config.write_text('[tenants.acme]\nstratgy = "full"\n')
    done = subprocess.run(
        [*listferry_command(), "--config", str(config), "sync", "--all"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "line 2" in done.stderr and "stratgy" in done.stderr


def test_installed_executable_syncs_and_lists(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(people(5), count=5)
    base = [*listferry_command(), "--config", str(ws.config_path)]
    done = subprocess.run([*base, "sync", "acme"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "acme: applied subscriber_list.csv (run 1): 5 received, 5 added" in done.stdout
    listed = subprocess.run(
        [*base, "subscribers", "acme"], capture_output=True, text=True, check=True
    )
    assert listed.stdout.count("@example.org") == 5


def test_demo_shows_apply_update_and_void_quickly() -> None:
    done = subprocess.run(
        [*listferry_command(), "demo"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "applied subscriber_list.csv (run 1): 8 received, 8 added" in out
    assert "2 added, 2 updated, 2 removed" in out
    assert "voided subscriber_list.csv (run 3): record count mismatch" in out
    assert out.count("active subscribers now: 8") == 3


def test_log_format_json_writes_each_log_line_and_the_final_error_as_one_json_object(
    ws: Sandbox,
) -> None:
    import json as json_module
    import os
    import subprocess
    import sys

    ws.add_tenant("acme")
    ws.upload(people(3))
    base = [sys.executable, "-m", "listferry", "--config", str(ws.config_path)]
    done = subprocess.run(
        [*base, "--log-format", "json", "-v", "sync", "acme"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = [json_module.loads(line) for line in done.stderr.splitlines()]
    ran = [line for line in lines if "run" in line]
    assert len(ran) == 1 and ran[0]["tenant"] == "acme" and ran[0]["level"] == "info"
    assert ran[0]["run"]["status"] == "applied" and ran[0]["run"]["added"] == 3
    assert ran[0]["time"].endswith("Z")

    env = {**os.environ, "LISTFERRY_LOG_FORMAT": "json"}
    failed = subprocess.run([*base, "sync", "nosuch"], capture_output=True, text=True, env=env)
    assert failed.returncode == 2
    (line,) = failed.stderr.splitlines()
    error = json_module.loads(line)
    assert error["level"] == "error" and "no tenant 'nosuch'" in error["message"]

    text = subprocess.run([*base, "sync", "nosuch"], capture_output=True, text=True)
    assert text.stderr.startswith("Error: ") and "\n" not in text.stderr.strip()


def test_tenant_password_and_ssh_keys_change_only_their_line(ws: Sandbox, tmp_path) -> None:
    from listferry.config.passwords import verify_password

    ws.cli("tenant", "add", "acme", "--password-stdin", input="old-password\n")
    ws.cli("tenant", "add", "beta", "--password-stdin", input="beta-password\n")
    with open(ws.config_path, "a") as f:
        f.write("# the operator's own comment\n")
    before = ws.config_path.read_text()

    done = ws.cli("tenant", "password", "acme", "--password-stdin", input="new-password\n")
    assert done.exit_code == 0, done.output
    acme = ws.tenant
    assert verify_password("new-password", acme.password_hash)
    assert not verify_password("old-password", acme.password_hash)
    assert verify_password("beta-password", ws.app().config.tenant("beta").password_hash)
    after = ws.config_path.read_text()
    changed = [a for a, b in zip(after.splitlines(), before.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and changed[0].startswith("password_hash = ")
    assert "new-password" not in after

    keys = tmp_path / "keys.pub"
    keys.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDxN8e6vuEiMDjWkRk0vVxGZdtP1dL4qk6Eh7fH1kG2X old\n"
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBq7wJw3G3t8Qk2lOqP0x9JZ9bqF3p4j5sZ8s9T0aB1C new\n"
    )
    assert ws.cli("tenant", "ssh-keys", "acme", str(keys)).exit_code == 0
    assert len(ws.tenant.ssh_keys) == 2
    keys.write_text(keys.read_text().splitlines()[1] + "\n")
    assert ws.cli("tenant", "ssh-keys", "acme", str(keys)).exit_code == 0
    assert [k.split()[-1] for k in ws.tenant.ssh_keys] == ["new"]
    assert "# the operator's own comment" in ws.config_path.read_text()

    refused = ws.cli("tenant", "password", "nosuch", "--password-stdin", input="x\n")
    assert refused.exit_code == 2 and "no tenant 'nosuch'" in refused.stderr
