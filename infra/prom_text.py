"""Reading Prometheus exposition text: sample values and histogram quantiles (as PromQL computes them)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called ``name`` (full sample name, e.g. ``segue_events_total``) with its labels."""
    return [
        (dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def total(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for lab, v in samples(text, name) if all(lab.get(k) == x for k, x in labels.items()))


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The ``q`` quantile from cumulative ``(upper_bound, count)`` buckets, interpolated linearly inside the
    bucket as PromQL's ``histogram_quantile`` does. NaN when there are no observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return math.nan
    rank = q * ordered[-1][1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            width = count - prev_count
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / width if width > 0 else 0.0)
        prev_bound, prev_count = bound, count
    return prev_bound


def quantile_from_text(text: str, histogram: str, q: float) -> float:
    """The ``q`` quantile of histogram ``histogram`` (base name, without ``_bucket``) in exposition text."""
    buckets = [(float(lab["le"]), v) for lab, v in samples(text, histogram + "_bucket")]
    return histogram_quantile(q, buckets)
