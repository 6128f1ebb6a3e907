"""The base of all typed message bodies and the type -> body class registry."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import fields
from typing import Any, ClassVar, TypeVar

from ._wire import Reader
from .catalogue import MessageType

B = TypeVar("B", bound="Body")

BODY_CLASSES: dict[MessageType, type[Body]] = {}


def register(msg_type: MessageType) -> Callable[[type[B]], type[B]]:
    """Class decorator: bind a body class to its message type (one class per type)."""

    def bind(cls: type[B]) -> type[B]:
        if msg_type in BODY_CLASSES:
            raise RuntimeError(f"{msg_type.name} registered twice")
        cls.TYPE = msg_type
        BODY_CLASSES[msg_type] = cls
        return cls

    return bind


class Body:
    """A message body: a frozen dataclass that validates itself on construction.

    Validation raises MalformedBodyError, so a body built by decode() from hostile bytes fails
    the same way as one built by the application with bad values.
    """

    TYPE: ClassVar[MessageType]

    def pack(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def read(cls: type[B], r: Reader) -> B:
        raise NotImplementedError

    @classmethod
    def unpack(cls: type[B], data: bytes) -> B:
        r = Reader(data, cls.TYPE.name)
        body = cls.read(r)
        r.end()
        return body

    def _coerce(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        # Secret fields (repr=False) are shown as redacted; long payloads only by length.
        parts = []
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if not f.repr:
                parts.append(f"{f.name}=<redacted>")
            elif isinstance(v, bytes) and len(v) > 32:
                parts.append(f"{f.name}=<{len(v)} bytes>")
            elif isinstance(v, enum.Flag):
                parts.append(f"{f.name}={v.name or '0'}" if v.value else f"{f.name}=0")
            elif isinstance(v, enum.Enum):
                parts.append(f"{f.name}={v.name}")
            else:
                parts.append(f"{f.name}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    __str__ = __repr__


class EmptyBody(Body):
    """A message whose header says everything: zero-length body."""

    def pack(self) -> bytes:
        return b""

    @classmethod
    def read(cls: type[B], r: Reader) -> B:
        return cls()
