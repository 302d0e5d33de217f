"""docs/writing-a-plugin.md, followed literally in a fresh folder, makes a pack that passes.

The tutorial's ``console`` blocks are run command by command (``$ ...``), its titled
blocks written to their files, and a ``text`` block right after a command is what that
command must print. The commands run in a virtual environment of their own that sees
this environment's packages (listferry among them), so ``pip install -e`` of the new
pack changes nothing outside the test's folder.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).parent.parent / "docs" / "writing-a-plugin.md"
FENCE = re.compile(r"^```(\w+)(?: title=\"([^\"]+)\")?\n(.*?)^```$", re.S | re.M)


def steps(text: str) -> list[tuple[str, str | None, str]]:
    """The fenced blocks in order: (language, title or None, body)."""
    return [(m.group(1), m.group(2), m.group(3)) for m in FENCE.finditer(text)]


def make_venv(folder: Path) -> dict[str, str]:
    """A venv that sees this environment's packages; the environment to run commands in."""
    # No pip or setuptools of its own: this environment's (through the .pth below) are
    # used, so what builds the pack is what the can_build_wheels_here check looked at.
    venv.create(folder, with_pip=False, symlinks=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # addsitedir also runs the outer .pth files (an editable listferry's finder).
    lines = [f"import site; site.addsitedir({p!r})" for p in sorted(outer)]
    Path(purelib, "outer-environment.pth").write_text("\n".join(lines) + "\n")
    shim = folder / "bin" / "listferry"
    shim.write_text(f"#!{python}\nfrom listferry.cli import main\nmain()\n")
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTFERRY_", "PYTHON"))}
    env["PATH"] = f"{folder / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(folder)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if can_build_wheels_here():
        env["PIP_NO_INDEX"] = "1"
        env["PIP_NO_BUILD_ISOLATION"] = "0"  # pip's inverted switch: build with ours
    return env


def can_build_wheels_here() -> bool:
    """setuptools with ``bdist_wheel`` (70.1 and later, or the ``wheel`` package) is here."""
    try:
        import setuptools
    except ImportError:
        return False
    try:
        import wheel  # noqa: F401
    except ImportError:
        major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
        return (major, minor) >= (70, 1)
    return True


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell paths")
def test_the_tutorial_followed_literally_makes_a_pack_whose_test_passes(tmp_path: Path) -> None:
    env = make_venv(tmp_path / "venv")
    work = tmp_path / "work"
    work.mkdir()
    ran = []
    last_output: str | None = None
    for language, title, body in steps(TUTORIAL.read_text(encoding="utf-8")):
        if title:
            path = work / title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body, encoding="utf-8")
            last_output = None
        elif language == "console":
            for line in body.splitlines():
                if not line.startswith("$ "):
                    continue
                command, _, comment = line[2:].partition("  # ")
                expected = int(comment.removeprefix("exits ")) if comment else 0
                done = subprocess.run(
                    shlex.split(command),
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                assert done.returncode == expected, f"$ {command}\n{done.stdout}\n{done.stderr}"
                assert "Traceback" not in done.stderr
                ran.append(command)
                last_output = done.stdout
        elif language == "text" and last_output is not None:
            assert last_output == body, f"after $ {ran[-1]}"
            last_output = None
    assert "listferry new-plugin kontakto" in ran
    assert ran.count("python3 -m pytest -q listferry-kontakto") == 2
    plugins = subprocess.run(
        ["listferry", "plugins", "--json"], cwd=work, env=env, capture_output=True, text=True
    )
    assert '"name": "kontakto"' in plugins.stdout
    assert '"distribution": "listferry-kontakto"' in plugins.stdout
