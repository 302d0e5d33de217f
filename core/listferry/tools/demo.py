"""``listferry demo``: a tenant's first list, a second list applied, a bad file voided."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from listferry.app import open_app
from listferry.config.edit import write_atomically
from listferry.config.starter import STARTER_CONFIG
from listferry.ops.night import sync_and_export
from listferry.ops.tenants import add_tenant
from listferry.store.database import Store

PEOPLE = [
    ("ada@example.org", "Ada", "Lovelace", "GOLD", "Fellow"),
    ("alan@example.org", "Alan", "Turing", "GOLD", "Fellow"),
    ("grace@example.org", "Grace", "Hopper", "SILVER", "Member"),
    ("edsger@example.org", "Edsger", "Dijkstra", "SILVER", "Member"),
    ("barbara@example.org", "Barbara", "Liskov", "BRONZE", "Member"),
    ("donald@example.org", "Donald", "Knuth", "BRONZE", "Associate"),
    ("margaret@example.org", "Margaret", "Hamilton", "GOLD", "Fellow"),
    ("ken@example.org", "Ken", "Thompson", "SILVER", "Member"),
]


def _csv(rows: list[tuple[str, ...]]) -> str:
    """Semicolons, CRLF and a BOM, as many CRMs on Windows write them."""
    lines = ["\ufeffE-mail Address;First Name;Surname;Segment Code;Member Type"]
    lines += [";".join(row) for row in rows]
    return "\r\n".join(lines) + "\r\n"


def _upload(home: Path, rows: list[tuple[str, ...]], count: int) -> None:
    (home / "subscriber_list.csv").write_text(_csv(rows), encoding="utf-8")
    (home / "subscriber_list_count.txt").write_text(f"{count}\n", encoding="utf-8")


def run_demo(folder: Path | None, say: Callable[[str], None]) -> None:
    """Run the three nights of the demo in ``folder`` (a temporary one when None)."""
    root = folder or Path(tempfile.mkdtemp(prefix="listferry-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "listferry.toml"
    write_atomically(config_path, STARTER_CONFIG)
    app = open_app(config_path)
    add_tenant(app, "acme", {"strategy": "full", "count_file": "required"})
    app = open_app(config_path)
    tenant = app.config.tenant("acme")
    home = Path(tenant.home)
    home.mkdir(parents=True, exist_ok=True)
    say(f"listferry demo in {root}")
    say("tenant acme: strategy full, count file required\n")

    def night(title: str) -> None:
        say(f"== {title}")
        for run in sync_and_export(app, tenant):
            say("   " + run.describe())
        with Store(tenant.database) as store:
            say(f"   active subscribers now: {store.count('active')}\n")

    _upload(home, PEOPLE, len(PEOPLE))
    night("night 1: the CRM uploads its first list (8 people)")

    second = [
        (
            e,
            f,
            "Lovelace-King" if e.startswith("ada") else s,
            "PLATINUM" if e.startswith("alan") else g,
            m,
        )
        for e, f, s, g, m in PEOPLE[:6]
    ]
    second += [
        ("frances@example.org", "Frances", "Allen", "GOLD", "Fellow"),
        ("john@example.org", "John", "Backus", "SILVER", "Member"),
    ]
    _upload(home, second, len(second))
    night("night 2: two new, two changed, two gone")

    _upload(home, [*second, ("niklaus@example.org", "Niklaus", "Wirth", "GOLD", "Fellow")], 12)
    night("night 3: the count file says 12, the file has 9 records")

    report = (home / "subscriber_list.result.txt").read_text(encoding="utf-8")
    say("== the result report the customer finds in its home:")
    say("   " + "\n   ".join(report.rstrip().splitlines()))
    if folder is None:
        shutil.rmtree(root, ignore_errors=True)
        say("\n(the demo folder was removed; run 'listferry demo --keep DIR' to look around)")
