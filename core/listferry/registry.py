"""Registries filled through ``register(...)`` callbacks, one per kind of named thing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import pluggy

from listferry.errors import ConfigError, ListferryError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named things that plugins supplied, and which plugin supplied each.

    ``key`` extracts the name from what ``register`` receives: one argument (an object
    with ``.name``) or two (``register(name, thing)``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def collect(self, pm: pluggy.PluginManager, hook_name: str) -> Registry[T]:
        """Call the hook on each plugin with a ``register`` bound to that plugin."""
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            impl.function(register=self._register_for(impl.plugin_name))
        return self

    def _register_for(self, plugin: str) -> Callable[..., None]:
        def register(*args: Any) -> None:
            if len(args) == 1:
                name, item = getattr(args[0], "name", None), args[0]
            elif len(args) == 2:
                name, item = args
            else:
                raise ListferryError(
                    f"plugin {plugin!r} called register() for a {self.kind} with "
                    f"{len(args)} arguments; expected register(item) or register(name, item)"
                )
            if not isinstance(name, str) or not name:
                raise ListferryError(f"plugin {plugin!r} registered a {self.kind} with no name")
            if name in self._items:
                raise ListferryError(
                    f"{self.kind} {name!r} is registered twice: by plugin "
                    f"{self._owners[name]!r} and by plugin {plugin!r}"
                )
            self._items[name] = item
            self._owners[name] = plugin

        return register

    def get(self, name: str) -> T:
        """The item ``name``; an unknown name is a :class:`ConfigError` (the config or the
        command line names something no plugin supplied)."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
