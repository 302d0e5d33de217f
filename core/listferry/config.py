"""The config file: one TOML file, ``[listferry]`` settings and a table per tenant.

Every key is checked before any run starts: an unknown key, a wrong type or a value
out of range is one error naming the file, the line and the key.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from listferry.errors import ConfigError

DEFAULT_NAME = "listferry.toml"
COUNT_POLICIES = ("required", "optional", "off")
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _share(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
    return None if ok else "must be a number from 0 to 1"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _typed(kind: type) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        return None if ok else f"must be a {kind.__name__}"

    return check


def _string_list(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return None if ok else "must be a list of strings"


def _cidrs(value: Any) -> str | None:
    if _string_list(value):
        return "must be a list of strings"
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"has {item!r}, which is not an IP address or CIDR network"
    return None


def _non_negative(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    return None if ok else "must be a number of seconds, 0 or more"


#: Tenant settings: key -> (default, check). ``[defaults]`` may set any but ``home``.
TENANT_KEYS: dict[str, tuple[Any, Callable[[Any], str | None]]] = {
    "home": (None, _typed(str)),
    "dialect": ("default", _typed(str)),
    "strategy": ("full", _typed(str)),
    "count_file": ("optional", _one_of(*COUNT_POLICIES)),
    "pattern": ("*.csv", _typed(str)),
    "allow_ips": ([], _cidrs),
    "password_hash": (None, _typed(str)),
    "ssh_keys": ([], _string_list),
    "max_invalid_share": (0.05, _share),
    "max_shrink_share": (0.5, _share),
    "settle_seconds": (0, _non_negative),
}

LISTFERRY_KEYS: dict[str, tuple[Any, Callable[[Any], str | None]]] = {
    "state": ("state", _typed(str)),
    "homes": ("homes", _typed(str)),
    "plugins": ([], _string_list),
    "disable": ([], _string_list),
}


@dataclass(frozen=True)
class Tenant:
    """One customer, as the config describes it."""

    name: str
    home: str
    state_dir: Path
    dialect: str = "default"
    strategy: str = "full"
    count_file: str = "optional"
    pattern: str = "*.csv"
    allow_ips: tuple[str, ...] = ()
    password_hash: str | None = field(default=None, repr=False)
    ssh_keys: tuple[str, ...] = field(default=(), repr=False)
    max_invalid_share: float = 0.05
    max_shrink_share: float = 0.5
    settle_seconds: float = 0

    @property
    def is_local(self) -> bool:
        return "://" not in self.home

    @property
    def database(self) -> Path:
        return self.state_dir / "tenant.db"

    def to_json(self) -> dict[str, Any]:
        """The tenant as ``tenant list --json`` prints it: never a secret."""
        return {
            "name": self.name,
            "home": self.home,
            "dialect": self.dialect,
            "strategy": self.strategy,
            "count_file": self.count_file,
            "allow_ips": list(self.allow_ips),
            "pattern": self.pattern,
            "password": self.password_hash is not None,
            "ssh_keys": len(self.ssh_keys),
        }


@dataclass(frozen=True)
class Config:
    """The whole config file, checked."""

    path: Path
    state_dir: Path
    homes_dir: Path
    plugins: tuple[str, ...]
    disable: tuple[str, ...]
    tenants: dict[str, Tenant]
    text: str = field(repr=False, default="")

    def tenant(self, name: str) -> Tenant:
        try:
            return self.tenants[name]
        except KeyError:
            known = ", ".join(sorted(self.tenants)) or "none yet"
            raise ConfigError(f"{self.path}: no tenant {name!r} (tenants: {known})") from None

    def where(self, table: str, key: str | None = None) -> str:
        """``file line N: [table] key`` for error messages."""
        line = line_of(self.text, table, key)
        at = f" line {line}" if line else ""
        return f"{self.path}{at}: [{table}]" + (f" {key}" if key else "")


def find_config(option: str | None) -> Path:
    """The config path: ``--config``, else ``$LISTFERRY_CONFIG``, else ``./listferry.toml``."""
    return Path(option or os.environ.get("LISTFERRY_CONFIG") or DEFAULT_NAME)


def line_of(text: str, table: str, key: str | None = None) -> int | None:
    """The line of ``key`` in ``[table]`` (or of the table header), counting from 1."""
    header = re.compile(
        r"^\s*\[\s*" + r"\s*\.\s*".join(map(re.escape, table.split("."))) + r"\s*\]"
    )
    in_table = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("["):
            in_table = bool(header.match(line))
            if in_table and key is None:
                return number
            continue
        if in_table and key and re.match(rf"^\s*\"?{re.escape(key)}\"?\s*=", line):
            return number
    return None


def _check_table(
    text: str, path: Path, table: str, values: dict[str, Any], keys: dict[str, tuple[Any, Any]]
) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if key not in keys:
            where = line_of(text, table, key)
            close = difflib.get_close_matches(key, list(keys), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(keys)})"
            raise ConfigError(
                f"{path}{f' line {where}' if where else ''}: [{table}] unknown key {key!r}{hint}"
            )
        problem = keys[key][1](value)
        if problem:
            where = line_of(text, table, key)
            raise ConfigError(
                f"{path}{f' line {where}' if where else ''}: [{table}] {key} {problem}"
            )
        out[key] = value
    return out


def parse_config(text: str, path: Path) -> Config:
    """Check a config's text and return it; raise :class:`ConfigError` naming the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    root = path.parent.resolve()
    unknown = set(data) - {"listferry", "defaults", "tenants"}
    if unknown:
        name = sorted(unknown)[0]
        where = line_of(text, name)
        raise ConfigError(
            f"{path}{f' line {where}' if where else ''}: unknown table [{name}] "
            "(known: [listferry], [defaults], [tenants.NAME])"
        )
    for table in ("listferry", "defaults", "tenants"):
        if table in data and not isinstance(data[table], dict):
            raise ConfigError(f"{path}: {table} must be a table ([{table}])")
    settings = _check_table(text, path, "listferry", data.get("listferry", {}), LISTFERRY_KEYS)
    settings = {key: settings.get(key, default) for key, (default, _) in LISTFERRY_KEYS.items()}
    tenant_defaults = {k: v for k, v in TENANT_KEYS.items() if k != "home"}
    defaults = _check_table(text, path, "defaults", data.get("defaults", {}), tenant_defaults)
    state_dir = (root / settings["state"]).resolve()
    homes_dir = (root / settings["homes"]).resolve()
    tenants = {}
    for name, table in data.get("tenants", {}).items():
        if not TENANT_NAME.match(name):
            where = line_of(text, f"tenants.{name}")
            raise ConfigError(
                f"{path}{f' line {where}' if where else ''}: tenant name {name!r} must be "
                "lower-case letters, digits, '-' or '_', starting with a letter or digit"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: tenants.{name} must be a table ([tenants.{name}])")
        values = {key: default for key, (default, _) in TENANT_KEYS.items()}
        values.update(defaults)
        values.update(_check_table(text, path, f"tenants.{name}", table, TENANT_KEYS))
        home = values.pop("home")
        if home is None:
            home = str(homes_dir / name)
        elif "://" not in home:
            home = str((root / home).resolve())
        values["allow_ips"] = tuple(values["allow_ips"])
        values["ssh_keys"] = tuple(values["ssh_keys"])
        tenants[name] = Tenant(name=name, home=home, state_dir=state_dir / name, **values)
    return Config(
        path=path,
        state_dir=state_dir,
        homes_dir=homes_dir,
        plugins=tuple(settings["plugins"]),
        disable=tuple(settings["disable"]),
        tenants=tenants,
        text=text,
    )


def load_config(path: Path) -> Config:
    """Read and check the config file at ``path``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file (run 'listferry init', or pass --config PATH)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_config(text, path)
