"""`sync --all` runs tenants in parallel processes and reports them as if one by one."""

from __future__ import annotations

import fcntl
import json
import os
import textwrap

import pytest
from conftest import people

from listferry.testing import Sandbox

NAMES = ["delta", "alpha", "echo", "charlie", "bravo", "foxtrot"]

#: Crashes the process running a tenant, in the ways a worker can die.
CRASHER = """
    import os
    import signal

    from listferry import hookimpl


    @hookimpl
    def run_finished(run):
        with open(os.environ["LF_FINISHED"], "a") as f:
            f.write(f"{run.tenant} {run.status} {os.getpid()}\\n")


    @hookimpl
    def check_plan(plan, tenant, force):
        if tenant.name == "exits":
            os._exit(3)
        if tenant.name == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        if tenant.name == "raises":
            raise KeyboardInterrupt
        return None
"""


def set_workers(ws: Sandbox, workers: int, plugin: str | None = None) -> None:
    extra = f"workers = {workers}\n" + (f'plugins = ["{plugin}"]\n' if plugin else "")
    text = ws.config_path.read_text().replace("[listferry]\n", f"[listferry]\n{extra}", 1)
    ws.config_path.write_text(text)


@pytest.fixture
def crasher(ws: Sandbox, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LF_FINISHED", str(ws.root / "finished.txt"))
    folder = ws.root / "plugin_modules"
    folder.mkdir()
    (folder / "lf_crasher.py").write_text(textwrap.dedent(CRASHER))
    monkeypatch.syspath_prepend(str(folder))
    return "lf_crasher"


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_sync_all_prints_one_line_per_run_in_config_order(ws: Sandbox, workers: int) -> None:
    for i, name in enumerate(NAMES):
        ws.add_tenant(name)
        ws.upload(people(10 + i), tenant=name)
    set_workers(ws, workers)
    result = ws.cli("sync", "--all")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split(":")[0] for line in lines] == NAMES
    assert all(": applied subscriber_list.csv" in line for line in lines)
    for i, name in enumerate(NAMES):
        assert len(ws.subscribers("active", tenant=name)) == 10 + i


def test_sync_all_json_is_a_list_in_tenant_order_with_every_count(ws: Sandbox) -> None:
    for i, name in enumerate(NAMES):
        ws.add_tenant(name)
        ws.upload(people(5 + i), tenant=name)
    set_workers(ws, 3)
    result = ws.cli("sync", "--all", "--json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)
    assert [run["tenant"] for run in runs] == NAMES
    assert [run["added"] for run in runs] == [5 + i for i in range(len(NAMES))]
    again = json.loads(ws.cli("sync", "--all", "--json").output)
    assert [(run["tenant"], run["status"]) for run in again] == [(n, "idle") for n in NAMES]


def test_named_tenants_run_in_the_order_given(ws: Sandbox) -> None:
    for name in NAMES:
        ws.add_tenant(name)
        ws.upload(people(3), tenant=name)
    set_workers(ws, 2)
    result = ws.cli("sync", "foxtrot", "alpha", "charlie", "--json")
    assert [run["tenant"] for run in json.loads(result.output)] == ["foxtrot", "alpha", "charlie"]


def test_a_crashed_worker_fails_its_tenant_and_the_others_apply(ws: Sandbox, crasher: str) -> None:
    names = ["alpha", "exits", "bravo", "killed", "raises", "charlie"]
    for name in names:
        ws.add_tenant(name)
        ws.upload(people(4), tenant=name)
    set_workers(ws, 2, crasher)
    result = ws.cli("sync", "--all", "--json")
    assert result.exit_code == 1, result.output
    runs = {run["tenant"]: run for run in json.loads(result.output)}
    assert list(runs) == names
    assert runs["exits"]["status"] == "failed" and "exited with code 3" in runs["exits"]["reason"]
    assert runs["killed"]["status"] == "failed" and "SIGKILL" in runs["killed"]["reason"]
    assert runs["raises"]["status"] == "failed" and "KeyboardInterrupt" in runs["raises"]["reason"]
    for name in ("alpha", "bravo", "charlie"):
        assert runs[name]["status"] == "applied"
        assert len(ws.subscribers("active", tenant=name)) == 4
    assert ws.subscribers("active", tenant="exits") == {}


def test_run_finished_hears_of_every_run_a_crashed_worker_included(
    ws: Sandbox, crasher: str
) -> None:
    for name in ("alpha", "killed", "bravo"):
        ws.add_tenant(name)
        ws.upload(people(4), tenant=name)
    set_workers(ws, 2, crasher)
    assert ws.cli("sync", "--all").exit_code == 1
    heard = [line.split() for line in (ws.root / "finished.txt").read_text().splitlines()]
    assert sorted((tenant, status) for tenant, status, _ in heard) == [
        ("alpha", "applied"),
        ("bravo", "applied"),
        ("killed", "failed"),
    ]
    by_tenant = {tenant: int(pid) for tenant, _, pid in heard}
    assert by_tenant["killed"] == os.getpid() != by_tenant["alpha"]


def test_a_crashed_tenant_can_run_again_once_fixed(ws: Sandbox, crasher: str) -> None:
    ws.add_tenant("exits")
    ws.add_tenant("alpha")
    ws.upload(people(4), tenant="exits")
    set_workers(ws, 2, crasher)
    assert ws.cli("sync", "--all").exit_code == 1
    text = ws.config_path.read_text().replace(f'plugins = ["{crasher}"]\n', "")
    ws.config_path.write_text(text)
    result = ws.cli("sync", "--all")
    assert result.exit_code == 0, result.output
    assert "exits: applied" in result.output and len(ws.subscribers("active", tenant="exits")) == 4


@pytest.mark.parametrize("value", ["0", "-1", '"two"', "true"])
def test_workers_must_be_a_positive_whole_number(ws: Sandbox, value: str) -> None:
    text = ws.config_path.read_text().replace("[listferry]\n", f"[listferry]\nworkers = {value}\n")
    ws.config_path.write_text(text)
    result = ws.cli("sync", "--all")
    assert result.exit_code != 0
    assert "workers must be a whole number, 1 or more" in result.output


def test_workers_default_to_the_cpus(ws: Sandbox) -> None:
    assert ws.app().config.workers == len(os.sched_getaffinity(0))


def test_a_tenant_locked_by_another_process_is_skipped_not_waited_for(ws: Sandbox) -> None:
    for name in ("alpha", "bravo"):
        ws.add_tenant(name)
        ws.upload(people(2), tenant=name)
    set_workers(ws, 2)
    lock = ws.app().config.tenant("alpha").state_dir / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        runs = json.loads(ws.cli("sync", "--all", "--json").output)
    assert [(run["tenant"], run["status"]) for run in runs] == [
        ("alpha", "skipped"),
        ("bravo", "applied"),
    ]
