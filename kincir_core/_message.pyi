from collections.abc import Mapping
from typing import Any, Generic

from typing_extensions import TypeVar

#: The payload's type. A message built in the process carries whatever object it was given; a
#: subscriber with a typed codec hands out messages whose payload has the codec's type.
_P = TypeVar("_P", default=Any)
_Q = TypeVar("_Q")

class Message(Generic[_P]):
    """A message: any payload object, read-only str->str metadata and a uuid4 identifier."""

    @property
    def payload(self) -> _P: ...
    def __init__(self, payload: _P, metadata: Mapping[str, str] | None = None) -> None: ...
    @classmethod
    def new(cls, payload: _P) -> Message[_P]: ...
    @property
    def uuid(self) -> str: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...
    @property
    def topic(self) -> str | None: ...
    @property
    def sequence(self) -> int | None: ...
    @property
    def enqueued_at(self) -> int | None: ...
    def with_metadata(self, key: str, value: str) -> Message[_P]: ...
    def with_payload(self, payload: _Q) -> Message[_Q]: ...
    def __reduce__(self) -> tuple[Any, ...]: ...

def restore_message(
    payload: Any,
    meta: dict[str, str],
    ident: int,
    topic: str | None,
    sequence: int,
    enqueued_at: int,
    ordered: bool,
) -> Message: ...
