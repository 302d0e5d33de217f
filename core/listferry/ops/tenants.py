"""Changing the config's tenants: add, set, remove, and how one tenant's settings read.

Every change goes the same way: the config file is locked against other changes, read
as it is now, changed with tomlkit (:mod:`listferry.config.edit`, comments and layout
kept), checked whole (keys, values, dialects, strategies, homes), and only then put in
place atomically. A refused change leaves the file byte for byte as it was.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import tomllib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from listferry.app import App, check_names, open_app, template_name
from listferry.config import TENANT_KEYS, TENANT_NAME, Config, Tenant, parse_config
from listferry.config.edit import UNSET, TenantTables, config_locked, write_atomically
from listferry.config.public_keys import public_key_problem
from listferry.config.where import did_you_mean, without_place
from listferry.errors import ConfigError, ListferryError, UsageError
from listferry.store.locks import EXPORTS, RUNS, tenant_lock

#: Settings that are never shown: only whether they are set.
SECRET_KEYS = ("password_hash", "remote_password")
#: Names a tenant may not take: its state folder would be the servers' own.
RESERVED_NAMES = ("server",)
#: Where ``tenant remove`` puts a tenant's folders, in the state folder (no tenant name
#: starts with ``_``).
REMOVED = "_removed"


def check_name(name: str) -> str:
    """A tenant name is a folder and a TOML key: refuse anything that could be a path."""
    if not TENANT_NAME.match(name):
        raise UsageError(
            f"tenant name {name!r} is not allowed: use lower-case letters, digits, '-' and "
            "'_', starting with a letter or digit, at most 63 characters"
        )
    if name in RESERVED_NAMES:
        raise UsageError(
            f"tenant name {name!r} is not allowed: state/{name} holds the servers' own keys"
        )
    return name


# -- the one way the file is changed ------------------------------------------------------


def _current(app: App) -> App:
    """``app`` when its config is the file as it is now, else the file read again."""
    try:
        now = app.config.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        now = None
    return app if now == app.config.text else open_app(app.config.path)


def _save(app: App, tables: TenantTables) -> Config:
    """Check the changed config whole, then put it in place (when anything changed)."""
    text = tables.render()
    try:
        new = parse_config(text, app.config.path)
        check_names(new, app.host)
    except ConfigError as exc:  # its line numbers are those of a text never written
        problem = without_place(str(exc), app.config.path)
        raise ConfigError(f"{app.config.path} is left as it was: {problem}") from None
    if text != app.config.text:
        write_atomically(app.config.path, text)
    return new


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def add_tenant(app: App, name: str, settings: dict[str, Any]) -> Config:
    """Add ``[tenants.NAME]`` with ``settings`` (``None`` values left out) to the config.

    Returns the checked new config; a refused tenant leaves the file as it was.
    """
    check_name(name)
    if app.config.cluster is not None:
        return _add_shared(app, name, {k: _plain(v) for k, v in settings.items() if v is not None})
    path = app.config.path
    with config_locked(path):
        app = _current(app)
        if name in app.config.tenants:
            raise ListferryError(f"{path}: tenant {name!r} exists already")
        tables = TenantTables(app.config.text, path)
        tables.add(name, {k: _plain(v) for k, v in settings.items() if v is not None})
        return _save(app, tables)


def set_tenant(
    app: App,
    name: str,
    values: dict[str, Any],
    add_ips: Iterable[str] = (),
    remove_ips: Iterable[str] = (),
) -> tuple[Config, bool]:
    """Set (or, with ``UNSET``, remove) keys of tenant ``name``; add to or take from its
    allow list (starting from the list it has now, its own or from ``[defaults]``).

    Returns the checked new config and whether the file changed.
    """
    if app.config.cluster is not None:
        return _set_shared(app, name, values, list(add_ips), list(remove_ips))
    path = app.config.path
    with config_locked(path):
        app = _current(app)
        tenant = app.config.tenant(name)
        values = {k: _plain(v) for k, v in values.items()}
        add_ips, remove_ips = list(add_ips), list(remove_ips)
        if add_ips or remove_ips:
            values["allow_ips"] = changed_allow_list(tenant, add_ips, remove_ips)
        tables = TenantTables(app.config.text, path)
        tables.set(name, values)
        new = _save(app, tables)
        return new, new.text != app.config.text


def changed_allow_list(tenant: Tenant, add: list[str], remove: list[str]) -> list[str]:
    """The tenant's allow list with ``add`` added (once) and ``remove`` taken out."""
    return _changed_list(tenant.name, list(tenant.allow_ips), add, remove)


def _changed_list(name: str, current: list[str], add: list[str], remove: list[str]) -> list[str]:

    def network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        try:
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigError(f"{text!r} is not an IP address or CIDR network") from None

    result = list(current)
    for text in remove:
        gone = [item for item in result if network(item) == network(text)]
        if not gone:
            shown = ", ".join(result) or "empty"
            raise ConfigError(f"{text} is not in {name}'s allow list ({shown})")
        result = [item for item in result if item not in gone]
    for text in add:
        if not any(network(item) == network(text) for item in result):
            result.append(text)
    return result


def tenant_key(key: str) -> str:
    """``key`` when a tenant's table takes it; else a :class:`ConfigError` naming it."""
    if key not in TENANT_KEYS:
        hint = did_you_mean(key, TENANT_KEYS) or "see docs/operator.md"
        raise ConfigError(f"unknown tenant key {key!r} ({hint})")
    return key


def parse_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as a tenant key and its value: TOML when that reads as a value the
    key takes (``0.1``, ``true``, ``["a", "b"]``), else the text as it is.

    An unknown key or a value the key does not take is a :class:`ConfigError` naming the
    key (never the value: it may be a secret).
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("a setting must be KEY=VALUE, such as strategy=incremental")
    key = tenant_key(key.strip())
    check = TENANT_KEYS[key][1]
    try:
        parsed = tomllib.loads(f"value = {raw}")
        value = parsed["value"] if list(parsed) == ["value"] else raw
    except tomllib.TOMLDecodeError:
        value = raw
    if value is not raw and check(value) and not check(raw):
        value = raw  # "02:00:30" reads as a TOML time, but schedule takes the text
    problem = check(value)
    if problem:
        raise ConfigError(f"{key} {problem}")
    if key == "home" and not value.strip():
        raise ConfigError("home must not be empty")
    return key, value


# -- in cluster mode: the tenant's row in the cluster's database ---------------------------


def _no_tenant(config: Config, name: str) -> ConfigError:
    known = ", ".join(sorted([*config.tenants, *config.tenant_problems])) or "none yet"
    return ConfigError(f"no tenant {name!r} in the cluster's database (tenants: {known})")


def _add_shared(app: App, name: str, settings: dict[str, Any]) -> Config:
    from listferry.cluster.tenants import change_tenant

    def add(old: dict[str, Any] | None) -> dict[str, Any]:
        if old is not None:
            raise ListferryError(f"tenant {name!r} exists already in the cluster's database")
        return settings

    return change_tenant(app, name, add)[0]


def _set_shared(
    app: App, name: str, values: dict[str, Any], add_ips: list[str], remove_ips: list[str]
) -> tuple[Config, bool]:
    from listferry.cluster.tenants import change_tenant

    def change(old: dict[str, Any] | None) -> dict[str, Any]:
        if old is None:
            raise _no_tenant(app.config, name)
        new = dict(old)
        for key, value in values.items():
            if value is UNSET:
                new.pop(key, None)
            else:
                new[key] = _plain(value)
        if add_ips or remove_ips:
            current = new.get("allow_ips", app.config.defaults.get("allow_ips", []))
            new["allow_ips"] = _changed_list(name, list(current), add_ips, remove_ips)
        return new

    return change_tenant(app, name, change)


def _remove_shared(app: App, name: str, purge: bool) -> list[str]:
    """``tenant remove`` in cluster mode: the row and the store pointer go in one
    transaction; the store versions, archive and home stay in storage unless ``purge``."""
    from listferry.cluster.storage import Storage
    from listferry.cluster.tenants import change_tenant, forget_store, running_job

    config = app.config
    if name not in config.tenants and name not in config.tenant_problems:
        raise _no_tenant(config, name)
    job = running_job(config, name)
    if job is not None:
        raise ListferryError(f"{name} has a run in progress (job {job}); try again when it ends")
    last: list[str | None] = []

    def remove(old: dict[str, Any] | None) -> None:
        if old is None:
            raise _no_tenant(config, name)

    change_tenant(app, name, remove, lambda conn: last.append(forget_store(conn, name, purge)))
    said = [f"removed tenant {name} from the cluster's database"]
    assert config.storage is not None
    storage = Storage(config.storage.url, config.storage.endpoint_url, config.storage.region)
    places = [f"stores/{name}/", f"archive/{name}/", f"homes/{name}/"]
    if purge:
        for place in places:
            storage.delete_many(item.key for item in storage.list(place))
        said.append(f"its store versions, archive and home in {config.storage.url}: deleted")
    else:
        where = ", ".join(storage.url_of(place) for place in places)
        said.append(f"its store versions, archive and home stay in storage: {where}")
        if last and last[0]:
            said.append(f"its last store version: {storage.url_of(last[0])}")
    folder = config.state_dir / name
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        said.append(f"this node's copy of its store ({folder}): deleted")
    return said


# -- how a tenant reads -------------------------------------------------------------------


def describe(app: App, name: str) -> dict[str, Any]:
    """One tenant's settings as they apply (``[defaults]`` and defaults filled in), with
    where each comes from (``from``); secrets only as set or not (``password`` for the
    password hash), SSH keys as a count. ``export_template`` is the template its return
    files get, its dialect's (``from``: ``dialect``) when neither sets one."""
    config = app.config
    tenant = config.tenant(name)
    data = tomllib.loads(config.text)
    if config.cluster is not None:
        from listferry.cluster.tenants import own_settings

        own = own_settings(config, name)
    else:
        own = data.get("tenants", {}).get(name, {})
    defaults = data.get("defaults", {})
    settings: dict[str, Any] = {"name": name}
    sources = {}
    for key in TENANT_KEYS:
        value = _plain(getattr(tenant, key))
        shown = "password" if key == "password_hash" else key
        if key in SECRET_KEYS:
            settings[shown] = value is not None
        elif key == "ssh_keys":
            settings[shown] = len(value)
        else:
            settings[shown] = value
        sources[shown] = "tenant" if key in own else "defaults" if key in defaults else "default"
    if tenant.export_template is None:
        settings["export_template"] = template_name(app.host, tenant)
        if getattr(app.host.dialects.get(tenant.dialect), "template", None):
            sources["export_template"] = "dialect"
    settings["from"] = sources
    return settings


def describe_lines(shown: dict[str, Any]) -> list[str]:
    """:func:`describe` as ``tenant show`` prints it: a line per setting, and where it
    comes from when that is not the tenant's own table."""
    lines = [shown["name"]]
    rows = []
    for key, source in shown["from"].items():
        if key in (*SECRET_KEYS, "password"):
            text = f"{key}: {'set' if shown[key] else 'not set'}"
        elif key == "ssh_keys":
            text = f"ssh_keys: {shown[key]} key(s)"
        else:
            text = f"{key} = {json.dumps(shown[key], ensure_ascii=False)}"
        notes = {"defaults": "[defaults]", "default": "default", "dialect": "the dialect's"}
        rows.append((text, notes.get(source, "")))
    width = min(max(len(text) for text, _ in rows), 40)
    lines += [f"  {text:<{width}}  # {note}" if note else f"  {text}" for text, note in rows]
    return lines


# -- removing a tenant --------------------------------------------------------------------


def remove_tenant(app: App, name: str, purge: bool) -> list[str]:
    """Take tenant ``name`` out of the config, and its folders aside (or delete them).

    Refused while a run or an export of the tenant is under way; both its locks are held
    until the end, so none starts meanwhile. The state folder (store, archive) and a
    local home go to ``state/_removed/NAME-<UTC time>/``, or are deleted with ``purge``.
    A home on a customer's server (a URL) is never touched, nor a folder that is not the
    tenant's alone. Returns what happened, a line each.
    """
    if app.config.cluster is not None:
        return _remove_shared(app, name, purge)
    path = app.config.path
    with config_locked(path):
        app = _current(app)
        config = app.config
        tenant = config.tenant(name)
        with tenant_lock(tenant, RUNS) as runs, tenant_lock(tenant, EXPORTS) as exports:
            if not runs:
                raise ListferryError(f"{name} has a run in progress; try again when it ends")
            if not exports:
                raise ListferryError(f"{name} has an export in progress; try again when it ends")
            if (config.state_dir / "server") == tenant.state_dir:
                raise ListferryError(
                    f"{tenant.state_dir} also holds the servers' keys: move {name}'s files "
                    "out by hand, then remove it"
                )
            tables = TenantTables(config.text, path)
            tables.remove(name)
            _save(app, tables)
            said = [f"removed tenant {name} from {path}"]
            aside = None if purge else _aside_folder(config, name)
            said.append(_put_away_home(config, tenant, aside))
            if {entry.name for entry in tenant.state_dir.iterdir()} <= {RUNS, EXPORTS}:
                shutil.rmtree(tenant.state_dir)  # only the locks taken here: nothing to keep
                said.append("its store and archive: none yet")
            else:  # last: the locks in it hold until the rest is done
                said.append(_put_away(tenant.state_dir, "store and archive", aside, "state"))
            return said


def _aside_folder(config: Config, name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = config.state_dir / REMOVED / f"{name}-{stamp}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def _put_away(folder: Path, what: str, aside: Path | None, as_name: str) -> str:
    """Move ``folder`` to ``aside/as_name`` (or delete it when ``aside`` is None)."""
    try:
        if aside is None:
            shutil.rmtree(folder)
            return f"its {what} ({folder}): deleted"
        aside.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.move(folder, aside / as_name)
        return f"its {what}: moved to {aside / as_name}"
    except OSError as exc:
        raise ListferryError(
            f"the tenant is out of the config, but its {what} ({folder}) could not be "
            f"{'deleted' if aside is None else 'moved'}: {exc.strerror or exc}; finish by hand"
        ) from None


def _put_away_home(config: Config, tenant: Tenant, aside: Path | None) -> str:
    if not tenant.is_local:
        return f"its home {tenant.home}: on the customer's server, not touched"
    home = Path(tenant.home)
    if not home.exists():
        return f"its home {home}: not there"
    reason = _not_its_own(config, tenant, home)
    if reason:
        return f"its home {home}: left in place ({reason})"
    return _put_away(home, "home", aside, "home")


def _not_its_own(config: Config, tenant: Tenant, home: Path) -> str | None:
    """Why ``home`` is not the tenant's alone to move or delete, or None."""
    if home.is_symlink() or not home.is_dir():
        return "not a folder of its own"
    real = home.resolve()
    for other in (config.path.parent, config.state_dir, config.homes_dir):
        if real == other.resolve() or real in other.resolve().parents:
            return f"it holds {other}"
    for other in config.tenants.values():
        if other.name == tenant.name or not other.is_local:
            continue
        theirs = Path(other.home).resolve()
        if real == theirs or real in theirs.parents or theirs in real.parents:
            return f"shared with tenant {other.name}"
    return None


def read_ssh_keys(path: Path) -> list[str]:
    """The public keys in an ``authorized_keys``-style file; refuses a private key.

    Any problem with the file is a :class:`UsageError`: the key file given is wrong.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the key file: {exc}") from None
    if "PRIVATE KEY" in text:
        raise UsageError(f"{path}: this is a private key; give the public key (.pub)")
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        problem = public_key_problem(line)
        if problem:
            raise UsageError(f"{path} line {number}: {problem}")
        keys.append(line)
    if not keys:
        raise UsageError(f"{path}: no public key in the file")
    return keys
