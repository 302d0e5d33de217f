"""The plugin host: built-ins load like outside plugins; the config can add and block some."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import people, write_module

from listferry.errors import ListferryError
from listferry.plugins import load_host
from listferry.testing import Sandbox

BUILT_INS = {
    "file",
    "csv",
    "default-dialect",
    "record-checks",
    "file-checks",
    "plan-checks",
    "strategies",
}


def test_built_ins_are_entry_points_of_the_listferry_distribution() -> None:
    host = load_host()
    builtin = {info.name for info in host.infos if info.builtin}
    assert builtin >= BUILT_INS
    assert all(info.distribution == "listferry" for info in host.infos if info.builtin)
    assert host.dialects.owner("default") == "default-dialect"
    assert host.strategies.names() == ["add-only", "full", "incremental", "opt-out", "update-only"]


def test_config_plugin_module_adds_a_dialect(ws: Sandbox, plugin_dir: Path) -> None:
    write_module(
        plugin_dir,
        "crm_pack_for_test",
        """
        from listferry import hookimpl
        from listferry.dialect import Dialect

        @hookimpl
        def register_dialects(register):
            register(Dialect(name="tabcrm", delimiter="\\t",
                             aliases={"email": ["Mail Address"], "last_name": ["Nom"]}))
        """,
    )
    text = ws.config_path.read_text().replace(
        'homes = "homes"', 'homes = "homes"\nplugins = ["crm_pack_for_test"]'
    )
    ws.config_path.write_text(text)
    ws.add_tenant("acme", dialect="tabcrm")
    ws.upload("Mail Address\tNom\nada@example.org\tLovelace\n")
    [run] = ws.sync_all()
    assert run.status == "applied", run.reason
    assert ws.subscribers("active")["ada@example.org"]["last_name"] == "Lovelace"
    listed = ws.cli("plugins").output
    assert "crm_pack_for_test (config, enabled): register_dialects" in listed


def test_a_disabled_built_in_is_listed_but_never_called(ws: Sandbox) -> None:
    text = ws.config_path.read_text().replace(
        'homes = "homes"', 'homes = "homes"\ndisable = ["plan-checks"]'
    )
    ws.config_path.write_text(text)
    ws.add_tenant("acme")
    ws.upload(people(10))
    ws.sync()
    ws.upload(people(1))  # would remove 90%: the shrink guard is a plan check
    [run] = ws.sync_all()
    assert run.status == "applied" and run.removed == 9
    assert "plan-checks (built-in, disabled)" in ws.cli("plugins", "--all").output
    assert "plan-checks" not in ws.cli("plugins").output


def test_a_misspelled_hook_is_an_error_not_a_silent_no_op(plugin_dir: Path) -> None:
    write_module(
        plugin_dir,
        "typo_plugin",
        """
        from listferry import hookimpl

        @hookimpl
        def register_dialect(register):
            pass
        """,
    )
    with pytest.raises(ListferryError, match="register_dialect"):
        load_host(modules=("typo_plugin",))


def test_a_hook_with_a_wrong_argument_is_refused(plugin_dir: Path) -> None:
    write_module(
        plugin_dir,
        "bad_args_plugin",
        """
        from listferry import hookimpl

        @hookimpl
        def check_plan(plan, tenant, force, colour):
            return None
        """,
    )
    with pytest.raises(ListferryError, match="bad_args_plugin"):
        load_host(modules=("bad_args_plugin",))


def test_two_plugins_registering_one_name_are_both_named(plugin_dir: Path) -> None:
    write_module(
        plugin_dir,
        "second_full",
        """
        from listferry import hookimpl

        class Full:
            name = "full"
            description = "again"
            def decide(self, situation):
                return "keep"

        @hookimpl
        def register_strategies(register):
            register(Full())
        """,
    )
    with pytest.raises(ListferryError, match="'strategies' and by plugin 'second_full'"):
        load_host(modules=("second_full",))


def test_a_strategy_answering_nonsense_fails_the_run_with_its_name(
    ws: Sandbox, plugin_dir: Path
) -> None:
    write_module(
        plugin_dir,
        "odd_strategy",
        """
        from listferry import hookimpl

        class Odd:
            name = "odd"
            description = "answers nonsense"
            def decide(self, situation):
                return "delete-everything"

        @hookimpl
        def register_strategies(register):
            register(Odd())
        """,
    )
    text = ws.config_path.read_text().replace(
        'homes = "homes"', 'homes = "homes"\nplugins = ["odd_strategy"]'
    )
    ws.config_path.write_text(text)
    ws.add_tenant("acme", strategy="odd")
    ws.upload(people(2))
    [run] = ws.sync_all()
    assert run.status == "failed"
    assert "strategy 'odd' answered 'delete-everything'" in run.reason
    assert ws.subscribers("active") == {}


def test_plugins_can_add_commands(plugin_dir: Path) -> None:
    import click
    from click.testing import CliRunner

    write_module(
        plugin_dir,
        "hello_command",
        """
        import click
        from listferry import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command()
            def hello():
                "Say hello."
                click.echo("hello from a plugin")
        """,
    )
    group = click.Group(name="listferry")
    load_host(modules=("hello_command",)).hook.register_commands(cli=group)
    assert CliRunner().invoke(group, ["hello"]).output == "hello from a plugin\n"


def test_trace_logs_every_hook_call(ws: Sandbox, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LISTFERRY_TRACE_PLUGINS", "1")
    ws.add_tenant("acme")
    ws.upload(people(2))
    ws.sync()
    err = capsys.readouterr().err
    assert "hook validate_records(records, file) -> [record-checks]" in err
    assert "hook check_plan(plan, tenant, force) -> [plan-checks]" in err
    assert "hook register_dialects(register) -> [default-dialect]" in err
    assert "hook register_strategies(register) -> [strategies]" in err


@pytest.mark.parametrize(
    ("hook", "body", "message"),
    [
        (
            "register_dialects",
            "register('mycrm', Dialect(name='mycrm'))",
            "plugin '{plugin}' called register() for a dialect with 2 argument(s); "
            "dialects are registered as register(item), named by item.name",
        ),
        (
            "register_dialects",
            "register(Strategy())",
            "plugin '{plugin}' registered dialect 'full': expected a Dialect, got ",
        ),
        (
            "register_templates",
            "register('crm', 42)",
            "plugin '{plugin}' registered template 'crm': expected a Template or str, got 42",
        ),
        (
            "register_readers",
            "register(Strategy())",
            "plugin '{plugin}' registered reader 'full': it has no open",
        ),
        (
            "register_transports",
            "register('crm')",
            "plugin '{plugin}' called register() for a transport with 1 argument(s); "
            "transports are registered as register(name, item)",
        ),
    ],
    ids=["shape", "dialect-type", "template-type", "reader-protocol", "transport-shape"],
)
def test_a_wrong_registration_is_refused_when_made_naming_the_plugin(
    ws: Sandbox,
    plugin_dir: Path,
    hook: str,
    body: str,
    message: str,
    request: pytest.FixtureRequest,
) -> None:
    plugin = "bad_" + request.node.callspec.id.replace("-", "_")  # a module of its own each
    write_module(
        plugin_dir,
        plugin,
        f"""
        from listferry import Dialect, hookimpl

        class Strategy:
            name = "full"

            def decide(self, situation):
                return "keep"

        @hookimpl
        def {hook}(register):
            {body}
        """,
    )
    text = ws.config_path.read_text().replace(
        'homes = "homes"', f'homes = "homes"\nplugins = ["{plugin}"]'
    )
    ws.config_path.write_text(text)

    result = ws.cli("tenant", "list")

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: " + message.format(plugin=plugin)), result.stderr


def test_a_reader_can_wrap_another_through_the_public_api(ws: Sandbox, plugin_dir: Path) -> None:
    write_module(
        plugin_dir,
        "upper_pack_for_test",
        """
        from listferry import Dialect, WrappedSource, hookimpl

        class Shouting(WrappedSource):
            def batches(self, size=5000):
                for records, invalid in self.source.batches(size):
                    loud = [r._replace(last_name=(r.last_name or "").upper()) for r in records]
                    yield loud, invalid

        class UpperReader:
            name = "upper"
            base = "csv"

            def wrap(self, source, path, name, dialect):
                return Shouting(source)

        @hookimpl
        def register_readers(register):
            register(UpperReader())

        @hookimpl
        def register_dialects(register):
            register(Dialect(name="upper", reader="upper"))
        """,
    )
    text = ws.config_path.read_text().replace(
        'homes = "homes"', 'homes = "homes"\nplugins = ["upper_pack_for_test"]'
    )
    ws.config_path.write_text(text)
    ws.add_tenant("acme", dialect="upper")
    ws.upload("email,last name\nada@example.org,Lovelace\n", name="list.csv")

    [run] = ws.sync_all()

    assert run.status == "applied", run.reason
    assert ws.subscribers("active")["ada@example.org"]["last_name"] == "LOVELACE"


def test_load_plugins_env_keeps_third_party_plugins_out(monkeypatch) -> None:
    monkeypatch.setenv("LISTFERRY_LOAD_PLUGINS", "")
    host = load_host()
    assert all(info.builtin for info in host.infos if info.enabled)


def test_run_finished_is_told_every_outcome_and_cannot_break_a_run(
    ws: Sandbox, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = plugin_dir / "runs.log"
    monkeypatch.setenv("RUN_LOG_FOR_TEST", str(log))
    write_module(
        plugin_dir,
        "run_logger",
        """
        import os
        from listferry import hookimpl

        @hookimpl
        def run_finished(run):
            with open(os.environ["RUN_LOG_FOR_TEST"], "a") as f:
                f.write(f"{run.tenant} {run.status}\\n")
            raise RuntimeError("a notifier that breaks")
        """,
    )
    text = ws.config_path.read_text().replace(
        'homes = "homes"', 'homes = "homes"\nplugins = ["run_logger"]'
    )
    ws.config_path.write_text(text)
    ws.add_tenant("acme")
    ws.upload(people(3), count=3)
    assert [r.status for r in ws.sync_all()] == ["applied"]
    ws.upload(people(4), count=2)
    assert [r.status for r in ws.sync_all()] == ["voided"]
    assert [r.status for r in ws.sync_all()] == ["idle"]
    assert log.read_text().splitlines() == ["acme applied", "acme voided", "acme idle"]


def test_a_failing_plugin_is_one_log_line_not_a_traceback(ws: Sandbox, plugin_dir: Path) -> None:
    import os
    import subprocess

    from test_crash import listferry_command

    write_module(
        plugin_dir,
        "broken_notifier",
        """
        from listferry import hookimpl

        @hookimpl
        def run_finished(run):
            raise RuntimeError("smtp is down")
        """,
    )
    text = ws.config_path.read_text().replace(
        'homes = "homes"', 'homes = "homes"\nplugins = ["broken_notifier"]'
    )
    ws.config_path.write_text(text)
    ws.add_tenant("acme")
    ws.upload(people(2))
    env = {**os.environ, "PYTHONPATH": str(plugin_dir)}
    done = subprocess.run(
        [*listferry_command(), "--config", str(ws.config_path), "sync", "acme"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0
    assert "a run_finished plugin failed for acme: RuntimeError: smtp is down" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_record_two_checks_reject_counts_once(ws: Sandbox, plugin_dir: Path) -> None:
    write_module(
        plugin_dir,
        "strict_domains",
        """
        from listferry import hookimpl
        from listferry.records import Invalid

        @hookimpl
        def validate_records(records, file):
            return [Invalid(r.line, "domain not allowed") for r in records
                    if not r.email.endswith("@example.org")]
        """,
    )
    text = ws.config_path.read_text().replace(
        'homes = "homes"', 'homes = "homes"\nplugins = ["strict_domains"]'
    )
    ws.config_path.write_text(text)
    ws.add_tenant("acme", max_invalid_share=0.5)
    ws.upload([*people(4), ("bad@", "B", "C", "D"), ("x@other.net", "X", "Y", "Z")])
    [run] = ws.sync_all()
    assert run.status == "applied"
    assert (run.received, run.invalid, run.added) == (6, 2, 4)
    assert run.report.count("line 6:") == 1


def test_a_background_thread_that_raises_is_one_line_not_a_traceback(
    ws: Sandbox, plugin_dir: Path
) -> None:
    import os
    import subprocess

    from test_crash import listferry_command

    write_module(
        plugin_dir,
        "thread_raiser",
        """
        import threading
        import click
        from listferry import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command()
            def spin():
                "Start a helper thread that fails."
                def boom():
                    raise RuntimeError("lost the connection")
                t = threading.Thread(target=boom, name="uploader")
                t.start()
                t.join()
                click.echo("done")
        """,
    )
    text = ws.config_path.read_text().replace(
        'homes = "homes"', 'homes = "homes"\nplugins = ["thread_raiser"]'
    )
    ws.config_path.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(plugin_dir)}
    done = subprocess.run(
        [*listferry_command(), "--config", str(ws.config_path), "spin"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0 and done.stdout == "done\n"
    assert done.stderr == "listferry: uploader failed: RuntimeError: lost the connection\n"


HEAVY = ("paramiko", "pyftpdlib", "OpenSSL")


def test_a_sync_of_local_homes_never_imports_the_servers_or_the_ssh_client(
    ws: Sandbox,
) -> None:
    """Each scheduled job is its own process: what it imports, every tenant pays for."""
    ws.add_tenant("acme")
    ws.upload(people(3))
    probe = (
        "import sys, hashlib\n"
        "hashlib.scrypt = None  # a password hash made at import would fail\n"
        "from listferry.cli import main\n"
        f"sys.argv = ['listferry', '--config', {str(ws.config_path)!r}, 'sync', '--all']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "acme: applied" in done.stdout
    assert done.stdout.splitlines()[-1] == "[]"
