"""Registries filled through ``register(...)`` callbacks, one per kind of named thing.

Each kind has one call shape: ``register(item)`` for things that carry their own
``name`` (dialects, readers, strategies), ``register(name, item)`` for the rest. What a
plugin registers is checked when it calls ``register``, so a wrong item is an error
naming the plugin at start-up, not a surprise on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pluggy

from listferry.errors import ConfigError, ListferryError

T = TypeVar("T")


@dataclass(frozen=True)
class Kind:
    """A kind of registered thing: its word, its call shape, and what an item must be.

    ``named``: registered as ``register(item)`` and named by ``item.name``; otherwise
    ``register(name, item)``. ``check(item)`` says what is wrong with an item, or None.
    """

    word: str
    named: bool
    check: Callable[[Any], str | None]
    shape: str


class Registry(Generic[T]):
    """Named things that plugins supplied, and which plugin supplied each."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def collect(self, pm: pluggy.PluginManager, hook_name: str) -> Registry[T]:
        """Call the hook through the plugin manager, plugin by plugin, each with a
        ``register`` that knows it (so ``LISTFERRY_TRACE_PLUGINS`` shows every call)."""
        hook = getattr(pm.hook, hook_name)
        plugins = [impl.plugin for impl in hook.get_hookimpls()]
        for plugin in plugins:
            alone = pm.subset_hook_caller(hook_name, [p for p in plugins if p is not plugin])
            alone(register=self._register_for(pm.get_name(plugin)))
        return self

    def _register_for(self, plugin: str) -> Callable[..., None]:
        kind = self.kind

        def register(*args: Any) -> None:
            if len(args) != (1 if kind.named else 2):
                raise ListferryError(
                    f"plugin {plugin!r} called register() for a {kind.word} with "
                    f"{len(args)} argument(s); {kind.word}s are registered as {kind.shape}"
                )
            name, item = (getattr(args[0], "name", None), args[0]) if kind.named else args
            if not isinstance(name, str) or not name:
                raise ListferryError(f"plugin {plugin!r} registered a {kind.word} with no name")
            problem = kind.check(item)
            if problem:
                raise ListferryError(
                    f"plugin {plugin!r} registered {kind.word} {name!r}: {problem}"
                )
            if name in self._items:
                raise ListferryError(
                    f"{kind.word} {name!r} is registered twice: by plugin "
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
            raise ConfigError(f"unknown {self.kind.word} {name!r} (known: {known})") from None

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))


def instance_of(*types: type) -> Callable[[Any], str | None]:
    """A check: the item is one of ``types``."""
    wanted = " or ".join(t.__name__ for t in types)

    def check(item: Any) -> str | None:
        return None if isinstance(item, types) else f"expected a {wanted}, got {item!r:.80}"

    return check


def has(*members: str) -> Callable[[Any], str | None]:
    """A check: the item has each of ``members`` (the methods of its protocol)."""

    def check(item: Any) -> str | None:
        missing = [m for m in members if not hasattr(item, m)]
        return f"it has no {', '.join(missing)}" if missing else None

    return check


def is_callable(item: Any) -> str | None:
    """A check: the item is a factory (a class or a function)."""
    return None if callable(item) else f"expected a factory (a class or function), got {item!r:.80}"
