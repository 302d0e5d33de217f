"""The packs in contrib/: each installs as its own distribution and `listferry plugins` lists it."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

CONTRIB = Path(__file__).parent.parent / "contrib"
PACKS = sorted(p for p in CONTRIB.iterdir() if (p / "setup.cfg").exists())


def entry_point(pack: Path) -> tuple[str, str]:
    """(distribution, entry-point name) from the pack's setup.cfg."""
    config = configparser.ConfigParser()
    config.read(pack / "setup.cfg")
    lines = config["options.entry_points"]["listferry"].strip().splitlines()
    assert len(lines) == 1, f"{pack.name}: one listferry entry point"
    name = lines[0].split("=")[0].strip()
    return config["metadata"]["name"], name


def test_there_are_at_least_five_packs() -> None:
    assert len(PACKS) >= 5


@pytest.mark.parametrize("pack", PACKS, ids=[p.name for p in PACKS])
def test_each_pack_is_installed_and_listed_by_plugins(pack: Path) -> None:
    dist, name = entry_point(pack)
    try:
        distribution(dist)
    except PackageNotFoundError:
        pytest.fail(f"{dist} is not installed: run `python3 contrib/install_packs.py`")
    env = {k: v for k, v in os.environ.items() if k != "LISTFERRY_LOAD_PLUGINS"}
    done = subprocess.run(
        [sys.executable, "-m", "listferry", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=pack,
        check=True,
    )
    listed = {info["name"]: info for info in json.loads(done.stdout)}
    assert listed[name]["distribution"] == dist
    assert listed[name]["enabled"] and not listed[name]["builtin"]
    assert {"register_dialects", "register_templates"} <= set(listed[name]["hooks"])
    assert (pack / "samples").is_dir() and any((pack / "tests").glob("test_*.py"))
    assert (CONTRIB.parent / "docs" / "packs" / f"{pack.name}.md").exists()


@pytest.mark.parametrize("pack", PACKS, ids=[p.name for p in PACKS])
def test_a_tenant_naming_only_a_packs_dialect_gets_its_return_file_template(
    pack: Path, tmp_path: Path
) -> None:
    import importlib

    from listferry.testing import Sandbox

    module = f"listferry_{pack.name}"
    dialects: list = []
    importlib.import_module(module).register_dialects(dialects.append)
    for dialect in dialects:
        assert dialect.template, f"{dialect.name} names no return-file template"
        box = Sandbox(tmp_path / dialect.name, plugins=[module], dialect=dialect.name)
        result, path = box.export()
        assert result.template == dialect.template
        assert path.exists()
