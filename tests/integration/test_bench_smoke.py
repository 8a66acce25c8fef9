"""The benchmark's smoke run: all three comparators end to end on the embedded stack (no speed assertions)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loadtests.bench import main
from loadtests.report import PLOTS

pytestmark = pytest.mark.timeout(180)


def _positive(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_bench_smoke_writes_a_complete_report(tmp_path: Path, quick_bundle: Path) -> None:
    out = tmp_path / "bench"
    assert main(["--smoke", "--out", str(out), "--model-dir", str(quick_bundle)]) == 0

    for name in ("results.json", "report.md", *PLOTS):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    r = json.loads((out / "results.json").read_text())
    w = r["worker"]
    assert w["events"] == r["source"]["events"] > 0
    for value in (
        r["generator"]["rate"],
        w["events_per_s"],
        w["e2e_hist_ms"]["p50"],
        w["e2e_hist_ms"]["p99"],
        w["rescore_hist_ms"]["p50"],
        w["e2e_topic_generated_ms"]["p99"],
        r["ceiling"]["events_per_s"],
        r["naive"]["events_per_s"],
        r["ratio_worker_naive"],
        r["redis_memory"]["bytes_per_user"],
    ):
        assert _positive(value), value
    assert w["recs_records"] > 0 and w["reader_error"] is None
    assert r["ceiling"]["events"] == r["source"]["events"]
    assert r["gpu"].startswith("GPU path")
    assert "GPU path" in (out / "report.md").read_text()
