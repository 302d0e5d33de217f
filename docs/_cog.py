"""What the cog blocks in docs/hooks.md, docs/cli.md and docs/operator.md print.

Regenerate the pages with ``cog -r docs/hooks.md docs/cli.md docs/operator.md``;
``cog --check`` fails when they no longer match the code.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterator
from itertools import pairwise

import click
from click.testing import CliRunner

from listferry import hookspecs
from listferry.cli import cli
from listferry.config import ServerSettings, Tenant
from listferry.config.cluster import ClusterSettings, StorageSettings
from listferry.config.keys import Key, keys_of
from listferry.config.notify import EmailSettings, NotifySettings, WebhookSettings
from listferry.config.settings import ListferrySettings
from listferry.config.web import WebSettings

WIDTH = 88  # a fixed terminal width, so --help wraps the same everywhere
FIRSTRESULT = {
    True: "firstresult: yes (the first answer that is not `None` wins; no other plugin is asked)",
    False: "firstresult: no (every plugin that implements it is called)",
}


def signature(hook: Callable[..., object]) -> str:
    """``name(arg: annotation, ...) -> annotation``, as written in hookspecs.py."""
    sig = inspect.signature(hook)
    args = ", ".join(
        p.name if p.annotation is p.empty else f"{p.name}: {p.annotation}"
        for p in sig.parameters.values()
    )
    returns = "" if sig.return_annotation is sig.empty else f" -> {sig.return_annotation}"
    return f"{hook.__name__}({args}){returns}"


def markdown(docstring: str) -> str:
    """reST inline markup (``code``, :class:`x`) as Markdown."""
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", docstring).replace("``", "`")


def sections() -> list[tuple[str, list[Callable[..., object]]]]:
    """The hooks in source order, under the banner comment each one follows."""
    found: list[tuple[str, list[Callable[..., object]]]] = []
    lines = inspect.getsource(hookspecs).splitlines()
    for before, line in pairwise(["", *lines]):
        if before.startswith("# ---") and line.startswith("# ") and "---" not in line:
            found.append((line[2:].strip(), []))
        elif match := re.match(r"def (\w+)\(", line):
            hook = getattr(hookspecs, match[1])
            if hasattr(hook, "listferry_spec"):
                if not found:
                    found.append(("Hooks", []))
                found[-1][1].append(hook)
    return found


def hook_reference() -> str:
    out = [markdown(inspect.getdoc(hookspecs) or ""), ""]
    for title, hooks in sections():
        out += [f"## {title}", ""]
        for hook in hooks:
            out += [
                f"### `{hook.__name__}`",
                "",
                "```python",
                signature(hook),
                "```",
                "",
                FIRSTRESULT[hook.listferry_spec["firstresult"]],
                "",
                markdown(inspect.getdoc(hook) or ""),
                "",
            ]
    return "\n".join(out)


def commands(command: click.Command, path: str = "listferry") -> Iterator[str]:
    """``listferry``, then every command and subcommand below it, alphabetically."""
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from commands(sub, f"{path} {name}")


def cli_reference() -> str:
    out = []
    for path in commands(cli):
        args = [*path.split()[1:], "--help"]
        result = CliRunner().invoke(cli, args, prog_name="listferry", terminal_width=WIDTH)
        if result.exit_code:
            raise RuntimeError(f"{path} --help failed: {result.output}")
        out += [f"## {path}", "", "```text", result.output.rstrip("\n"), "```", ""]
    return "\n".join(out)


#: The config tables of the operator guide: each a list of (prefix of the key names, the
#: dataclass that declares the keys).
CONFIG_TABLES: dict[str, list[tuple[str, type]]] = {
    "listferry": [("", ListferrySettings)],
    "tenants": [("", Tenant)],
    "server": [("", ServerSettings)],
    "notify": [("", NotifySettings), ("email.", EmailSettings), ("webhook.", WebhookSettings)],
    "cluster": [("", ClusterSettings)],
    "storage": [("", StorageSettings)],
    "web": [("", WebSettings)],
}


def shown_default(key: Key) -> str:
    """A key's default as the guide shows it: as TOML, ``none`` or ``required``."""
    if key.shown_default:
        return key.shown_default
    if key.required:
        return "required"
    return "none" if key.default is None else f"`{json.dumps(key.default)}`"


def config_keys(table: str) -> str:
    """The operator guide's table of the keys of ``table`` (a :data:`CONFIG_TABLES` name):
    key, default, meaning."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for prefix, settings in CONFIG_TABLES[table]:
        for key in keys_of(settings).values():
            if "|" in key.doc or "\n" in key.doc:
                raise ValueError(f"{prefix}{key.name}: a meaning cannot hold '|' or a new line")
            rows.append(f"| `{prefix}{key.name}` | {shown_default(key)} | {key.doc} |")
    return "\n".join(rows) + "\n\n"  # the blank line ends the table before cog's marker
