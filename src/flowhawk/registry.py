"""Explicit registration of components by exact name.

Sources, detectors and sinks each have one :class:`Registry`. Names are exact;
an unknown or duplicate name is an error at start, never a silent fallback.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from flowhawk.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name -> component mapping that refuses duplicates and unknowns."""

    def __init__(self, kind: str, items: Iterable[tuple[str, T]] = ()):
        self.kind = kind
        self._items: dict[str, T] = {}
        for name, item in items:
            self.register(name, item)

    def register(self, name: str, item: T) -> None:
        if name in self._items:
            raise RegistryError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self._items) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(self._items.items())

    def __len__(self) -> int:
        return len(self._items)
