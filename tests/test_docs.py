"""The docs keep up with the code: every hook, command and config key is on its page.

Each check is a function from text to a list of problems, so it is tried both on the
real files (no problems) and on a deliberately broken copy in ``tmp_path`` (a problem).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import click
import pytest
from cogapp import Cog

from listferry import hookspecs
from listferry.cli import cli
from listferry.config import LISTFERRY_KEYS, SERVER_KEYS, TENANT_KEYS
from listferry.config.keys import key_table, keys_of
from listferry.config.web import WebSettings
from listferry.testing import Sandbox

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HOOKSPECS = Path(hookspecs.__file__)
LISTFERRY_HEADING = "### `[listferry]`"
TENANT_HEADING = "### `[defaults]` and `[tenants.NAME]`"
SERVER_HEADING = "### `[server]`"
WEB_HEADING = "### `[web]`: the operator's console"


# -- hooks ------------------------------------------------------------------------------


def hookspecs_in(source: str) -> dict[str, ast.FunctionDef]:
    """The functions decorated with ``@hookspec`` (or ``@hookspec(...)``) in ``source``."""
    return {
        node.name: node
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef)
        and any(ast.unparse(d).split("(")[0] == "hookspec" for d in node.decorator_list)
    }


def written_signature(node: ast.FunctionDef) -> str:
    args = ", ".join(
        f"{a.arg}: {ast.unparse(a.annotation)}" if a.annotation else a.arg for a in node.args.args
    )
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"{node.name}({args}){returns}"


def documented_signatures(markdown: str) -> dict[str, str]:
    """Hook name -> the signature in the code block under its ``### `name``` heading."""
    return dict(re.findall(r"^### `(\w+)`\n\n```python\n(.*)\n```", markdown, re.M))


def hook_problems(source: str, markdown: str) -> list[str]:
    documented = documented_signatures(markdown)
    problems = []
    for name, node in hookspecs_in(source).items():
        expected = written_signature(node)
        if name not in documented:
            problems.append(f"{name} is missing from docs/hooks.md")
        elif documented[name] != expected:
            problems.append(f"{name}: docs say {documented[name]!r}, code says {expected!r}")
    return problems


def undocumented_hookspecs(source: str) -> list[str]:
    return [name for name, node in hookspecs_in(source).items() if not ast.get_docstring(node)]


def test_the_hookspec_parser_finds_every_hook_pluggy_knows() -> None:
    registered = {
        name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "listferry_spec")
    }
    assert set(hookspecs_in(HOOKSPECS.read_text())) == registered


def test_every_hook_is_in_the_hook_reference_with_its_signature() -> None:
    assert hook_problems(HOOKSPECS.read_text(), (DOCS / "hooks.md").read_text()) == []


def test_a_hook_missing_from_the_reference_is_caught(tmp_path: Path) -> None:
    docs = tmp_path / "hooks.md"
    text = (DOCS / "hooks.md").read_text()
    docs.write_text(text.replace("### `check_plan`", "### `check_plan_renamed`"))
    problems = hook_problems(HOOKSPECS.read_text(), docs.read_text())
    assert "check_plan is missing from docs/hooks.md" in problems


def test_a_changed_signature_is_caught(tmp_path: Path) -> None:
    source = tmp_path / "hookspecs.py"
    text = HOOKSPECS.read_text()
    source.write_text(text.replace("force: bool)", "force: bool, dry_run: bool)"))
    problems = hook_problems(source.read_text(), (DOCS / "hooks.md").read_text())
    assert any(problem.startswith("check_plan: docs say") for problem in problems)


def test_every_hookspec_has_a_docstring() -> None:
    assert undocumented_hookspecs(HOOKSPECS.read_text()) == []


def test_a_hookspec_without_a_docstring_is_caught(tmp_path: Path) -> None:
    source = tmp_path / "hookspecs.py"
    source.write_text(
        HOOKSPECS.read_text() + "\n\n@hookspec(firstresult=True)\ndef pick(x: int) -> int: ...\n"
    )
    assert undocumented_hookspecs(source.read_text()) == ["pick"]
    assert "pick is missing from docs/hooks.md" in hook_problems(
        source.read_text(), (DOCS / "hooks.md").read_text()
    )


# -- commands ---------------------------------------------------------------------------


def command_paths(command: click.Command, path: str = "listferry") -> list[str]:
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():
        paths += command_paths(sub, f"{path} {name}")
    return paths


def undocumented_commands(command: click.Command, markdown: str) -> list[str]:
    headings = set(re.findall(r"^## (listferry.*)$", markdown, re.M))
    return [path for path in command_paths(command) if path not in headings]


def test_every_command_is_in_the_cli_reference() -> None:
    assert "listferry tenant add" in command_paths(cli)
    assert undocumented_commands(cli, (DOCS / "cli.md").read_text()) == []


def test_a_command_missing_from_the_reference_is_caught(tmp_path: Path) -> None:
    docs = tmp_path / "cli.md"
    docs.write_text((DOCS / "cli.md").read_text().replace("## listferry events load\n", ""))
    assert "listferry events load" in undocumented_commands(cli, docs.read_text())


def test_a_new_subcommand_is_caught() -> None:
    group = click.Group("listferry", commands={"tenant": click.Group("tenant")})
    group.commands["tenant"].add_command(click.Command("remove"))
    markdown = "## listferry\n\n## listferry tenant\n"
    assert undocumented_commands(group, markdown) == ["listferry tenant remove"]


# -- config keys ------------------------------------------------------------------------


def key_problems(markdown: str, heading: str, keys: dict[str, tuple[object, object]]) -> list[str]:
    """Each key needs a row ``| `key` | default | meaning |`` in the section under heading,
    with its default and a meaning."""
    section = markdown.partition(f"\n{heading}\n")[2]
    section = re.split(r"^#{1,3} ", section, maxsplit=1, flags=re.M)[0]
    found = re.findall(r"^\| `(\w+)` \| ([^|]*) \| ([^|]*) \|", section, re.M)
    rows = {key: (default, meaning) for key, default, meaning in found}
    problems = []
    for key, (default, _check) in keys.items():
        if key not in rows:
            problems.append(f"{key} is missing under {heading}")
            continue
        if default is not None and f"`{json.dumps(default)}`" not in rows[key][0]:
            problems.append(f"{key}: the default {json.dumps(default)} is not shown")
        if not rows[key][1].strip():
            problems.append(f"{key} has no meaning under {heading}")
    return problems


@pytest.mark.parametrize(
    ("heading", "keys"),
    [
        (LISTFERRY_HEADING, LISTFERRY_KEYS),
        (TENANT_HEADING, TENANT_KEYS),
        (SERVER_HEADING, SERVER_KEYS),
        (WEB_HEADING, key_table(keys_of(WebSettings))),
    ],
    ids=["listferry", "tenants", "server", "web"],
)
def test_every_config_key_is_in_the_operator_guide(heading: str, keys: dict) -> None:
    assert key_problems((DOCS / "operator.md").read_text(), heading, keys) == []


def test_a_config_key_missing_from_the_guide_is_caught(tmp_path: Path) -> None:
    docs = tmp_path / "operator.md"
    text = (DOCS / "operator.md").read_text()
    docs.write_text(re.sub(r"^\| `settle_seconds` .*\n", "", text, flags=re.M))
    problems = key_problems(docs.read_text(), TENANT_HEADING, TENANT_KEYS)
    assert f"settle_seconds is missing under {TENANT_HEADING}" in problems
    keys = {**LISTFERRY_KEYS, "threads": (4, None)}
    problems = key_problems(text, LISTFERRY_HEADING, keys)
    assert f"threads is missing under {LISTFERRY_HEADING}" in problems


def test_a_changed_default_is_caught() -> None:
    keys = {**TENANT_KEYS, "max_shrink_share": (0.25, None)}
    problems = key_problems((DOCS / "operator.md").read_text(), TENANT_HEADING, keys)
    assert "max_shrink_share: the default 0.25 is not shown" in problems


def test_a_config_key_without_a_meaning_is_caught() -> None:
    text = (DOCS / "operator.md").read_text()
    broken = re.sub(r"^(\| `block_seconds` \| `900` \|) [^|]+ \|$", r"\1  |", text, flags=re.M)
    problems = key_problems(broken, SERVER_HEADING, SERVER_KEYS)
    assert problems == [f"block_seconds has no meaning under {SERVER_HEADING}"]


# -- generated pages --------------------------------------------------------------------


def test_the_generated_pages_are_current() -> None:
    """``cog --check``: the pages generated from the code are as the code makes them."""
    pages = [str(DOCS / "hooks.md"), str(DOCS / "cli.md"), str(DOCS / "operator.md")]
    assert Cog().main(["cog", "--check", "--verbosity=0", *pages]) == 0, (
        "docs are stale: run cog -r docs/hooks.md docs/cli.md docs/operator.md"
    )


# -- the test kit -----------------------------------------------------------------------


def unexplained_sandbox_parts(markdown: str) -> list[str]:
    """The public methods and properties of ``Sandbox`` that the page does not name."""
    parts = [name for name in vars(Sandbox) if not name.startswith("_")]
    return [name for name in parts if not re.search(rf"`(Sandbox\.)?{name}\b", markdown)]


def test_the_plugin_tutorial_names_every_part_of_the_sandbox() -> None:
    text = (DOCS / "writing-a-plugin.md").read_text(encoding="utf-8")
    assert unexplained_sandbox_parts(text) == []


def test_a_sandbox_part_missing_from_the_tutorial_is_caught() -> None:
    text = (DOCS / "writing-a-plugin.md").read_text(encoding="utf-8")
    assert unexplained_sandbox_parts(text.replace("`home_of(", "`elsewhere(")) == ["home_of"]


# -- security page ----------------------------------------------------------------------


def cited_tests(text: str) -> set[tuple[str, str]]:
    return set(re.findall(r"`((?:cluster/)?test_\w+\.py)::(test_\w+)`", text))


def missing_tests(text: str, tests_dir: Path) -> list[str]:
    missing = []
    for module, name in sorted(cited_tests(text)):
        source = tests_dir / module
        if not source.exists() or not re.search(rf"^def {name}\(", source.read_text(), re.M):
            missing.append(f"{module}::{name}")
    return missing


def test_every_test_the_security_page_cites_exists() -> None:
    text = (DOCS / "security.md").read_text()
    assert len(cited_tests(text)) > 30
    assert missing_tests(text, ROOT / "tests") == []


def test_a_renamed_security_test_is_caught(tmp_path: Path) -> None:
    text = "| guarantee | `test_cli.py::test_this_test_does_not_exist` |"
    assert missing_tests(text, ROOT / "tests") == ["test_cli.py::test_this_test_does_not_exist"]
    text = "| guarantee | `cluster/test_storage.py::test_this_test_does_not_exist` |"
    assert missing_tests(text, ROOT / "tests") == [
        "cluster/test_storage.py::test_this_test_does_not_exist"
    ]


def test_every_test_the_reliability_page_cites_exists() -> None:
    text = (DOCS / "reliability.md").read_text()
    assert len(cited_tests(text)) > 5
    assert missing_tests(text, ROOT / "tests") == []


# -- install commands ---------------------------------------------------------------------

#: Distributions on PyPI that the docs may install by name; listferry and its packs are not.
PUBLISHED = {"tox", "build", "python-gnupg", "datasette"}


def unpublished_installs(text: str) -> list[str]:
    """The ``pip install`` arguments in ``text`` that name a distribution not on PyPI:
    anything but a path (``.``, ``./contrib/x``, ``/path``, a wheel, ``-e FOLDER``), an
    option, or a name in :data:`PUBLISHED`."""
    found = []
    for command in re.findall(r"pip install ([^`\n#&;]*)", text):
        words = command.split()
        for before, word in zip(["", *words], words, strict=False):
            is_path = "/" in word or word.startswith((".", "~")) or word.endswith(".whl")
            if word.startswith("-") or before == "-e" or is_path or word in PUBLISHED:
                continue
            found.append(word)
    return found


def install_pages() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted(DOCS.rglob("*.md")),
        *sorted(ROOT.glob("contrib/*/README*")),
    ]


def test_install_commands_work_from_a_checkout() -> None:
    problems = {
        str(page.relative_to(ROOT)): unpublished_installs(page.read_text())
        for page in install_pages()
    }
    assert {page: names for page, names in problems.items() if names} == {}


def test_an_install_of_an_unpublished_name_is_caught() -> None:
    text = "    pip install listferry-kontakto  # or: python3 -m pip install -e contrib/kontakto\n"
    assert unpublished_installs(text) == ["listferry-kontakto"]
    fine = "python3 -m pip install ./contrib/imis dist/listferry-0.1.0-py3-none-any.whl tox"
    assert unpublished_installs(f"`{fine}`") == []


# -- architecture -------------------------------------------------------------------------


def architecture_problems(markdown: str, core: Path, root: Path) -> list[str]:
    """Packages the map leaves out, and files or functions it names that do not exist.

    ``core`` is the host's package folder; ``root`` the checkout.
    """
    problems = []
    for package in sorted(p.name for p in core.iterdir() if (p / "__init__.py").exists()):
        if f"{package}/" not in markdown:
            problems.append(f"package {package}/ is not on the map")
    bases = {"listferry": root / "core", "plugins": root, "tests": root, "bench": root}
    for module in re.findall(r"`((?:\w+/)+\w+\.py)", markdown):
        if not (bases.get(module.split("/")[0], core) / module).exists():
            problems.append(f"{module} does not exist")
    named = re.findall(r"`((?:sync|export|serve|ops|store|config)/\w+)\.(\w+)`", markdown)
    for module, name in named:
        source = core / f"{module}.py"
        if name != "py" and not re.search(rf"\b(def|class) {name}\b", source.read_text()):
            problems.append(f"{module}.{name} is not defined there")
    return problems


def test_the_architecture_page_maps_every_package_and_names_what_exists() -> None:
    core = ROOT / "core" / "listferry"
    text = (DOCS / "architecture.md").read_text()
    assert architecture_problems(text, core, ROOT) == []
    broken = text.replace("sync/plan.make_plan", "sync/plan.make_plans").replace("tools/", "")
    assert architecture_problems(broken, core, ROOT) == [
        "package tools/ is not on the map",
        "sync/plan.make_plans is not defined there",
    ]


def test_every_picture_the_docs_show_is_there() -> None:
    """docs/console.md shows screenshots the browser tests take
    (``LISTFERRY_SCREENSHOTS=1 pytest tests/web/test_browser.py``)."""
    shown = {
        (page.parent / target).resolve()
        for page in DOCS.glob("*.md")
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", page.read_text())
    }
    assert shown, "no picture found: the pattern is wrong"
    assert sorted(str(p) for p in shown if not p.is_file()) == []
