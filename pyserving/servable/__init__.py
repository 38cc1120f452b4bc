"""The vocabulary every other layer speaks: ids, requests, states, data, handles, errors."""

from pyserving.servable.data import ServableData
from pyserving.servable.errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    Code,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ServingError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    as_serving_error,
)
from pyserving.servable.event_bus import EventBus, Subscription
from pyserving.servable.handle import ServableHandle
from pyserving.servable.ids import RequestKind, ServableId, ServableRequest
from pyserving.servable.state import LEGAL_TRANSITIONS, ManagerState, ServableState

__all__ = [
    "ServableId",
    "ServableRequest",
    "RequestKind",
    "ServableData",
    "ServableHandle",
    "ServableState",
    "ManagerState",
    "LEGAL_TRANSITIONS",
    "EventBus",
    "Subscription",
    "AbortedError",
    "AlreadyExistsError",
    "CancelledError",
    "Code",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "ServingError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "as_serving_error",
]
