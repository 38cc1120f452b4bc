"""The vocabulary every other layer speaks: ids, requests, states, data, handles, errors."""

from pyserving.servable.data import ServableData
from pyserving.servable.errors import *  # noqa: F401,F403 - the error hierarchy is public
from pyserving.servable.errors import __all__ as _errors_all
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
    *_errors_all,
]
