"""Routes: a name clients call like a model, whose requests the server spreads over models.

The vocabulary of server-side A/B, canary and audience routing (``routing.proto``'s
messages as plain frozen dataclasses, so the core needs no protobuf)::

    Route(name="recommender", segment_key="x-user-id",
          arms=(Arm("control", "rec_a", weight=90),
                Arm("treatment", "rec_b", weight=10, version_label="canary")),
          rules=(HeaderRule(header="x-country", equals="DE", arm="treatment"),),
          shadow=Shadow(model_name="rec_c", percent=100))

Meaning (the :class:`~pyserving.manager.router.Router` implements it):

* **rules** are tried in order; the first whose header (compared case-insensitively by
  name, exactly by value) equals its value picks its arm;
* otherwise, with a ``segment_key`` whose header is present, the arm is a stable function of
  the header's value (weighted rendezvous hashing: the same value lands in the same arm
  while the weights stay the same, and a weight change moves only the values that must
  move, to or from the arms whose weights changed);
* otherwise the arm is drawn at random in proportion to the weights. An arm of weight 0 is
  reached only through a rule.
* **shadow** mirrors ``percent`` % of the route's requests to another model after the main
  answer; its outcome is counted, never returned.

An arm or a shadow names a model and optionally a ``version`` or a ``version_label`` (not
both); neither means the model's latest version.

Validation: the constructors check each object on its own (:class:`InvalidArgumentError`
naming the route, the field and the value); :func:`validate_routes` checks a whole set
against the models that exist (duplicate route names, a route named like a model, an arm
or shadow naming a missing model: the error names the route and the model). All of them
are pure functions of their arguments, safe from any thread.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Collection, Sequence

from pyserving.servable.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from pyserving.servable.ids import ServableRequest

__all__ = ["Arm", "HeaderRule", "Shadow", "Route", "validate_routes"]

# A route name appears in REST paths (/v1/models/{name}:predict), like a model name.
_NAME_RE = re.compile(r"[^/:\s]+")


def _check_target(where: str, model_name: str, version: int | None, version_label: str | None) -> None:
    if not isinstance(model_name, str) or not model_name:
        raise InvalidArgumentError(f"{where}: model_name must be a non-empty string, got {model_name!r}")
    if version is not None and version_label:
        raise InvalidArgumentError(
            f"{where}: set at most one of version ({version}) and version_label ({version_label!r})"
        )
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
        raise InvalidArgumentError(f"{where}: version must be an int >= 0, got {version!r}")


def _target_request(model_name: str, version: int | None, version_label: str | None) -> ServableRequest:
    if version is not None:
        return ServableRequest.specific(model_name, version)
    if version_label:
        return ServableRequest.label(model_name, version_label)
    return ServableRequest.latest(model_name)


@dataclass(frozen=True, slots=True)
class Arm:
    """One destination of a route: a model (and version or label) and its weight."""

    name: str
    model_name: str
    weight: float = 1.0
    version: int | None = None
    version_label: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgumentError(f"arm name must be a non-empty string, got {self.name!r}")
        where = f"arm {self.name!r}"
        _check_target(where, self.model_name, self.version, self.version_label)
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise InvalidArgumentError(f"{where}: weight must be a finite number >= 0, got {weight!r}")

    def request(self) -> ServableRequest:
        """The servable request this arm sends: Specific, Label, or Latest."""
        return _target_request(self.model_name, self.version, self.version_label)


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """Audience segmentation: requests whose ``header`` equals ``equals`` go to ``arm``.

    ``header`` is a REST header or gRPC metadata key, matched case-insensitively; the value
    is compared exactly.
    """

    header: str
    equals: str
    arm: str

    def __post_init__(self) -> None:
        if not isinstance(self.header, str) or not self.header:
            raise InvalidArgumentError(f"rule header must be a non-empty string, got {self.header!r}")
        if not isinstance(self.equals, str):
            raise InvalidArgumentError(f"rule on header {self.header!r}: equals must be a string, got {self.equals!r}")
        if not isinstance(self.arm, str) or not self.arm:
            raise InvalidArgumentError(f"rule on header {self.header!r}: arm must name an arm, got {self.arm!r}")


@dataclass(frozen=True, slots=True)
class Shadow:
    """Mirror ``percent`` % of a route's requests to another model, after the main answer."""

    model_name: str
    percent: float = 100.0
    version: int | None = None
    version_label: str | None = None

    def __post_init__(self) -> None:
        _check_target("shadow", self.model_name, self.version, self.version_label)
        p = self.percent
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 <= p <= 100:
            raise InvalidArgumentError(f"shadow of model {self.model_name!r}: percent must be in [0, 100], got {p!r}")

    def request(self) -> ServableRequest:
        return _target_request(self.model_name, self.version, self.version_label)


@dataclass(frozen=True, slots=True)
class Route:
    """A name clients call like a model; see the module docstring for its semantics."""

    name: str
    arms: tuple[Arm, ...]
    segment_key: str = ""
    rules: tuple[HeaderRule, ...] = ()
    shadow: Shadow | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise InvalidArgumentError(
                f"route name must be non-empty without '/', ':' or spaces, got {self.name!r}"
            )
        # Accept lists from callers; store tuples so a Route stays hashable and immutable.
        object.__setattr__(self, "arms", tuple(self.arms))
        object.__setattr__(self, "rules", tuple(self.rules))
        if not self.arms:
            raise InvalidArgumentError(f"route {self.name!r} has no arms")
        names = [arm.name for arm in self.arms]
        for arm in self.arms:
            if names.count(arm.name) > 1:
                raise InvalidArgumentError(f"route {self.name!r} names arm {arm.name!r} more than once")
        if sum(arm.weight for arm in self.arms) <= 0:
            raise InvalidArgumentError(f"route {self.name!r}: the arms' weights must add up to more than 0")
        for rule in self.rules:
            if rule.arm not in names:
                raise InvalidArgumentError(
                    f"route {self.name!r}: rule on header {rule.header!r} names arm {rule.arm!r}, "
                    f"which the route does not have (arms: {', '.join(names)})"
                )
        if not isinstance(self.segment_key, str):
            raise InvalidArgumentError(f"route {self.name!r}: segment_key must be a string")

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise NotFoundError(f"route {self.name!r} has no arm {name!r}")

    def model_names(self) -> set[str]:
        """Every model this route sends requests to (arms and shadow)."""
        names = {arm.model_name for arm in self.arms}
        if self.shadow is not None:
            names.add(self.shadow.model_name)
        return names


def validate_routes(routes: Sequence[Route], model_names: Collection[str]) -> None:
    """Check a whole route set against the models that exist; raise on the first problem.

    * two routes with one name: :class:`InvalidArgumentError`;
    * a route named like a model: :class:`AlreadyExistsError` naming both;
    * an arm or shadow naming a model not in ``model_names``: :class:`NotFoundError`
      naming the route, the arm (or "shadow") and the model.
    """
    seen: set[str] = set()
    for route in routes:
        if route.name in seen:
            raise InvalidArgumentError(f"route {route.name!r} is defined more than once")
        seen.add(route.name)
        if route.name in model_names:
            raise AlreadyExistsError(
                f"route {route.name!r} has the name of a model; a route and a model may not share a name"
            )
        for arm in route.arms:
            if arm.model_name not in model_names:
                raise NotFoundError(
                    f"route {route.name!r}: arm {arm.name!r} names model {arm.model_name!r}, which is not served"
                )
        if route.shadow is not None and route.shadow.model_name not in model_names:
            raise NotFoundError(
                f"route {route.name!r}: shadow names model {route.shadow.model_name!r}, which is not served"
            )
