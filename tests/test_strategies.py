"""The update strategies and opt-outs, proved on real list files and real tenant stores."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

from listferry.runs import RunRecord
from listferry.testing import Sandbox

COUNTS = ("received", "added", "updated", "removed", "unsubscribed", "unchanged", "ignored")

SEED = [
    ("keep@example.org", "Kim", "Keep", "GOLD"),
    ("change@example.org", "Old", "Name", "GOLD"),
    ("gone@example.org", "Gus", "Gone", "GOLD"),
    ("optout@example.org", "Ola", "Out", "GOLD"),
    ("back@example.org", "Bea", "Back", "GOLD"),
]

#: The file each strategy gets after :func:`seeded`: one row per situation.
NEXT_FILE = [
    ("keep@example.org", "Kim", "Keep", "GOLD"),  # active, same values
    ("change@example.org", "New", "Name", "GOLD"),  # active, new first name
    ("new@example.org", "Nia", "New", "SILVER"),  # never seen
    ("back@example.org", "Bea", "Back", "GOLD"),  # removed earlier
    ("optout@example.org", "Ola", "Out", "GOLD"),  # unsubscribed on the platform
]  # gone@example.org: active, absent from the file

PLATFORM_OPT_OUT = ("optout@example.org", "unsubscribe", "2026-01-02T03:04:05Z", "")


def only(runs: list[RunRecord]) -> RunRecord:
    assert len(runs) == 1, runs
    return runs[0]


def counts(run: RunRecord) -> dict[str, int]:
    return {name: getattr(run, name) for name in COUNTS}


def statuses(ws: Sandbox) -> dict[str, str]:
    return {email: row["status"] for email, row in ws.subscribers().items()}


def use_strategy(ws: Sandbox, strategy: str) -> None:
    """Switch the config's default strategy (the tenant table does not set its own)."""
    text = ws.config_path.read_text()
    assert '\nstrategy = "full"\n' in text
    ws.config_path.write_text(text.replace('\nstrategy = "full"\n', f'\nstrategy = "{strategy}"\n'))


def seeded(ws: Sandbox, strategy: str) -> None:
    """A tenant whose list holds keep, change and gone (active), back (removed by a
    full list that left it out) and optout (unsubscribed on the platform)."""
    ws.add_tenant("acme")
    ws.upload(SEED)
    assert only(ws.sync_all()).status == "applied"
    ws.upload(SEED[:4])
    assert only(ws.sync_all()).removed == 1
    with ws.store() as store:
        store.add_events([PLATFORM_OPT_OUT])
    use_strategy(ws, strategy)
    assert statuses(ws) == {
        "keep@example.org": "active",
        "change@example.org": "active",
        "gone@example.org": "active",
        "back@example.org": "removed",
        "optout@example.org": "unsubscribed",
    }


@pytest.fixture
def plugin(ws: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """Write a plugin module into the sandbox and name it in the config's plugins list."""
    installed: list[str] = []

    def install(name: str, source: str) -> None:
        folder = ws.root / "plugin_modules"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(folder))
        text = ws.config_path.read_text()
        ws.config_path.write_text(
            text.replace("[listferry]\n", f'[listferry]\nplugins = ["{name}"]\n', 1)
        )
        installed.append(name)

    yield install
    for name in installed:
        sys.modules.pop(name, None)


OPT_OUT_DIALECT = """
    from listferry import hookimpl
    from listferry.dialect import DEFAULT_ALIASES, Dialect


    @hookimpl
    def register_dialects(register):
        aliases = {**DEFAULT_ALIASES, "opt_out": ("unsubscribed",)}
        register(Dialect(name="optcrm", aliases=aliases))
"""


# -- the five strategies -------------------------------------------------------------


def test_full_replaces_the_list_and_marks_absent_subscribers_removed(ws: Sandbox) -> None:
    seeded(ws, "full")
    ws.upload(NEXT_FILE)

    run = only(ws.sync_all())

    assert run.status == "applied", run.reason
    assert counts(run) == {
        "received": 5,
        "added": 2,
        "updated": 1,
        "removed": 1,
        "unsubscribed": 0,
        "unchanged": 2,
        "ignored": 0,
    }
    assert statuses(ws) == {
        "keep@example.org": "active",
        "change@example.org": "active",
        "new@example.org": "active",
        "back@example.org": "active",
        "gone@example.org": "removed",
        "optout@example.org": "unsubscribed",
    }
    assert ws.subscribers("active")["change@example.org"]["first_name"] == "New"
    assert ws.subscribers("active")["new@example.org"]["segment_code"] == "SILVER"


def test_full_keeps_the_history_of_a_removed_subscriber(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(
        [
            ("ada@example.org", "Ada", "Lovelace", "GOLD", "Fellow"),
            ("bob@example.org", "Bob", "B", "", ""),
        ],
        header=("email", "first_name", "last_name", "segment_code", "member_type"),
    )
    ws.sync()
    ws.upload([("bob@example.org", "Bob", "B", "")])

    assert only(ws.sync_all()).removed == 1

    assert ws.subscribers("removed") == {
        "ada@example.org": {
            "email": "ada@example.org",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "segment_code": "GOLD",
            "status": "removed",
            "fields": {"member_type": "Fellow"},
        }
    }


def test_removed_subscriber_who_reappears_in_a_full_list_is_active_again(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload([("ada@example.org", "Ada", "L", "GOLD"), ("bob@example.org", "Bob", "B", "GOLD")])
    ws.sync()
    ws.upload([("bob@example.org", "Bob", "B", "GOLD")])
    ws.sync()
    assert statuses(ws)["ada@example.org"] == "removed"
    ws.upload([("ada@example.org", "Ada", "L", "SILVER"), ("bob@example.org", "Bob", "B", "GOLD")])

    run = only(ws.sync_all())

    assert (run.added, run.unchanged, run.removed) == (1, 1, 0)
    assert ws.subscribers("active")["ada@example.org"]["status"] == "active"
    assert ws.subscribers("active")["ada@example.org"]["segment_code"] == "SILVER"


def test_incremental_adds_and_updates_and_removes_nobody(ws: Sandbox) -> None:
    seeded(ws, "incremental")
    ws.upload(NEXT_FILE)

    run = only(ws.sync_all())

    assert run.status == "applied", run.reason
    assert counts(run) == {
        "received": 5,
        "added": 2,
        "updated": 1,
        "removed": 0,
        "unsubscribed": 0,
        "unchanged": 2,
        "ignored": 0,
    }
    assert statuses(ws) == {
        "keep@example.org": "active",
        "change@example.org": "active",
        "gone@example.org": "active",
        "new@example.org": "active",
        "back@example.org": "active",
        "optout@example.org": "unsubscribed",
    }
    assert ws.subscribers("active")["change@example.org"]["first_name"] == "New"


def test_add_only_adds_new_addresses_and_ignores_known_ones(ws: Sandbox) -> None:
    seeded(ws, "add-only")
    ws.upload(NEXT_FILE)

    run = only(ws.sync_all())

    assert run.status == "applied", run.reason
    assert counts(run) == {
        "received": 5,
        "added": 2,
        "updated": 0,
        "removed": 0,
        "unsubscribed": 0,
        "unchanged": 0,
        "ignored": 3,
    }
    assert statuses(ws) == {
        "keep@example.org": "active",
        "change@example.org": "active",
        "gone@example.org": "active",
        "new@example.org": "active",
        "back@example.org": "active",
        "optout@example.org": "unsubscribed",
    }
    assert ws.subscribers("active")["change@example.org"]["first_name"] == "Old"


def test_update_only_updates_known_addresses_and_ignores_new_ones(ws: Sandbox) -> None:
    seeded(ws, "update-only")
    ws.upload(NEXT_FILE)

    run = only(ws.sync_all())

    assert run.status == "applied", run.reason
    assert counts(run) == {
        "received": 5,
        "added": 0,
        "updated": 1,
        "removed": 0,
        "unsubscribed": 0,
        "unchanged": 3,
        "ignored": 1,
    }
    assert statuses(ws) == {
        "keep@example.org": "active",
        "change@example.org": "active",
        "gone@example.org": "active",
        "back@example.org": "removed",
        "optout@example.org": "unsubscribed",
    }
    assert ws.subscribers("active")["change@example.org"]["first_name"] == "New"


def test_opt_out_file_unsubscribes_every_address_in_it(ws: Sandbox) -> None:
    seeded(ws, "opt-out")
    ws.upload(NEXT_FILE)

    run = only(ws.sync_all())

    assert run.status == "applied", run.reason
    assert counts(run) == {
        "received": 5,
        "added": 0,
        "updated": 0,
        "removed": 0,
        "unsubscribed": 4,
        "unchanged": 1,
        "ignored": 0,
    }
    assert statuses(ws) == {
        "keep@example.org": "unsubscribed",
        "change@example.org": "unsubscribed",
        "new@example.org": "unsubscribed",
        "back@example.org": "unsubscribed",
        "optout@example.org": "unsubscribed",
        "gone@example.org": "active",
    }


def test_opt_out_file_naming_someone_already_unsubscribed_only_updates_their_values(
    ws: Sandbox,
) -> None:
    seeded(ws, "opt-out")
    ws.upload([("optout@example.org", "Ola", "Renamed", "GOLD")])

    run = only(ws.sync_all())

    assert (run.unsubscribed, run.updated, run.unchanged) == (0, 1, 0)
    assert ws.subscribers("unsubscribed")["optout@example.org"]["last_name"] == "Renamed"


PLUGIN_STRATEGIES = """
    from dataclasses import dataclass

    from listferry import hookimpl
    from listferry.strategy import Action


    @dataclass(frozen=True)
    class RemoveListed:
        name: str = "remove-listed"
        description: str = "The file lists addresses to take off the list"

        def decide(self, s):
            return Action.REMOVE if s.in_file else Action.KEEP


    @dataclass(frozen=True)
    class AddEveryone:
        name: str = "add-everyone"
        description: str = "A careless strategy: add whoever is listed, remove the rest"

        def decide(self, s):
            return Action.ADD if s.in_file else Action.REMOVE


    @hookimpl
    def register_strategies(register):
        register(RemoveListed())
        register(AddEveryone())
"""


def test_plugin_strategy_removing_listed_addresses_counts_them_and_meets_the_shrink_guard(
    ws: Sandbox, plugin
) -> None:
    plugin("lf_plugin_strategies", PLUGIN_STRATEGIES)
    seeded(ws, "remove-listed")
    ws.upload([("keep@example.org",), ("gone@example.org",)], header=("email",))

    run = only(ws.sync_all())

    assert run.status == "voided"
    assert run.reason.startswith("shrink guard: the file would remove 2 of 3 active")
    run = only(ws.sync_all(force=True))
    assert (run.status, run.removed, run.unchanged) == ("applied", 2, 0)
    assert statuses(ws)["keep@example.org"] == statuses(ws)["gone@example.org"] == "removed"


def test_host_rules_of_meaning_hold_for_a_careless_plugin_strategy(ws: Sandbox, plugin) -> None:
    plugin("lf_plugin_strategies", PLUGIN_STRATEGIES)
    seeded(ws, "add-everyone")
    ws.upload(NEXT_FILE)

    run = only(ws.sync_all())

    assert counts(run) == {
        "received": 5,
        "added": 2,
        "updated": 1,
        "removed": 1,
        "unsubscribed": 0,
        "unchanged": 2,
        "ignored": 0,
    }
    assert statuses(ws)["optout@example.org"] == "unsubscribed"
    assert statuses(ws)["gone@example.org"] == "removed"


# -- columns -------------------------------------------------------------------------


def test_columns_the_file_lacks_leave_stored_values_alone(ws: Sandbox) -> None:
    ws.add_tenant("acme", strategy="incremental")
    ws.upload(
        [("ada@example.org", "Ada", "Lovelace", "GOLD", "Fellow")],
        header=("email", "first_name", "last_name", "segment_code", "member_type"),
    )
    ws.sync()
    ws.upload([("ADA@example.org ", "Augusta")], header=("E-mail", "First Name"))

    run = only(ws.sync_all())

    assert (run.updated, run.unchanged) == (1, 0)
    assert ws.subscribers("active")["ada@example.org"] == {
        "email": "ada@example.org",
        "first_name": "Augusta",
        "last_name": "Lovelace",
        "segment_code": "GOLD",
        "status": "active",
        "fields": {"member_type": "Fellow"},
    }


def test_extra_columns_go_to_fields(ws: Sandbox) -> None:
    ws.add_tenant("acme")
    ws.upload(
        [("ada@example.org", "Ada", "Fellow", "North")],
        header=("email", "first_name", "member_type", "Region"),
    )

    assert only(ws.sync_all()).added == 1

    ada = ws.subscribers("active")["ada@example.org"]
    assert ada["fields"] == {"member_type": "Fellow", "Region": "North"}
    assert ada["last_name"] is None


def test_an_extra_column_the_file_lacks_keeps_its_stored_field(ws: Sandbox) -> None:
    ws.add_tenant("acme", strategy="incremental")
    ws.upload([("ada@example.org", "Fellow")], header=("email", "member_type"))
    ws.sync()
    ws.upload([("ada@example.org", "North")], header=("email", "region"))

    run = only(ws.sync_all())

    assert (run.updated, run.unchanged) == (1, 0)
    fields = ws.subscribers("active")["ada@example.org"]["fields"]
    assert fields == {"member_type": "Fellow", "region": "North"}
    ws.upload(
        [("ada@example.org", "Fellow"), ("bob@example.org", "M")], header=("email", "member_type")
    )
    assert (
        only(ws.sync_all()).unchanged,
        ws.subscribers("active")["ada@example.org"]["fields"],
    ) == (1, fields)


def test_same_extra_values_count_unchanged_and_a_new_value_counts_updated(ws: Sandbox) -> None:
    ws.add_tenant("acme", strategy="incremental")
    header = ("email", "member_type", "region")
    ws.upload(
        [("ada@example.org", "Fellow", "North"), ("bob@example.org", "M", "S")], header=header
    )
    ws.sync()
    ws.upload(
        [("ada@example.org", "Fellow", "North"), ("bob@example.org", "M", "East")], header=header
    )

    run = only(ws.sync_all())

    assert (run.updated, run.unchanged) == (1, 1)
    assert ws.subscribers("active")["bob@example.org"]["fields"] == {
        "member_type": "M",
        "region": "East",
    }


# -- opt-outs ------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["full", "incremental", "add-only", "update-only"])
def test_platform_opt_out_is_never_undone_by_an_import_that_lists_the_address(
    ws: Sandbox, strategy: str
) -> None:
    seeded(ws, strategy)
    ws.upload([("optout@example.org", "Ola", "Renamed", "GOLD"), *NEXT_FILE[:2]])

    run = only(ws.sync_all())

    assert run.status == "applied", run.reason
    assert run.added == 0
    assert statuses(ws)["optout@example.org"] == "unsubscribed"
    assert "optout@example.org" not in ws.subscribers("active")


def test_full_list_leaving_out_an_unsubscribed_address_keeps_it_unsubscribed(
    ws: Sandbox,
) -> None:
    seeded(ws, "full")
    ws.upload(NEXT_FILE[:4])

    run = only(ws.sync_all())

    assert (run.removed, statuses(ws)["optout@example.org"]) == (1, "unsubscribed")


def test_address_unsubscribed_on_the_platform_before_any_import_is_not_added(
    ws: Sandbox,
) -> None:
    ws.add_tenant("acme")
    events = ws.root / "events.csv"
    events.write_text("email,type,at\nNia@Example.org,unsubscribe,2026-01-02T03:04:05Z\n")
    loaded = ws.cli("events", "load", "acme", str(events))
    assert loaded.exit_code == 0, loaded.output
    ws.upload([("ada@example.org", "Ada", "L", ""), ("nia@example.org", "Nia", "New", "")])

    run = only(ws.sync_all())

    assert run.added == 1
    assert list(ws.subscribers("active")) == ["ada@example.org"]
    assert ws.subscribers("unsubscribed")["nia@example.org"]["first_name"] == "Nia"


def test_opt_out_column_unsubscribes_the_rows_that_say_yes(ws: Sandbox, plugin) -> None:
    plugin("lf_optout_dialect", OPT_OUT_DIALECT)
    ws.add_tenant("acme", dialect="optcrm", strategy="incremental")
    ws.upload(
        [
            ("yes@example.org", "Y", "Yes"),
            ("no@example.org", "N", "no"),
            ("blank@example.org", "B", ""),
            ("word@example.org", "W", "Unsubscribed"),
        ],
        header=("email", "first_name", "Unsubscribed"),
    )

    run = only(ws.sync_all())

    assert (run.added, run.unsubscribed, run.invalid) == (2, 2, 0)
    assert statuses(ws) == {
        "yes@example.org": "unsubscribed",
        "no@example.org": "active",
        "blank@example.org": "active",
        "word@example.org": "unsubscribed",
    }
    assert ws.subscribers("active")["no@example.org"]["fields"] == {}


def test_opt_out_column_saying_no_does_not_resubscribe(ws: Sandbox, plugin) -> None:
    plugin("lf_optout_dialect", OPT_OUT_DIALECT)
    ws.add_tenant("acme", dialect="optcrm")
    header = ("email", "first_name", "unsubscribed")
    ws.upload([("ada@example.org", "Ada", "yes"), ("bob@example.org", "Bob", "")], header=header)
    assert only(ws.sync_all()).unsubscribed == 1
    ws.upload([("ada@example.org", "Ada", "no"), ("bob@example.org", "Bob", "")], header=header)

    run = only(ws.sync_all())

    assert (run.added, run.unsubscribed, run.unchanged) == (0, 0, 2)
    assert statuses(ws) == {"ada@example.org": "unsubscribed", "bob@example.org": "active"}


def test_opt_out_value_the_dialect_does_not_know_makes_the_row_invalid(ws: Sandbox, plugin) -> None:
    plugin("lf_optout_dialect", OPT_OUT_DIALECT)
    ws.add_tenant("acme", dialect="optcrm", max_invalid_share=0.5)
    ws.upload(
        [("ada@example.org", "Ada", "maybe"), ("bob@example.org", "Bob", "no")],
        header=("email", "first_name", "unsubscribed"),
    )

    run = only(ws.sync_all())

    assert (run.status, run.invalid, run.added) == ("applied", 1, 1)
    assert statuses(ws) == {"bob@example.org": "active"}
    assert "line 2: opt-out value 'maybe'" in (ws.home / "subscriber_list.result.txt").read_text()


OPT_OUT_DURING_RUN = """
    from listferry import hookimpl
    from listferry.store.database import Store

    ADDRESSES = ("new@example.org", "back@example.org", "gone@example.org")


    @hookimpl
    def check_plan(plan, tenant, force):
        # Between the plan and the apply, the platform records three opt-outs (as a
        # concurrent `listferry events load` would).
        with Store(tenant.database) as store:
            store.add_events(
                (email, "unsubscribe", "2026-01-02T03:04:05Z", "") for email in ADDRESSES
            )
"""


def test_platform_opt_out_recorded_while_a_run_plans_is_not_undone(ws: Sandbox, plugin) -> None:
    seeded(ws, "full")
    plugin("lf_opt_out_during_run", OPT_OUT_DURING_RUN)
    ws.upload(NEXT_FILE)  # plans: add new, add back (removed), remove gone

    run = only(ws.sync_all())

    assert run.status == "applied", run.reason
    after = statuses(ws)
    assert [after[f"{name}@example.org"] for name in ("new", "back", "gone")] == [
        "unsubscribed",
        "unsubscribed",
        "unsubscribed",
    ]
    assert after["keep@example.org"] == after["change@example.org"] == "active"
