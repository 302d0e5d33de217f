"""``listferry new-plugin NAME``: a working CRM pack to start from.

The skeleton is a real pack: a dialect for the CRM's export, a return-file template in
the layout its importer takes, a sample export and a test that syncs the sample and
checks the return file column by column. It installs with ``pip install -e`` and its
test passes as written; the integrator then edits the headers, words and columns to
those of their CRM.
"""

from __future__ import annotations

import re
from pathlib import Path

from listferry.errors import ListferryError, UsageError

PACK_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "listferry-{name}"
version = "0.1.0"
description = "listferry pack for {name}: reads its contact export, writes its import file"
requires-python = ">=3.11"
dependencies = ["listferry"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points.listferry]
{name} = "{module}"

[tool.setuptools]
packages = ["{module}"]
"""

MODULE = '''\
"""listferry pack for {name}.

Reads {name}'s contact export (dialect ``{name}``) and writes a return file that
{name}'s contact import takes as it is (template ``{name}``).
"""

from typing import Any

from listferry import Dialect, Template, hookimpl

#: How {name} writes its contact export: the header of each column we read, and the
#: words of its opt-out column. Every other column (the record id, say) is kept in
#: ``fields`` under its header and can be sent back as ``fields.<header>``.
DIALECT = Dialect(
    name="{name}",
    description="{name} contact export (CSV)",
    aliases={{
        "email": ("Email Address",),
        "first_name": ("First Name",),
        "last_name": ("Last Name",),
        "opt_out": ("Unsubscribed",),
    }},
    opt_out_true=frozenset({{"yes"}}),
    opt_out_false=frozenset({{"no", ""}}),
)

#: The columns {name}'s import maps by name, in its own words and date format.
RETURN_FILE = Template(
    source="""\\
{{{{ ["Contact Id", "Email Address", "Unsubscribed", "Opens", "Clicks", "Last Open"] | csv_row }}}}
{{% for batch in batches %}}
{{% for row in batch %}}
{{{{ [row["fields.Contact Id"], row.email, row.opted_out, row.open_count, row.click_count,
     row.last_open | date("%d/%m/%Y")] | csv_row(true="Yes", false="No") }}}}
{{% endfor %}}
{{% endfor %}}
""",
    suffix=".csv",
    newline="\\r\\n",
    fields=("email", "fields.Contact Id", "opted_out", "open_count", "click_count", "last_open"),
    description="{name} contact import: Contact Id, Email Address, Unsubscribed, engagement",
)


@hookimpl
def register_dialects(register: Any) -> None:
    register(DIALECT)


@hookimpl
def register_templates(register: Any) -> None:
    register("{name}", RETURN_FILE)
'''

SAMPLE = """\
Contact Id,First Name,Last Name,Email Address,Unsubscribed\r
C-1,Ada,Lovelace,ada@example.org,No\r
C-2,Grace,Hopper,Grace@Example.org,Yes\r
C-3,Alan,Turing,not-an-address,No\r
"""

TEST = '''\
"""The {name} pack on its sample export: read, sync, export, column by column."""

from pathlib import Path

from listferry.testing import Sandbox

SAMPLES = Path(__file__).parent.parent / "samples"


def sandbox(tmp_path: Path) -> Sandbox:
    # The sample holds one bad address in three rows: let a third of a file be invalid.
    return Sandbox(
        tmp_path,
        plugins=["{module}"],
        dialect="{name}",
        export_template="{name}",
        max_invalid_share=0.5,
    )


def test_each_header_maps_to_its_field(tmp_path: Path) -> None:
    result = sandbox(tmp_path).check(SAMPLES / "export.csv")
    assert result.columns == {{
        "Contact Id": None,
        "First Name": "first_name",
        "Last Name": "last_name",
        "Email Address": "email",
        "Unsubscribed": "opt_out",
    }}


def test_the_sample_syncs_and_comes_back_in_the_import_layout(tmp_path: Path) -> None:
    box = sandbox(tmp_path)
    box.upload(SAMPLES / "export.csv")
    run = box.sync()
    assert run.status == "applied", run.reason
    assert (run.added, run.unsubscribed, run.invalid) == (1, 1, 1)
    assert box.subscribers()["grace@example.org"]["status"] == "unsubscribed"

    box.record_events(
        [
            {{"email": "ada@example.org", "type": "open", "at": "2026-11-28T07:12:00Z"}},
            {{"email": "ada@example.org", "type": "click", "at": "2026-11-28T07:13:30Z"}},
        ]
    )
    rows = box.export_rows()
    assert rows == [
        {{
            "Contact Id": "C-1",
            "Email Address": "ada@example.org",
            "Unsubscribed": "No",
            "Opens": "1",
            "Clicks": "1",
            "Last Open": "28/11/2026",
        }},
        {{
            "Contact Id": "C-2",
            "Email Address": "grace@example.org",
            "Unsubscribed": "Yes",
            "Opens": "0",
            "Clicks": "0",
            "Last Open": "",
        }},
    ]
'''

README = """\
# listferry-{name}

A [listferry](https://github.com/listferry/listferry) pack for {name}.

    python3 -m pip install -e .            # the pack, into listferry's environment
    listferry plugins                      # lists {name}
    python3 -m pytest                      # its tests

In `listferry.toml`, for each tenant whose CRM is {name}:

    dialect = "{name}"
    export_template = "{name}"
"""

GITIGNORE = """\
__pycache__/
*.egg-info/
build/
.pytest_cache/
"""


def module_name(name: str) -> str:
    """The pack's Python package: ``listferry_`` and the name, ``-`` made ``_``."""
    return "listferry_" + name.replace("-", "_")


def write_skeleton(name: str, folder: Path) -> list[Path]:
    """Write the pack ``name`` into ``folder`` (which must not exist); the files written."""
    if not PACK_NAME.match(name) or len(name) > 40:
        raise UsageError(
            f"pack name {name!r} is not allowed: lower-case letters and digits, words joined "
            "by '-' or '_', starting with a letter (e.g. 'mycrm', 'acme-ams')"
        )
    if folder.exists():
        raise ListferryError(f"{folder}: exists already; give a new folder with --dir")
    module = module_name(name)
    files = {
        "pyproject.toml": PYPROJECT,
        f"{module}/__init__.py": MODULE,
        "samples/export.csv": SAMPLE,
        f"tests/test_{module.removeprefix('listferry_')}.py": TEST,
        "README.md": README,
        ".gitignore": GITIGNORE,
    }
    written = []
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        content = text.format(name=name, module=module)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(content)
        written.append(path)
    return written
