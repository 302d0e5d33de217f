"""The config and the plugins together: what every command starts from."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from listferry.config import Config, Tenant, load_config
from listferry.dialect import Dialect
from listferry.errors import ConfigError, ListferryError
from listferry.fields import resolve_fields
from listferry.plugins import Host, load_host
from listferry.templates import as_template
from listferry.transport import Endpoint, Transport, open_transport

log = logging.getLogger("listferry")


@dataclass
class App:
    """A checked config and the plugins it enabled."""

    config: Config
    host: Host

    def transport(self, tenant: Tenant, location: str | None = None) -> Transport:
        """A connection to the tenant's home (or to ``location``, reached with the
        tenant's settings) through the transport for its scheme. An ``s3://`` place in
        the cluster's bucket is reached through ``[storage]``'s server."""
        endpoint = endpoint_of(tenant, location)
        storage = self.config.storage
        if storage and endpoint.scheme == "s3" and endpoint.location.startswith(storage.url):
            endpoint = replace(endpoint, endpoint_url=storage.endpoint_url)
        return open_transport(self.host.transports, endpoint)


def endpoint_of(tenant: Tenant, location: str | None = None) -> Endpoint:
    """How to reach ``tenant``'s home (or ``location``): its ``remote_*`` settings,
    ``known_hosts`` (default: its state folder's), ``tls_verify`` and ``ca_file``."""
    known_hosts = tenant.known_hosts or tenant.state_dir / "known_hosts"
    return Endpoint(
        location=location or tenant.home,
        password=tenant.remote_password,
        password_env=tenant.remote_password_env,
        key_file=Path(tenant.remote_key_file).expanduser() if tenant.remote_key_file else None,
        known_hosts=Path(known_hosts).expanduser(),
        tls_verify=tenant.tls_verify,
        ca_file=Path(tenant.ca_file).expanduser() if tenant.ca_file else None,
        retries=tenant.remote_retries,
        timeout=tenant.remote_timeout or None,
        state_dir=tenant.state_dir,
    )


def tenant_dialect(host: Host, tenant: Tenant) -> Dialect:
    """The dialect ``tenant``'s files are read with: its ``dialect``, and its
    ``opt_out_columns`` opting out on its ``opt_out_values`` besides."""
    dialect = host.dialects.get(tenant.dialect)
    return dialect.with_opt_out_columns(tenant.opt_out_columns, tenant.opt_out_values)


#: Dialect fields that say nothing of how a file is read: left out of the settings digest.
_NOT_READING = frozenset({"description", "template"})


def _plain(value: Any) -> Any:
    """``value`` in a form whose JSON is the same in every process (sets sorted)."""
    if isinstance(value, frozenset | set):
        return sorted(map(_plain, value), key=repr)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def settings_digest(host: Host, tenant: Tenant) -> str:
    """A digest of what decides how ``tenant``'s files are read and planned: its dialect
    as :func:`tenant_dialect` makes it (a pack's definitions, the tenant's opt-out
    columns and words) and its strategy. A file is a repeat of the last applied one only
    when this is what it was then."""
    dialect = tenant_dialect(host, tenant)
    read = {f.name: _plain(getattr(dialect, f.name)) for f in fields(dialect)}
    read = {name: value for name, value in read.items() if name not in _NOT_READING}
    text = json.dumps({"dialect": read, "strategy": tenant.strategy}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tenant_problem(host: Host, tenant: Tenant) -> tuple[str, str] | None:
    """The first setting of ``tenant`` that names something the plugins do not have, as
    ``(key, reason)``: its dialect, strategy, home's scheme or an export setting."""
    for key, registry in (("dialect", host.dialects), ("strategy", host.strategies)):
        value = getattr(tenant, key)
        if value not in registry:
            known = ", ".join(registry.names()) or "none"
            return key, f"unknown {key} {value!r} (known: {known})"
    scheme = "file" if tenant.is_local else urlsplit(tenant.home).scheme
    if scheme not in host.transports:
        return "home", f"no transport for {scheme}:// (known: {', '.join(host.transports.names())})"
    return export_problem(host, tenant)


def template_name(host: Host, tenant: Tenant) -> str:
    """The tenant's ``export_template``; unset, its dialect's ``template``, else ``csv``."""
    if tenant.export_template:
        return tenant.export_template
    dialect = host.dialects.get(tenant.dialect) if tenant.dialect in host.dialects else None
    return getattr(dialect, "template", None) or "csv"


def export_problem(host: Host, tenant: Tenant) -> tuple[str, str] | None:
    """The first export setting of ``tenant`` the plugins cannot serve, as (key, reason):
    its template, the fields it and the tenant name, the scheme of ``export_to``."""
    name = template_name(host, tenant)
    if name not in host.templates:
        known = ", ".join(host.templates.names()) or "none"
        return "export_template", f"unknown template {name!r} (known: {known})"
    template = as_template(name, host.templates.get(name))
    for key, names in (
        ("export_fields", tenant.export_fields),
        ("export_template", template.fields),
    ):
        try:
            resolve_fields(host.fields, names)
        except ListferryError as exc:
            need = "" if key == "export_fields" else f"template {name!r}: "
            return key, need + str(exc)
    if tenant.export_to and "://" in tenant.export_to:
        scheme = tenant.export_to.split("://", 1)[0].lower()
        if scheme not in host.transports:
            known = ", ".join(host.transports.names())
            return "export_to", f"no transport for {scheme}:// (known: {known})"
    return None


def check_names(config: Config, host: Host) -> None:
    """Every dialect, strategy, home scheme and export setting a tenant names must work.

    A value a tenant takes from ``[defaults]`` is blamed on ``[defaults]``, with its line.
    """
    if config.executor not in host.executors:
        raise ConfigError(
            f"{config.where('listferry', 'executor')}: unknown executor {config.executor!r} "
            f"(known: {', '.join(host.executors.names()) or 'none'})"
        )
    for tenant in config.tenants.values():
        problem = tenant_problem(host, tenant)
        if problem:
            raise ConfigError(f"{config.where_tenant(tenant.name, problem[0])}: {problem[1]}")


def shared_names_checked(config: Config, host: Host) -> Config:
    """In cluster mode, ``config`` with each tenant of the database whose settings name
    something the plugins do not have moved to its ``tenant_problems`` (one line naming
    the tenant and key), so the other tenants stay usable; on one machine, ``config``."""
    if config.cluster is None:
        return config
    from listferry.config.shared import problem_line

    tenants, problems = {}, dict(config.tenant_problems)
    for name, tenant in config.tenants.items():
        problem = tenant_problem(host, tenant)
        if problem:
            problems[name] = problem_line(name, *problem)
        else:
            tenants[name] = tenant
    return replace(config, tenants=tenants, tenant_problems=dict(sorted(problems.items())))


def open_app(path: Path, host: Host | None = None, tenants: Collection[str] | None = None) -> App:
    """Read the config, load the plugins it allows (unless ``host`` holds them already),
    and check the names it uses. In cluster mode each tenant of the database that cannot
    be used is logged as a warning of one line; the others are there (all of them, or
    those named in ``tenants``)."""
    config = load_config(path, tenants)
    try:
        host = host or load_host(disabled=config.disable, modules=config.plugins)
    except ConfigError as exc:
        if exc.key is None:
            raise
        raise ConfigError(f"{config.where('listferry', exc.key)}: {exc}") from None
    config = shared_names_checked(config, host)
    for problem in config.tenant_problems.values():
        log.warning("%s (the other tenants are used)", problem)
    check_names(config, host)
    return App(config, host)


def file_stamp(path: Path) -> tuple[int, int, int, int] | None:
    """What tells one version of a file from another: device, inode, time (ns) and size;
    ``None`` when it cannot be read."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size


class ConfigReload:
    """A long-running process's config: read again when the file changes (another file
    put in its place, or its time or size) or, in cluster mode, when any tenant changed
    in the database (asked at most once a second), and checked whole against the plugins
    the process has, which are never loaded again."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.stamp = file_stamp(app.config.path)
        self.tenants: Any = None
        self._watch(app.config)

    def _watch(self, config: Config) -> None:
        """Follow the tenants of ``config``'s cluster database (none on one machine)."""
        url = config.cluster.database if config.cluster else None
        if self.tenants is not None and self.tenants.url == url:
            return
        if self.tenants is not None:
            self.tenants.close()
            self.tenants = None
        if url is not None:
            from listferry.config.shared import TenantChanges

            self.tenants = TenantChanges(url)

    def changed(self, read: Callable[[Config], None] | None = None) -> App | None:
        """The config as the file says now, when it changed and checks; ``None`` when it
        did not change. ``read(config)`` sees the new config once it parses, before the
        names it uses are checked. A change that cannot be used raises its
        :class:`ListferryError` (or whatever a plugin raised) once, and the last good
        app stays."""
        stamp = file_stamp(self.app.config.path)
        file_changed = stamp is not None and stamp != self.stamp
        if not file_changed and not (self.tenants is not None and self.tenants.changed()):
            return None
        self.stamp = stamp or self.stamp
        config = load_config(self.app.config.path)
        if read is not None:
            read(config)
        config = shared_names_checked(config, self.app.host)
        for problem in config.tenant_problems.values():
            log.warning("%s (the other tenants are used)", problem)
        check_names(config, self.app.host)
        self.app = App(config, self.app.host)
        self._watch(config)
        return self.app
