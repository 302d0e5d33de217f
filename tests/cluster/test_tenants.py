"""Tenants shared by every node, in PostgreSQL, and ``cluster import``: real PostgreSQL
and SeaweedFS, each node a state folder of its own and each command its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from listferry.cluster.database import connect, create_schema
from listferry.cluster.lease import lock_key

from .test_cluster_sync import csv_text, keys, people, rows

LISTFERRY = (sys.executable, "-m", "listferry")


def node_config(root: Path, database_url: str, bucket) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "listferry.toml"
    path.write_text(
        f'[listferry]\nstate = "state"\nworkers = 1\n\n[cluster]\ndatabase = "{database_url}"\n\n'
        f'[storage]\nurl = "{bucket.url}"\nendpoint_url = "{bucket.endpoint_url}"\n\n'
        '[defaults]\ncount_file = "optional"\n'
    )
    return path


def run(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "listferry", "--config", str(config), *args]
    env = {**os.environ, "LISTFERRY_LOAD_PLUGINS": ""}
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=120, input=stdin
    )


def ok(config: Path, *args: str, stdin: str | None = None) -> str:
    done = run(config, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def listed(config: Path) -> dict[str, dict]:
    return {t["name"]: t for t in json.loads(ok(config, "tenant", "list", "--json"))}


def two_nodes(tmp_path: Path, database_url: str, bucket) -> tuple[Path, Path]:
    with connect(database_url) as conn:
        create_schema(conn)
    return (
        node_config(tmp_path / "a", database_url, bucket),
        node_config(tmp_path / "b", database_url, bucket),
    )


def test_a_tenant_added_on_one_node_is_seen_changed_and_removed_on_another(
    tmp_path: Path, database_url: str, bucket
) -> None:
    a, b = two_nodes(tmp_path, database_url, bucket)
    said = ok(a, "tenant", "add", "acme", "--strategy", "incremental", "--allow-ip", "10.0.0.0/8")
    assert said == f"added tenant acme: home {bucket.url}/homes/acme/\n"
    seen = listed(b)["acme"]
    assert seen["home"] == f"{bucket.url}/homes/acme/"
    assert (seen["strategy"], seen["allow_ips"], seen["count_file"]) == (
        "incremental",
        ["10.0.0.0/8"],
        "optional",
    )
    ok(b, "tenant", "set", "acme", "--add-allow-ip", "192.0.2.1", "max_invalid_share=0.2")
    ok(b, "tenant", "password", "acme", "--password-stdin", stdin="a-long-upload-password\n")
    now = listed(a)["acme"]
    assert now["allow_ips"] == ["10.0.0.0/8", "192.0.2.1"] and now["password"] is True
    shown = json.loads(ok(a, "tenant", "show", "acme", "--json"))
    assert shown["max_invalid_share"] == 0.2 and shown["from"]["max_invalid_share"] == "tenant"
    assert shown["from"]["count_file"] == "defaults"
    ((settings,),) = rows(database_url, "SELECT settings FROM listferry_tenants")
    assert settings["password_hash"].startswith("scrypt$") and "a-long" not in json.dumps(settings)
    with connect(database_url) as other:  # a run of acme holds its lease on another node
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key("acme"),))
        refused = run(a, "tenant", "remove", "acme")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "Error: acme has a run in progress; try again when it ends"
    assert "acme" in listed(b)
    assert ok(a, "tenant", "remove", "acme").startswith("removed tenant acme from the cluster")
    assert listed(b) == {}
    done = run(b, "tenant", "show", "acme")
    assert done.returncode == 2 and "no tenant 'acme'" in done.stderr


def test_concurrent_changes_of_two_keys_from_two_nodes_are_both_kept(
    tmp_path: Path, database_url: str, bucket
) -> None:
    a, b = two_nodes(tmp_path, database_url, bucket)
    ok(a, "tenant", "add", "acme")
    env = {**os.environ, "LISTFERRY_LOAD_PLUGINS": ""}
    for round_ in range(4):
        procs = [
            subprocess.Popen(
                [*LISTFERRY, "--config", str(config), "tenant", "set", "acme", setting],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for config, setting in (
                (a, f"keep_reports={round_ + 2}"),
                (b, f"remote_timeout={round_ + 10}"),
            )
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        ((settings,),) = rows(database_url, "SELECT settings FROM listferry_tenants")
        assert settings == {"keep_reports": round_ + 2, "remote_timeout": round_ + 10}


def test_a_bad_row_is_one_line_and_the_other_tenants_still_work(
    tmp_path: Path, database_url: str, bucket
) -> None:
    a, _ = two_nodes(tmp_path, database_url, bucket)
    ok(a, "tenant", "add", "good")
    with connect(database_url) as conn:
        conn.execute(
            "INSERT INTO listferry_tenants (name, settings) VALUES "
            """('acme', '{"strategy": "x"}'), ('bent', '{"max_invalid_share": 7}')"""
        )
    done = run(a, "tenant", "list", "--json")
    assert done.returncode == 0, done.stderr
    assert [t["name"] for t in json.loads(done.stdout)] == ["good"]
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith(
        "listferry: database tenant acme: key strategy: unknown strategy 'x' (known: "
    )
    assert lines[0].endswith(") (the other tenants are used)")
    assert lines[1].startswith("listferry: database tenant bent: key max_invalid_share: ")
    done = run(a, "tenant", "show", "acme")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(
        "Error: database tenant acme: key strategy: unknown strategy 'x'"
    )
    ok(a, "tenant", "set", "acme", "--strategy", "full")  # a bad row can be mended
    assert sorted(listed(a)) == ["acme", "good"]
    refused = run(a, "tenant", "set", "good", "--strategy", "y")
    assert refused.returncode == 2
    bent, line = refused.stderr.strip().splitlines()  # bent's row is still bad
    assert bent.startswith("listferry: database tenant bent: ")
    assert line.startswith(
        "Error: database tenant good is left as it was: key strategy: unknown strategy 'y'"
    )
    assert listed(a)["good"]["strategy"] == "full"


def test_tenant_tables_in_a_cluster_nodes_config_are_refused(
    tmp_path: Path, database_url: str, bucket
) -> None:
    a, _ = two_nodes(tmp_path, database_url, bucket)
    a.write_text(a.read_text() + "\n[tenants.acme]\n")
    done = run(a, "tenant", "list")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "line 15: [tenants.acme]: in cluster mode the tenants live in the cluster's" in line
    assert "listferry cluster import --from" in line


def test_an_unreachable_database_is_one_line_without_its_password(
    tmp_path: Path, database_url: str, bucket
) -> None:
    from .services import free_port

    a, _ = two_nodes(tmp_path, database_url, bucket)
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    a.write_text(a.read_text().replace(database_url, dead))
    env = {**os.environ, "LISTFERRY_LOAD_PLUGINS": ""}
    done = subprocess.run(
        [sys.executable, "-m", "listferry", "--config", str(a), "tenant", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"Error: database {dead}: could not connect: ")


def single_machine(root: Path) -> Path:
    """A single machine's site made with the normal CLI: tenant acme with two applied
    runs (an archived file each) and a list waiting in its home; tenant bob, no runs."""
    root.mkdir()
    config = root / "listferry.toml"
    config.write_text(
        '[listferry]\nstate = "state"\nhomes = "homes"\nworkers = 1\n\n'
        '[defaults]\ncount_file = "off"\nmax_shrink_share = 0.9\n'
    )
    ok(config, "tenant", "add", "acme", "--strategy", "full")
    ok(config, "tenant", "add", "bob", "--allow-ip", "198.51.100.7")
    home = root / "homes" / "acme"
    for n in (30, 40):
        (home / "list.csv").write_text(csv_text(people(n)))
        (run,) = json.loads(ok(config, "sync", "acme", "--json"))
        assert run["status"] == "applied"
    (home / "waiting.txt").write_text("not a list: it waits in the home\n")
    return config


def test_cluster_import_moves_settings_store_archive_and_home_and_runs_twice(
    tmp_path: Path, database_url: str, bucket
) -> None:
    single = single_machine(tmp_path / "single")
    a, b = two_nodes(tmp_path, database_url, bucket)
    done = run(a, "cluster", "import", "--from", str(single))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "acme: imported: settings, store version 1 (2 runs), 2 archived files, "
        "2 files from its home"
    ), done.stdout
    assert lines[1] == (
        "bob: imported: settings, no store yet, 0 archived files, 0 files from its home"
    )
    tenants = listed(b)
    assert tenants["acme"]["home"] == f"{bucket.url}/homes/acme/"
    assert tenants["bob"]["allow_ips"] == ["198.51.100.7"]
    # the single machine's [defaults] this node does not share came along in the row
    assert json.loads(ok(b, "tenant", "show", "acme", "--json"))["max_shrink_share"] == 0.9
    assert rows(database_url, "SELECT tenant, version, subscribers FROM listferry_stores") == [
        ("acme", 1, 40)
    ]  # counted, as a publish does: status shows them at once
    assert rows(database_url, "SELECT tenant, version FROM listferry_store_versions") == [
        ("acme", 1)
    ]
    assert rows(database_url, "SELECT count(*) FROM listferry_runs WHERE tenant = 'acme'") == [(2,)]
    archived = keys(bucket, "archive/acme/")
    assert len(archived) == 2 and all(key.endswith("-list.csv") for key in archived)
    assert sorted(keys(bucket, "homes/acme/")) == ["list.result.txt", "waiting.txt"]
    runs = json.loads(ok(b, "runs", "acme", "--json"))
    assert all(r["archive"].startswith(f"{bucket.url}/archive/acme/") for r in runs), runs
    # a new upload on top of the imported list: the counts prove the store came along
    key = bucket.url.split("/", 3)[3] + "/homes/acme/list.csv"
    bucket.server.client().put_object(
        Bucket=bucket.name, Key=key, Body=csv_text(people(45)).encode()
    )
    synced = run(b, "sync", "--here", "acme", "--json")
    (new,) = json.loads(synced.stdout)
    assert (new["status"], new["added"], new["unchanged"], new["run_id"]) == (
        "applied",
        5,
        40,
        3,
    ), synced.stderr
    assert rows(database_url, "SELECT version FROM listferry_stores") == [(2,)]
    again = run(a, "cluster", "import", "--from", str(single))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "acme: already in the cluster, skipped (--replace imports it again over it)",
        "bob: already in the cluster, skipped (--replace imports it again over it)",
    ]
    assert rows(database_url, "SELECT version FROM listferry_stores") == [(2,)]


def test_cluster_import_of_a_tenant_that_does_not_check_leaves_nothing_and_exits_1(
    tmp_path: Path, database_url: str, bucket
) -> None:
    single = single_machine(tmp_path / "single")
    text = single.read_text().replace("[tenants.bob]", '[tenants.bob]\nexport_template = "nope"')
    single.write_text(text)
    a, _ = two_nodes(tmp_path, database_url, bucket)
    done = run(a, "cluster", "import", "--from", str(single))
    assert done.returncode == 1
    assert done.stdout.startswith("acme: imported: ")
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("bob: not imported: database tenant bob: key export_template: ")
    assert sorted(listed(a)) == ["acme"]


def test_a_long_running_process_sees_a_change_made_on_another_node(
    tmp_path: Path, database_url: str, bucket
) -> None:
    from listferry.app import ConfigReload, open_app

    a, b = two_nodes(tmp_path, database_url, bucket)
    reload = ConfigReload(open_app(b))
    reload.tenants.every = 0  # ask the database at every call
    assert reload.changed() is None
    ok(a, "tenant", "add", "acme")
    app = reload.changed()
    assert app is not None and list(app.config.tenants) == ["acme"]
    assert reload.changed() is None
    ok(a, "tenant", "set", "acme", "--strategy", "incremental")
    assert reload.changed().config.tenants["acme"].strategy == "incremental"
    ok(a, "tenant", "remove", "acme")
    assert reload.changed().config.tenants == {}
