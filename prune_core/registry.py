"""``Registry``: named extension points (criteria, allocations) that users add to from outside.

>>> shapes = Registry("shape", "register_shape")
>>> shapes.register("square", lambda side: side * side)
>>> shapes.get("square")(3)
9
>>> shapes.get("circle")
Traceback (most recent call last):
...
ValueError: shape 'circle' is not supported; use one of ('square',) or add one with register_shape
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Values by name. ``kind`` names the argument that selects one and ``how`` the function that
    registers more, in error messages."""

    def __init__(self, kind: str, how: str) -> None:
        self.kind, self.how = kind, how
        self._entries: dict[str, T] = {}

    def register(self, name: str, value: T, *, replace: bool = False) -> None:
        """Add ``value`` as ``name``; an existing name is refused unless ``replace=True``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass replace=True to replace it")
        self._entries[name] = value

    def unregister(self, name: str) -> None:
        """Remove ``name`` (nothing happens if it is not registered)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The value registered as ``name``; ValueError naming the registered ones otherwise."""
        self.check(name)
        return self._entries[name]

    def check(self, name: object) -> None:
        """Raise ValueError unless ``name`` is registered."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(
                f"{self.kind} {name!r} is not supported; use one of {tuple(self.names())} or add one with {self.how}"
            )

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
