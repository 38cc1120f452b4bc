"""The one transport-neutral error type of pyserving, with canonical codes.

Every failure that crosses a layer boundary is a :class:`ServingError` carrying a
:class:`Code`. The codes are gRPC's canonical codes (same names, same numbers), so the
server maps them to a gRPC status one-to-one and to an HTTP status through one table
(``pyserving.server.status``). Nothing in this module imports gRPC or an HTTP library.

Hierarchy::

    Exception
    └── ServingError                 code: Code, message: str
        ├── CancelledError           CANCELLED
        ├── UnknownError             UNKNOWN
        ├── InvalidArgumentError     INVALID_ARGUMENT
        ├── DeadlineExceededError    DEADLINE_EXCEEDED
        ├── NotFoundError            NOT_FOUND
        ├── AlreadyExistsError       ALREADY_EXISTS
        ├── PermissionDeniedError    PERMISSION_DENIED
        ├── ResourceExhaustedError   RESOURCE_EXHAUSTED
        ├── FailedPreconditionError  FAILED_PRECONDITION
        ├── AbortedError             ABORTED
        ├── OutOfRangeError          OUT_OF_RANGE
        ├── UnimplementedError       UNIMPLEMENTED
        ├── InternalError            INTERNAL
        ├── UnavailableError         UNAVAILABLE
        ├── DataLossError            DATA_LOSS
        └── UnauthenticatedError     UNAUTHENTICATED

Lower-level exceptions (``OSError``, a framework's own errors) are translated into a
``ServingError`` at exactly one boundary, with ``raise ... from exc``; use
:func:`as_serving_error` there.
"""

from __future__ import annotations

import enum

__all__ = [
    "Code",
    "ServingError",
    "CancelledError",
    "UnknownError",
    "InvalidArgumentError",
    "DeadlineExceededError",
    "NotFoundError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "FailedPreconditionError",
    "AbortedError",
    "OutOfRangeError",
    "UnimplementedError",
    "InternalError",
    "UnavailableError",
    "DataLossError",
    "UnauthenticatedError",
    "as_serving_error",
]


class Code(enum.IntEnum):
    """Canonical status codes; values equal gRPC's ``StatusCode`` numbers."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ServingError(Exception):
    """A failure with a canonical code and a message worded for the user.

    Instances are immutable values: they may be stored in a servable's state and handed
    to many threads. ``str(err)`` is the message alone; ``repr`` adds the code.
    """

    code: Code = Code.UNKNOWN

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}: {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ServingError)
            and self.code == other.code
            and self.message == other.message
        )

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    @staticmethod
    def from_code(code: Code, message: str) -> ServingError:
        """The most specific subclass for ``code``."""
        cls = _BY_CODE.get(code)
        if cls is None:
            return ServingError(message, code)
        return cls(message)


class CancelledError(ServingError):
    code = Code.CANCELLED


class UnknownError(ServingError):
    code = Code.UNKNOWN


class InvalidArgumentError(ServingError):
    code = Code.INVALID_ARGUMENT


class DeadlineExceededError(ServingError):
    code = Code.DEADLINE_EXCEEDED


class NotFoundError(ServingError):
    code = Code.NOT_FOUND


class AlreadyExistsError(ServingError):
    code = Code.ALREADY_EXISTS


class PermissionDeniedError(ServingError):
    code = Code.PERMISSION_DENIED


class ResourceExhaustedError(ServingError):
    code = Code.RESOURCE_EXHAUSTED


class FailedPreconditionError(ServingError):
    code = Code.FAILED_PRECONDITION


class AbortedError(ServingError):
    code = Code.ABORTED


class OutOfRangeError(ServingError):
    code = Code.OUT_OF_RANGE


class UnimplementedError(ServingError):
    code = Code.UNIMPLEMENTED


class InternalError(ServingError):
    code = Code.INTERNAL


class UnavailableError(ServingError):
    code = Code.UNAVAILABLE


class DataLossError(ServingError):
    code = Code.DATA_LOSS


class UnauthenticatedError(ServingError):
    code = Code.UNAUTHENTICATED


_BY_CODE: dict[Code, type[ServingError]] = {
    cls.code: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}


def as_serving_error(exc: BaseException, context: str = "") -> ServingError:
    """Translate any exception into a ``ServingError`` (unchanged if it already is one).

    ``context`` is prefixed to the message ("Loading {name: m version: 1} failed: ...").
    ``FileNotFoundError`` becomes NOT_FOUND, ``PermissionError`` PERMISSION_DENIED,
    ``MemoryError`` RESOURCE_EXHAUSTED, ``ValueError``/``TypeError`` INVALID_ARGUMENT and
    anything else UNKNOWN. Callers keep the chain with ``raise ... from exc``.
    """
    if isinstance(exc, ServingError):
        if not context:
            return exc
        return ServingError.from_code(exc.code, f"{context}{exc.message}")
    text = str(exc) or type(exc).__name__
    message = f"{context}{type(exc).__name__}: {text}"
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(message)
    if isinstance(exc, PermissionError):
        return PermissionDeniedError(message)
    if isinstance(exc, MemoryError):
        return ResourceExhaustedError(message)
    if isinstance(exc, (ValueError, TypeError)):
        return InvalidArgumentError(message)
    return UnknownError(message)
