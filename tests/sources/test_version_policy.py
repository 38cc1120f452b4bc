import pytest

from pyserving.servable.errors import InvalidArgumentError
from pyserving.sources.version_policy import AllVersions, LatestVersions, SpecificVersions


def test_latest_picks_the_largest_versions_ascending():
    assert LatestVersions().select([3, 1, 10, 2]) == [10]
    assert LatestVersions(2).select([3, 1, 10, 2]) == [3, 10]
    assert LatestVersions(5).select([2, 1]) == [1, 2]
    assert LatestVersions(2).select([]) == []


def test_latest_below_one_is_treated_as_one():
    assert LatestVersions(0) == LatestVersions(1)
    assert LatestVersions(-3).num_versions == 1
    assert LatestVersions(0).select([4, 7]) == [7]


def test_all_picks_every_version_sorted_without_duplicates():
    assert AllVersions().select([5, 1, 5, 3]) == [1, 3, 5]
    assert AllVersions().select([]) == []


def test_specific_picks_the_requested_versions_present():
    policy = SpecificVersions((4, 2, 9))
    assert policy.versions == (2, 4, 9)
    assert policy.select([1, 2, 3, 4]) == [2, 4]
    assert policy.missing([1, 2, 3, 4]) == [9]
    assert SpecificVersions([3, 3]) == SpecificVersions((3,))
    assert SpecificVersions(()).select([1, 2]) == []


def test_policies_are_frozen_hashable_values():
    assert len({LatestVersions(1), LatestVersions(1), AllVersions(), SpecificVersions((1,))}) == 3
    with pytest.raises(AttributeError):
        LatestVersions(1).num_versions = 2  # type: ignore[misc]
    assert str(LatestVersions(2)) == "latest { num_versions: 2 }"
    assert str(SpecificVersions((1, 2))) == "specific { versions: [1, 2] }"


@pytest.mark.parametrize(
    "build",
    [
        lambda: LatestVersions("2"),  # type: ignore[arg-type]
        lambda: LatestVersions(True),  # type: ignore[arg-type]
        lambda: SpecificVersions((1, -2)),
        lambda: SpecificVersions(("1",)),  # type: ignore[arg-type]
        lambda: SpecificVersions("12"),  # type: ignore[arg-type]
    ],
)
def test_invalid_policies_are_rejected_with_the_parameter_named(build):
    with pytest.raises(InvalidArgumentError, match="num_versions|versions"):
        build()
