"""The config file: one TOML file, ``[listferry]`` settings and a table per tenant.

Every key is checked before any run starts: an unknown key, a wrong type or a value
out of range is one error naming the file, the line and the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from listferry.config import checks
from listferry.config.checks import Check
from listferry.config.notify import NotifySettings, parse_notify
from listferry.config.where import key_error, line_of, place, unknown_key, where
from listferry.dialect import TRUE_WORDS
from listferry.errors import ConfigError

DEFAULT_NAME = "listferry.toml"
COUNT_POLICIES = ("required", "optional", "off")
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: The name of the tenant the ``[defaults]`` alone describe (no tenant is named so).
DEFAULTS_NAME = "(defaults)"


#: The data points a return file holds unless the tenant picks others.
EXPORT_FIELDS = (
    "email", "first_name", "last_name", "segment_code", "status", "opted_out", "opted_out_at",
    "open_count", "click_count", "last_open", "last_click", "topics",
)  # fmt: skip

#: Tenant settings: key -> (default, check). ``[defaults]`` may set any but ``home``.
TENANT_KEYS: dict[str, tuple[Any, Check]] = {
    "home": (None, checks.string),
    "dialect": ("default", checks.string),
    "strategy": ("full", checks.string),
    "count_file": ("optional", checks.one_of(*COUNT_POLICIES)),
    "count_file_wait": ("2h", checks.duration_or_empty),
    "keep_reports": (5, checks.whole_number(1)),
    "pattern": ("*.csv", checks.file_pattern),
    "allow_ips": ([], checks.ip_networks),
    "password_hash": (None, checks.password_hash),
    "ssh_keys": ([], checks.ssh_public_keys),
    "max_invalid_share": (0.05, checks.share),
    "max_shrink_share": (0.5, checks.share),
    "settle_seconds": (0, checks.seconds),
    "require_tls": (False, checks.boolean),
    "process": ("nightly", checks.one_of("nightly", "on-upload")),
    "stable_seconds": (10, checks.seconds),
    "remote_password": (None, checks.string),
    "remote_password_env": (None, checks.string),
    "remote_key_file": (None, checks.string),
    "known_hosts": (None, checks.string),
    "tls_verify": (True, checks.boolean),
    "ca_file": (None, checks.string),
    "remote_retries": (3, checks.whole_number(0)),
    "remote_timeout": (30, checks.seconds_above_zero),
    "export_template": (None, checks.string),
    "export_fields": (list(EXPORT_FIELDS), checks.string_list),
    "export_subscribers": ("all", checks.one_of("all", "changed-since-last")),
    "export_after_sync": (False, checks.boolean),
    "export_to": (None, checks.string),
    "export_name": ("return_{date}", checks.export_name),
    "schedule": ("02:00", checks.schedule_or_empty),
    "timezone": ("UTC", checks.time_zone),
    "export_schedule": ("", checks.schedule_or_empty),
    "contact_email": (None, checks.email_address),
    "expect_file_within": ("36h", checks.duration_or_empty),
    "pgp_key_file": (None, checks.string),
    "pgp_passphrase_env": (None, checks.string),
    "pgp_recipient_key_file": (None, checks.string),
    "opt_out_columns": ([], checks.column_names),
    "opt_out_values": (sorted(TRUE_WORDS), checks.non_empty_words),
}

#: The built-in servers' settings, ``[server]``. Paths are relative to the config file;
#: empty key paths mean "in the state folder's ``server/``, made by ``listferry init``".
SERVER_KEYS: dict[str, tuple[Any, Check]] = {
    "host": ("127.0.0.1", checks.string),
    "ftp_port": (2121, checks.port_or_any),
    "ftps_port": (2990, checks.port_or_any),
    "sftp_port": (2222, checks.port_or_any),
    "passive_ports": ("", checks.port_range_or_empty),
    "tls_cert": ("", checks.string),
    "tls_key": ("", checks.string),
    "ssh_host_key": ("", checks.string),
    "require_tls": (False, checks.boolean),
    "max_connections": (256, checks.whole_number(1)),
    "max_connections_per_ip": (16, checks.whole_number(1)),
    "delay_after_failures": (3, checks.whole_number(1)),
    "block_after_failures": (10, checks.whole_number(1)),
    "block_seconds": (900, checks.seconds),
    "idle_timeout": (300, checks.seconds),
    "handshake_timeout": (30, checks.seconds),
    "stop_timeout": (60, checks.seconds),
    "upload_grace": (3, checks.seconds),
}

LISTFERRY_KEYS: dict[str, tuple[Any, Check]] = {
    "state": ("state", checks.string),
    "homes": ("homes", checks.string),
    "plugins": ([], checks.string_list),
    "disable": ([], checks.string_list),
    "workers": (None, checks.whole_number(1)),
    "executor": ("local", checks.string),
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
    count_file_wait: str = "2h"
    keep_reports: int = 5
    pattern: str = "*.csv"
    allow_ips: tuple[str, ...] = ()
    password_hash: str | None = field(default=None, repr=False)
    ssh_keys: tuple[str, ...] = field(default=(), repr=False)
    max_invalid_share: float = 0.05
    max_shrink_share: float = 0.5
    settle_seconds: float = 0
    require_tls: bool = False
    process: str = "nightly"
    stable_seconds: float = 10
    remote_password: str | None = field(default=None, repr=False)
    remote_password_env: str | None = None
    remote_key_file: str | None = None
    known_hosts: str | None = None
    tls_verify: bool = True
    ca_file: str | None = None
    remote_retries: int = 3
    remote_timeout: float = 30
    export_template: str | None = None
    export_fields: tuple[str, ...] = EXPORT_FIELDS
    export_subscribers: str = "all"
    export_after_sync: bool = False
    export_to: str | None = None
    export_name: str = "return_{date}"
    schedule: str = "02:00"
    timezone: str = "UTC"
    export_schedule: str = ""
    contact_email: str | None = None
    expect_file_within: str = "36h"
    pgp_key_file: str | None = None
    pgp_passphrase_env: str | None = None
    pgp_recipient_key_file: str | None = None
    opt_out_columns: tuple[str, ...] = ()
    opt_out_values: tuple[str, ...] = tuple(sorted(TRUE_WORDS))

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
            "require_tls": self.require_tls,
            "process": self.process,
            "password": self.password_hash is not None,
            "ssh_keys": len(self.ssh_keys),
        }


@dataclass(frozen=True)
class ServerSettings:
    """The ``[server]`` table, with key paths made absolute."""

    host: str = "127.0.0.1"
    ftp_port: int = 2121
    ftps_port: int = 2990
    sftp_port: int = 2222
    passive_ports: tuple[int, int] | None = None
    tls_cert: Path = Path("tls-cert.pem")
    tls_key: Path = Path("tls-key.pem")
    ssh_host_key: Path = Path("ssh_host_ed25519_key")
    require_tls: bool = False
    max_connections: int = 256
    max_connections_per_ip: int = 16
    delay_after_failures: int = 3
    block_after_failures: int = 10
    block_seconds: float = 900
    idle_timeout: float = 300
    handshake_timeout: float = 30
    stop_timeout: float = 60
    upload_grace: float = 3


def _server_settings(values: dict[str, Any], root: Path, state_dir: Path) -> ServerSettings:
    own = state_dir / "server"
    paths = {
        "tls_cert": own / "tls-cert.pem",
        "tls_key": own / "tls-key.pem",
        "ssh_host_key": own / "ssh_host_ed25519_key",
    }
    for key, default in paths.items():
        # Absolute, but symbolic links kept: a renewal repoints them (certbot's live/).
        values[key] = Path(os.path.abspath(root / values[key])) if values[key] else default
    low, _, high = values["passive_ports"].partition("-")
    values["passive_ports"] = (int(low), int(high)) if high else None
    return ServerSettings(**values)


@dataclass(frozen=True)
class Config:
    """The whole config file, checked."""

    path: Path
    state_dir: Path
    homes_dir: Path
    plugins: tuple[str, ...]
    disable: tuple[str, ...]
    tenants: dict[str, Tenant]
    workers: int = 1
    server: ServerSettings = field(default_factory=ServerSettings)
    text: str = field(repr=False, default="")
    executor: str = "local"
    notify: NotifySettings = field(default_factory=NotifySettings)
    defaults: dict[str, Any] = field(default_factory=dict)

    def tenant(self, name: str) -> Tenant:
        try:
            return self.tenants[name]
        except KeyError:
            known = ", ".join(sorted(self.tenants)) or "none yet"
            raise ConfigError(f"{self.path}: no tenant {name!r} (tenants: {known})") from None

    def defaults_tenant(self) -> Tenant:
        """A tenant with the ``[defaults]`` settings alone (``listferry check`` without
        ``--tenant``); its home and state folder are never used."""
        return defaults_tenant(self.defaults, self.path.parent.resolve(), self.state_dir)

    def where(self, table: str, key: str | None = None) -> str:
        """``file line N: [table] key`` for error messages."""
        return where(self.path, self.text, table, key)

    def where_tenant(self, name: str, key: str) -> str:
        """:meth:`where` the tenant's ``key`` was set: its own table, else ``[defaults]``
        when the value comes from there. For error messages: it reads the text again."""
        own = tomllib.loads(self.text).get("tenants", {}).get(name, {}) if self.text else {}
        if key not in own and key in self.defaults:
            return self.where("defaults", key)
        return self.where(f"tenants.{name}", key)


#: Tenant keys that name a file, relative to the config file's folder.
PATH_KEYS = ("known_hosts", "ca_file", "remote_key_file", "export_to", "pgp_key_file",
             "pgp_recipient_key_file")  # fmt: skip


def defaults_tenant(defaults: dict[str, Any], root: Path, state_dir: Path) -> Tenant:
    """The tenant that ``defaults`` (checked ``[defaults]`` values) describe."""
    values = {key: default for key, (default, _) in TENANT_KEYS.items() if key != "home"}
    values.update(defaults)
    for key in PATH_KEYS:
        if values[key] and "://" not in values[key]:
            values[key] = str((root / Path(values[key]).expanduser()).resolve())
    for key in ("allow_ips", "ssh_keys", "export_fields", "opt_out_columns", "opt_out_values"):
        values[key] = tuple(values[key])
    return Tenant(name=DEFAULTS_NAME, home=str(state_dir / DEFAULTS_NAME),
                  state_dir=state_dir / DEFAULTS_NAME, **values)  # fmt: skip


def find_config(option: str | None) -> Path:
    """The config path: ``--config``, else ``$LISTFERRY_CONFIG``, else ``./listferry.toml``."""
    return Path(option or os.environ.get("LISTFERRY_CONFIG") or DEFAULT_NAME)


def _check_table(
    text: str, path: Path, table: str, values: dict[str, Any], keys: dict[str, tuple[Any, Any]]
) -> dict[str, Any]:
    for key, value in values.items():
        if key not in keys:
            raise unknown_key(path, text, table, key, keys)
        problem = keys[key][1](value)
        if problem:
            raise key_error(path, text, table, key, problem)
    return dict(values)


#: The schemes of the built-in transports to a customer's server: each logs in as a user.
LOGIN_SCHEMES = ("sftp", "ftp", "ftps")


def home_problem(home: str) -> str | None:
    """What makes ``home`` unusable, said after the key (``home ...``), or ``None``: a URL
    that cannot be read, names no host (or, for sftp, ftp and ftps, no user), or holds a
    password; a folder whose leading ``~`` names no user this machine has."""
    if "://" not in home:
        try:
            Path(home).expanduser()
        except RuntimeError:
            return f"{home!r}: no user {home[1:].split('/', 1)[0]!r} on this machine for its ~"
        return None
    try:
        url = urlsplit(home)
        _ = url.port  # raises on a bracket left open, a bad port
    except (ValueError, RuntimeError) as exc:
        return f"{home!r}: {exc}"
    server = home.split("://", 1)[1].split("/", 1)[0]
    if "@" in server and ":" in server.split("@", 1)[0]:
        return "must not hold a password; use remote_password_env (or remote_password)"
    if not url.hostname:
        return f"{home!r} names no host"
    if url.scheme.lower() in LOGIN_SCHEMES and not url.username:
        return f"{home!r} names no user: {url.scheme}://USER@{url.hostname}/..."
    return None


def cpu_count() -> int:
    """The CPUs this process may run on: the default number of ``workers``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def parse_config(text: str, path: Path) -> Config:
    """Check a config's text and return it; raise :class:`ConfigError` naming the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    root = path.parent.resolve()
    unknown = set(data) - {"listferry", "server", "defaults", "tenants", "notify"}
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(
            f"{place(path, line_of(text, name))}: unknown table [{name}] "
            "(known: [listferry], [server], [defaults], [tenants.NAME], [notify])"
        )
    for table in ("listferry", "server", "defaults", "tenants"):
        if table in data and not isinstance(data[table], dict):
            raise ConfigError(f"{path}: {table} must be a table ([{table}])")
    settings = _check_table(text, path, "listferry", data.get("listferry", {}), LISTFERRY_KEYS)
    settings = {key: settings.get(key, default) for key, (default, _) in LISTFERRY_KEYS.items()}
    tenant_defaults = {k: v for k, v in TENANT_KEYS.items() if k != "home"}
    defaults = _check_table(text, path, "defaults", data.get("defaults", {}), tenant_defaults)
    state_dir = (root / settings["state"]).resolve()
    homes_dir = (root / settings["homes"]).resolve()
    server = _check_table(text, path, "server", data.get("server", {}), SERVER_KEYS)
    server = {key: server.get(key, default) for key, (default, _) in SERVER_KEYS.items()}
    tenants = {}
    for name, table in data.get("tenants", {}).items():
        if not TENANT_NAME.fullmatch(name):
            raise ConfigError(
                f"{place(path, line_of(text, f'tenants.{name}'))}: tenant name {name!r} must be "
                "lower-case letters, digits, '-' or '_', starting with a letter or digit"
            )
        if not isinstance(table, dict):
            raise ConfigError(
                f"{place(path, line_of(text, 'tenants', name))}: tenants.{name} must be a table "
                f"([tenants.{name}])"
            )
        values = {key: default for key, (default, _) in TENANT_KEYS.items()}
        values.update(defaults)
        values.update(_check_table(text, path, f"tenants.{name}", table, TENANT_KEYS))
        home = values.pop("home")
        problem = home_problem(home) if home is not None else None
        if home is None:
            home = str(homes_dir / name)
        elif "://" not in home and not problem:
            home = str((root / Path(home).expanduser()).resolve())
        if problem:
            raise key_error(path, text, f"tenants.{name}", "home", problem)
        for key in PATH_KEYS:
            value = values[key]
            try:
                if value and "://" in value:
                    _ = urlsplit(value).port  # raises on a bracket left open, a bad port
                elif value:
                    values[key] = str((root / Path(value).expanduser()).resolve())
            except (ValueError, RuntimeError) as exc:
                source = "defaults" if key in defaults and key not in table else f"tenants.{name}"
                raise key_error(path, text, source, key, f"{value!r}: {exc}") from None
        values["allow_ips"] = tuple(values["allow_ips"])
        values["ssh_keys"] = tuple(values["ssh_keys"])
        values["export_fields"] = tuple(values["export_fields"])
        values["opt_out_columns"] = tuple(values["opt_out_columns"])
        values["opt_out_values"] = tuple(values["opt_out_values"])
        tenants[name] = Tenant(name=name, home=home, state_dir=state_dir / name, **values)
    return Config(
        path=path,
        state_dir=state_dir,
        homes_dir=homes_dir,
        plugins=tuple(settings["plugins"]),
        disable=tuple(settings["disable"]),
        tenants=tenants,
        workers=settings["workers"] or cpu_count(),
        server=_server_settings(server, root, state_dir),
        text=text,
        executor=settings["executor"],
        notify=parse_notify(text, path, data.get("notify")),
        defaults=defaults,
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
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{place(path, line)}: not UTF-8 text (byte {exc.start})") from None
    return parse_config(text, path)
