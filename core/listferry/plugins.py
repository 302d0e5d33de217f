"""The plugin manager: which plugins load, the registries they fill, tracing.

Built-in plugins are ordinary entry points of the ``listferry`` group (distribution
``listferry``); packs installed with pip add theirs to the same group. The config is
read first, so it can disable plugins by name and enable extra plugin modules.

``LISTFERRY_LOAD_PLUGINS`` (comma-separated entry-point names) loads only those
third-party plugins; set it empty to load none. ``LISTFERRY_TRACE_PLUGINS=1`` logs
every hook call on stderr.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from listferry import hookspecs
from listferry.dialect import Dialect
from listferry.errors import ConfigError, ListferryError
from listferry.fields import Field, FieldFamily
from listferry.registry import Kind, Registry, has, instance_of, is_callable
from listferry.templates import Template

if TYPE_CHECKING:
    from collections.abc import Callable

    from listferry.config import Config
    from listferry.jobs import Executor
    from listferry.reader import ListReader
    from listferry.serve.runtime import Server, ServerRuntime
    from listferry.strategy import Strategy
    from listferry.transport import TransportFactory

GROUP = "listferry"
HOST_DISTRIBUTION = "listferry"


@dataclass
class PluginInfo:
    """One installed or configured plugin, enabled or not."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    builtin: bool
    enabled: bool
    hooks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "enabled": self.enabled,
            "hooks": self.hooks,
        }


def _reader(item: Any) -> str | None:
    if getattr(item, "base", None) is not None:
        return has("wrap")(item)
    return has("open")(item)


READS_BY_NAME = "register(item), named by item.name"
NAME_AND_ITEM = "register(name, item)"
#: The kinds of registered things, by the registry hook that fills each.
KINDS = {
    "register_dialects": Kind("dialect", True, instance_of(Dialect), READS_BY_NAME),
    "register_readers": Kind("reader", True, _reader, READS_BY_NAME),
    "register_strategies": Kind("strategy", True, has("decide"), READS_BY_NAME),
    "register_transports": Kind("transport", False, is_callable, NAME_AND_ITEM),
    "register_servers": Kind("server", False, is_callable, NAME_AND_ITEM),
    "register_templates": Kind("template", False, instance_of(Template, str), NAME_AND_ITEM),
    "register_fields": Kind("field", False, instance_of(Field, FieldFamily), NAME_AND_ITEM),
    "register_executors": Kind("executor", False, is_callable, NAME_AND_ITEM),
}


class Host:
    """The loaded plugins and the registries they filled."""

    def __init__(self, pm: pluggy.PluginManager, infos: list[PluginInfo]) -> None:
        self.pm = pm
        self.infos = infos

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def _registry(self, hook_name: str) -> Registry[Any]:
        return Registry(KINDS[hook_name]).collect(self.pm, hook_name)

    @cached_property
    def dialects(self) -> Registry[Dialect]:
        return self._registry("register_dialects")

    @cached_property
    def readers(self) -> Registry[ListReader]:
        return self._registry("register_readers")

    @cached_property
    def strategies(self) -> Registry[Strategy]:
        return self._registry("register_strategies")

    @cached_property
    def transports(self) -> Registry[TransportFactory]:
        return self._registry("register_transports")

    @cached_property
    def servers(self) -> Registry[Callable[[ServerRuntime], Server]]:
        return self._registry("register_servers")

    @cached_property
    def templates(self) -> Registry[Template | str]:
        return self._registry("register_templates")

    @cached_property
    def fields(self) -> Registry[Field | FieldFamily]:
        return self._registry("register_fields")

    @cached_property
    def executors(self) -> Registry[Callable[[Config], Executor]]:
        return self._registry("register_executors")


def _selected_third_party() -> set[str] | None:
    value = os.environ.get("LISTFERRY_LOAD_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _trace(pm: pluggy.PluginManager) -> None:
    def before(hook_name: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
        names = ", ".join(impl.plugin_name for impl in impls)
        print(f"listferry: hook {hook_name}({', '.join(kwargs)}) -> [{names}]", file=sys.stderr)

    def after(outcome: Any, hook_name: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
        print(f"listferry: hook {hook_name} done", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise ListferryError(f"plugin {name!r} is not valid: {exc}") from None


def load_host(disabled: tuple[str, ...] = (), modules: tuple[str, ...] = ()) -> Host:
    """Load the built-in and installed plugins, then the config's extra ``modules``.

    Plugins named in ``disabled`` are blocked. A hook implementation that matches no
    hook (a misspelled name) is an error, not a silent no-op.
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    selected = _selected_third_party()
    infos: list[PluginInfo] = []
    for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name):
        dist = ep.dist.name if ep.dist else None
        builtin = dist == HOST_DISTRIBUTION
        info = PluginInfo(
            name=ep.name,
            module=ep.value,
            distribution=dist,
            version=ep.dist.version if ep.dist else None,
            builtin=builtin,
            enabled=False,
        )
        infos.append(info)
        if ep.name in disabled or (
            not builtin and selected is not None and ep.name not in selected
        ):
            pm.set_blocked(ep.name)
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # any import error of a plugin package, said in one line
            raise ListferryError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from None
        _register(pm, plugin, ep.name)
        info.enabled = True
    for module_name in modules:
        if module_name in disabled:
            continue
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ConfigError(
                f"plugin module {module_name!r} cannot be imported: {exc}", key="plugins"
            ) from None
        if pm.is_registered(module):
            continue  # installed as a pack too: its entry point loaded it already
        _register(pm, module, module_name)
        infos.append(PluginInfo(module_name, module_name, None, None, False, True))
    unknown = set(disabled) - {info.name for info in infos}
    if unknown:
        raise ConfigError(f"unknown plugin(s): {', '.join(sorted(unknown))}", key="disable")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ListferryError(f"plugin {pm.get_name(exc.plugin)!r}: {exc}") from None
    for info in infos:
        if info.enabled:
            plugin = pm.get_plugin(info.name)
            info.hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
    if os.environ.get("LISTFERRY_TRACE_PLUGINS"):
        _trace(pm)
    host = Host(pm, infos)
    for hook_name in KINDS:  # a wrong registration is an error now, naming its plugin
        getattr(host, hook_name.removeprefix("register_"))
    return host
