"""The config file: one TOML file, ``[listferry]`` settings, ``[server]``, ``[notify]``,
``[defaults]`` and a table per tenant, each key checked before any command runs."""

from listferry.config.checks import duration_seconds, export_stem
from listferry.config.settings import (
    COUNT_POLICIES,
    DEFAULTS_NAME,
    EXPORT_FIELDS,
    LISTFERRY_KEYS,
    SERVER_KEYS,
    TENANT_KEYS,
    TENANT_NAME,
    Config,
    ListferrySettings,
    ServerSettings,
    Tenant,
    defaults_tenant,
    find_config,
    load_config,
    parse_config,
)
from listferry.config.where import line_of

__all__ = [
    "COUNT_POLICIES",
    "DEFAULTS_NAME",
    "EXPORT_FIELDS",
    "LISTFERRY_KEYS",
    "SERVER_KEYS",
    "TENANT_KEYS",
    "TENANT_NAME",
    "Config",
    "ListferrySettings",
    "ServerSettings",
    "Tenant",
    "defaults_tenant",
    "duration_seconds",
    "export_stem",
    "find_config",
    "line_of",
    "load_config",
    "parse_config",
]
