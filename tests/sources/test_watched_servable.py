"""WatchedServable validation and check_servables."""

from __future__ import annotations

import os

import pytest

from pyserving.servable.errors import InvalidArgumentError
from pyserving.sources import WatchedServable
from pyserving.sources.watched_servable import check_servables


def test_base_path_is_made_absolute():
    assert WatchedServable("m", "models/m").base_path == os.path.abspath("models/m")


def test_check_servables_keeps_order_and_rejects_duplicates_and_other_objects():
    a, b = WatchedServable("a", "/a"), WatchedServable("b", "/b")
    assert list(check_servables([b, a])) == ["b", "a"]
    with pytest.raises(InvalidArgumentError, match="unique"):
        check_servables([a, WatchedServable("a", "/other")])
    with pytest.raises(InvalidArgumentError, match="WatchedServable"):
        check_servables(["a"])  # type: ignore[list-item]
