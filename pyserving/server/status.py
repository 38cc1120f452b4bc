"""The one place where pyserving errors become wire statuses: gRPC codes and HTTP statuses.

gRPC: a :class:`ServingError`'s code is the gRPC code (same numbers); messages longer than
1024 characters are cut and suffixed ``...TRUNCATED`` as TF Serving does. REST: TF Serving's
table (``http_server.cc``), and REST messages are not truncated.
Any other exception reaching a server is a bug: it is reported as INTERNAL with its type and
message, and logged with its traceback by the caller.
"""

from __future__ import annotations

from pyserving.servable.errors import Code, InternalError, ServingError

__all__ = ["HTTP_STATUS", "http_status", "grpc_message", "to_serving_error", "MAX_GRPC_MESSAGE_CHARS"]

MAX_GRPC_MESSAGE_CHARS = 1024

HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def to_serving_error(exc: BaseException) -> ServingError:
    """``exc`` itself if it is a ServingError, else INTERNAL naming the exception."""
    if isinstance(exc, ServingError):
        return exc
    return InternalError(f"{type(exc).__name__}: {exc}")


def http_status(code: Code) -> int:
    return HTTP_STATUS.get(code, 500)


def grpc_message(message: str) -> str:
    if len(message) > MAX_GRPC_MESSAGE_CHARS:
        return message[:MAX_GRPC_MESSAGE_CHARS] + "...TRUNCATED"
    return message
