import math

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from infra.prom_text import histogram_quantile, quantile_from_text, total


def test_quantile_interpolates_inside_the_bucket():
    buckets = [(0.01, 50.0), (0.02, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == 0.01
    assert abs(histogram_quantile(0.75, buckets) - 0.015) < 1e-12
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))


def test_quantile_from_a_real_registry():
    reg = CollectorRegistry()
    h = Histogram("lat_seconds", "x", buckets=(0.005, 0.01, 0.05), registry=reg)
    for v in [0.001] * 90 + [0.03] * 10:
        h.observe(v)
    text = generate_latest(reg).decode()
    assert quantile_from_text(text, "lat_seconds", 0.5) <= 0.005
    assert 0.01 < quantile_from_text(text, "lat_seconds", 0.95) <= 0.05
    assert total(text, "lat_seconds_count") == 100
