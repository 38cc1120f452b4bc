"""Scraping a server's Prometheus page in tests: fetch it, parse it, look values up.

:func:`scrape` fetches ``GET <path>`` from the REST port and parses the body with
prometheus-client's own text parser (``text_string_to_metric_families``), so a page the
parser rejects fails the test. :class:`Page` keeps the raw text too: the parser renames the
samples of a counter ``<name>_total`` (its internal OpenMetrics form), so whether a sample
is written under TF Serving's exact name (``:tensorflow:serving:request_count{...}``, no
``_total``) can only be seen in the text (:meth:`Page.sample_lines`).

Lookups match labels as a subset: ``page.value("pyserving_requests", model="m")`` sums every
sample of that family whose ``model`` label is ``"m"``, whatever its other labels. A value
that is absent reads 0.0, so a difference of two scrapes (:meth:`Page.delta`) counts what
happened in between also for a label set seen for the first time.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Page", "scrape", "get_status"]

#: Sample suffix a bare lookup reads, by family type (the parser's names, see the module docstring).
_DEFAULT_SUFFIX = {"counter": "_total", "histogram": "_count", "summary": "_count"}


@dataclass(frozen=True)
class Page:
    """One scrape: the body, its ``Content-Type`` and the parsed families by name."""

    text: str
    content_type: str
    families: Mapping[str, Any]

    def family(self, name: str) -> Any:
        """The family called ``name`` (a ``prometheus_client`` ``Metric``); fails naming the others."""
        if name not in self.families:
            raise AssertionError(f"no metric family {name!r} on the page; families: {sorted(self.families)}")
        return self.families[name]

    def samples(self, name: str, suffix: str | None = None, **labels: str) -> list[Any]:
        """Samples of family ``name`` called ``name + suffix`` whose labels include ``labels``.

        ``suffix`` None: ``_total`` for a counter, ``_count`` for a histogram or summary,
        nothing for a gauge."""
        family = self.families.get(name)
        if family is None:
            return []
        wanted = name + (_DEFAULT_SUFFIX.get(family.type, "") if suffix is None else suffix)
        return [s for s in family.samples
                if s.name == wanted and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, suffix: str | None = None, **labels: str) -> float:
        """The sum of :meth:`samples` (0.0 when there is none)."""
        return float(sum(s.value for s in self.samples(name, suffix, **labels)))

    def delta(self, before: "Page", name: str, suffix: str | None = None, **labels: str) -> float:
        """How much :meth:`value` grew since the scrape ``before``."""
        return self.value(name, suffix, **labels) - before.value(name, suffix, **labels)

    def buckets(self, name: str, **labels: str) -> list[tuple[str, float]]:
        """``(le, cumulative count)`` of the one histogram series of ``name`` matching ``labels``,
        in page order; fails when the labels match several series or none."""
        found = self.samples(name, "_bucket", **labels)
        series = {tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")) for s in found}
        if len(series) != 1:
            raise AssertionError(f"{name}{labels} matches {len(series)} histogram series: {sorted(series)}")
        return [(s.labels["le"], s.value) for s in found]

    def sample_lines(self, prefix: str) -> list[str]:
        """The raw lines of the page that start with ``prefix`` (exact names on the wire)."""
        return [line for line in self.text.splitlines() if line.startswith(prefix)]


def get_status(port: int, path: str, timeout_s: float = 30.0) -> tuple[int, str, bytes]:
    """``GET path`` on the REST port: (HTTP status, Content-Type, body); errors are answers too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def scrape(port: int, path: str = "/monitoring/prometheus/metrics", timeout_s: float = 30.0) -> Page:
    """Fetch and parse the page; fails with the answer when it is not a 200."""
    status, content_type, body = get_status(port, path, timeout_s)
    if status != 200:
        raise AssertionError(f"GET {path} answered {status}: {body[:300]!r}")
    text = body.decode("utf-8")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    return Page(text, content_type, families)
