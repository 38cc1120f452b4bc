""":class:`ServableData`: a version's id together with either a value or an error.

Sources and source adapters send ``ServableData`` so that a failure to produce a
version's data (an unreadable directory, an unknown platform) travels down the pipeline
*as data*. The manager records such an error as that version's END state; it never
disturbs other versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from pyserving.servable.errors import InternalError, ServingError
from pyserving.servable.ids import ServableId

__all__ = ["ServableData"]

T = TypeVar("T")
U = TypeVar("U")

_NO_VALUE = object()


@dataclass(frozen=True, slots=True)
class ServableData(Generic[T]):
    """``id`` plus exactly one of a value or a :class:`ServingError`.

    Build with :meth:`of` or :meth:`failed`. Reading :attr:`value` of a failed item
    raises its error.
    """

    id: ServableId
    _value: object = _NO_VALUE
    error: ServingError | None = None

    def __post_init__(self) -> None:
        if (self._value is _NO_VALUE) == (self.error is None):
            raise InternalError("ServableData holds exactly one of a value or an error")

    @classmethod
    def of(cls, servable_id: ServableId, value: T) -> ServableData[T]:
        return cls(servable_id, value)

    @classmethod
    def failed(cls, servable_id: ServableId, error: ServingError) -> ServableData[T]:
        return cls(servable_id, error=error)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def value(self) -> T:
        if self.error is not None:
            raise self.error
        return self._value  # type: ignore[return-value]

    def map(self, convert: Callable[[T], U]) -> ServableData[U]:
        """Apply ``convert`` to the value; errors pass through unchanged.

        An exception raised by ``convert`` becomes the new item's error.
        """
        from pyserving.servable.errors import as_serving_error

        if self.error is not None:
            return ServableData.failed(self.id, self.error)
        try:
            return ServableData.of(self.id, convert(self._value))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - becomes data by design
            return ServableData.failed(self.id, as_serving_error(exc))

    def __repr__(self) -> str:
        if self.error is not None:
            return f"ServableData({self.id}, error={self.error!r})"
        return f"ServableData({self.id}, {self._value!r})"
