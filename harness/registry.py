"""A small generic registry: a `register` decorator plus `importlib.metadata` entry-point discovery.

Built-in tasks and methods register exactly like third-party ones: this project's own pyproject
declares them in the entry-point groups `harness.tasks` and `harness.methods`, so the core never
imports `tasks/` or `methods/` by name. An entry point may name a module (importing it runs its
`@register` decorators) or an object (registered under the entry point's name).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Generic, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        existing = self._entries.get(name)
        if existing is not None and existing is not obj:
            # Re-importing the same module (e.g. two entry points naming it) is fine; two
            # different objects under one name is a plugin conflict the user must resolve.
            if getattr(existing, "__qualname__", None) != getattr(obj, "__qualname__", None):
                raise HarnessError(f"{self.kind} {name!r} is registered twice ({existing!r} and {obj!r})")
        if isinstance(obj, type) and "name" not in vars(obj):
            obj.name = name  # a plugin states its name once, where it registers (as lm-eval's registries do)
        self._entries[name] = obj

    def discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for ep in entry_points(group=self.group):
            loaded = ep.load()
            if ep.name not in self._entries and not _is_module(loaded):
                self.add(ep.name, loaded)

    def get(self, name: str) -> T:
        self.discover()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise HarnessError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]


def _is_module(obj: object) -> bool:
    return type(obj).__name__ == "module"
