"""An already-completed awaitable, returned by calls that never wait.

``subscribe``, ``unsubscribe`` and ``close`` take effect when called; returning one of these lets
sync code call them plainly and async code ``await`` them, with no coroutine left un-awaited.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Completed"]


class Completed(Generic[T]):
    """The result of a call that already happened; awaiting it returns ``value`` at once."""

    __slots__ = ("_value",)
    __module__ = "kincir"

    def __init__(self, value: T) -> None:
        self._value = value

    def __await__(self) -> Generator[Any, None, T]:
        return self._value
        yield  # a generator function that finishes without suspending

    def result(self) -> T:
        """The call's result."""
        return self._value

    def done(self) -> bool:
        """Always True: the call has completed."""
        return True

    def __repr__(self) -> str:
        return f"<Completed {self._value!r}>"


DONE: Completed[None] = Completed(None)
