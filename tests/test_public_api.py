"""The public plugin API: what ``listferry`` exports, and who may import what else.

Packs in contrib/, the skeleton ``listferry new-plugin`` writes, the hook docstrings and
the plugin author's pages use only ``listferry`` and ``listferry.testing``; every name a
hook signature uses is exported; ``import listferry`` stays cheap.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import listferry
from listferry import hookspecs, testing
from listferry.tools.newplugin import write_skeleton

ROOT = Path(__file__).resolve().parent.parent
PACK_SOURCES = sorted(
    path
    for path in (ROOT / "contrib").rglob("*.py")
    if path.name != "install_packs.py" and ".egg-info" not in str(path)
)
ALLOWED = {"listferry", "listferry.testing"}
PLUGIN_PAGES = [
    ROOT / "docs" / "hooks.md",
    ROOT / "docs" / "writing-a-plugin.md",
    ROOT / "docs" / "return-files.md",
]


def private_imports(source: str) -> list[str]:
    """The modules of listferry (or its built-in plugins) that ``source`` imports besides
    the public ``listferry`` and ``listferry.testing``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            if top in ("listferry", "listferry_plugins") and module not in ALLOWED:
                found.append(module)
    return found


def test_the_rule_finds_a_private_import() -> None:
    source = "from listferry import Dialect\nfrom listferry.dialect import fold_header\n"
    assert private_imports(source) == ["listferry.dialect"]
    assert private_imports("import listferry_plugins.csv_reader\n") == [
        "listferry_plugins.csv_reader"
    ]
    assert private_imports("from listferry.testing import Sandbox\n") == []


@pytest.mark.parametrize("path", PACK_SOURCES, ids=[str(p.relative_to(ROOT)) for p in PACK_SOURCES])
def test_packs_import_only_the_public_api(path: Path) -> None:
    assert private_imports(path.read_text(encoding="utf-8")) == []


def test_a_generated_skeleton_imports_only_the_public_api(tmp_path: Path) -> None:
    written = write_skeleton("mycrm", tmp_path / "listferry-mycrm")
    sources = [path for path in written if path.suffix == ".py"]
    assert sources
    for path in sources:
        assert private_imports(path.read_text(encoding="utf-8")) == [], path


@pytest.mark.parametrize("page", PLUGIN_PAGES, ids=[p.name for p in PLUGIN_PAGES])
def test_the_plugin_pages_import_only_the_public_api(page: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    imports = "\n".join(
        line
        for block in blocks
        for line in block.splitlines()
        if line.startswith(("from ", "import "))
    )
    assert private_imports(imports) == []


def test_hook_docstrings_name_only_public_things() -> None:
    text = Path(hookspecs.__file__).read_text(encoding="utf-8")
    docstrings = "\n".join(
        ast.get_docstring(node) or ""
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef)
    )
    named = set(re.findall(r"listferry\.([A-Za-z_][\w.]*)", docstrings))
    assert {name for name in named if name.split(".")[0] not in listferry.__all__} <= {"testing"}


def test_every_name_a_hook_signature_uses_is_exported() -> None:
    used: set[str] = set()
    for node in ast.parse(Path(hookspecs.__file__).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef):
            for annotation in [a.annotation for a in node.args.args] + [node.returns]:
                text = ast.unparse(annotation) if annotation else ""
                used |= set(re.findall(r"(?<![.\w])[A-Z]\w+", text))
    builtin_types = {"Callable", "Iterable", "Mapping", "Any", "None"}
    assert used - builtin_types - {"datetime"} <= set(listferry.__all__) | {"click"}
    assert {"Dialect", "Template", "Plan", "ServerRuntime", "Tenant", "Config"} <= used


def test_every_exported_name_resolves() -> None:
    for name in listferry.__all__:
        assert getattr(listferry, name) is not None, name
    assert set(dir(listferry)) == set(listferry.__all__)
    with pytest.raises(AttributeError):
        _ = listferry.pipeline


def test_the_test_kit_exports_what_it_defines_and_says_what_each_part_does() -> None:
    defined = {
        name
        for name, value in vars(testing).items()
        if (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == testing.__name__
        and not name.startswith("_")
    }
    assert defined == set(testing.__all__) == {"Sandbox", "wait_for"}
    parts = {name: part for name, part in vars(testing.Sandbox).items() if not name.startswith("_")}
    assert {"sync", "sync_all", "upload", "add_tenant", "from_starter", "home"} <= set(parts)
    assert [name for name, part in parts.items() if not (part.__doc__ or "").strip()] == []


def test_importing_listferry_loads_only_its_errors() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, listferry; "
            "print(sorted(m for m in sys.modules if m.startswith('listferry')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "['listferry', 'listferry.errors']"
