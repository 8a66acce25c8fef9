"""``python -m loadtests.gpu``: the CPU-only run writes a complete report; its pure figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from loadtests import gpu, gpu_report
from serving.scorer import CPU, CUDA


def _run(bundle: Path, out: Path, *extra: str) -> dict:
    argv = ["--bundle", str(bundle), "--batches", "1,3", "--candidates", "7", "--repeats", "5", "--warmup", "1"]
    assert gpu.main([*argv, "--cell-seconds", "5", "--no-progress", "--out", str(out), *extra]) == 0
    return json.loads((out / "results.json").read_text())


def test_cpu_only_run_writes_a_complete_report(quick_bundle: Path, tmp_path: Path) -> None:
    r = _run(quick_bundle, tmp_path, "--mixed", "4")
    report = (tmp_path / "report.md").read_text()
    assert r["format"] == "segue-gpu-bench" and r["version"] == 1 and r["candidates"] == 7
    assert r["device"]["onnxruntime"] == ort.__version__ and f"onnxruntime {ort.__version__}" in report
    cpu_rows = [row for row in r["rows"] if row["variant"] == "cpu-1t"]
    assert [row["batch"] for row in cpu_rows] == [1, 3]
    for row in cpu_rows:
        assert row["calls"] == 5 and 0 < row["median_ms"] <= row["p95_ms"] and math.isfinite(row["p95_ms"])
        assert row["users_per_s"] == pytest.approx(row["batch"] * 1000 / row["median_ms"])
        assert row["scores_per_s"] == pytest.approx(row["users_per_s"] * 7)
        assert row["max_abs_diff"] == 0.0 and row["top_same"] == 1.0
        assert f"| {row['batch']} | {row['median_ms']:.3f} ({row['p95_ms']:.3f})" in report
    mixed = {row["variant"]: row for row in r["mixed"]["rows"]}
    assert r["mixed"]["max_users"] == 4 and mixed["cpu-1t"]["calls"] == 5
    assert 1 <= mixed["cpu-1t"]["mean_users"] <= 4 and mixed["cpu-1t"]["users_per_s"] > 0
    assert "## Mixed batch sizes: 1..4 users per call" in report and "| cpu-1t | " in report
    assert r["fallback"]["ok"] and r["fallback"]["provider"] == CPU  # no GPU visible to the child
    assert "CUDA_VISIBLE_DEVICES=''" in report and "provider in use CPUExecutionProvider" in report
    assert (tmp_path / "gpu.png").stat().st_size > 1000 and "![" in report
    cuda = [r["variants"][n] for n in ("cuda", "cuda+iobinding", "cuda-resident")]
    if r["gpu_measured"]:  # a machine with a usable CUDA device
        assert all(v["provider"] == CUDA for v in cuda) and "**GPU path measured**" in report
    else:
        assert r["gpu_reason"] and f"**GPU path not measured: {r['gpu_reason']}**" in report
        assert not any(v["measured"] for v in cuda) and {row["variant"] for row in r["rows"]} == {"cpu-1t"}
        assert "| cuda | device=cuda | CPUExecutionProvider | 1 | no | no: " in report


def test_render_rewrites_report_and_plot_from_results(quick_bundle: Path, tmp_path: Path) -> None:
    r = _run(quick_bundle, tmp_path, "--no-plot", "--no-fallback-check")
    assert r["mixed"] is None and r["fallback"] is None
    assert not (tmp_path / "gpu.png").exists() and "## Mixed" not in (tmp_path / "report.md").read_text()
    (tmp_path / "report.md").unlink()
    assert gpu.main(["--render", str(tmp_path)]) == 0
    assert (tmp_path / "gpu.png").is_file() and "## Parity against cpu-1t" in (tmp_path / "report.md").read_text()


def test_render_refuses_what_is_not_a_result(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        gpu_report.read(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"format": "segue-bench"}))
    with pytest.raises(ValueError, match="not a segue-gpu-bench v1"):
        gpu_report.read(tmp_path)


def test_missing_bundle_says_how_to_make_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu.main(["--bundle", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "make model" in capsys.readouterr().err


def test_inputs_fit_signature_v1() -> None:
    items = np.random.default_rng(1).normal(size=(50, 16)).astype(np.float32)
    pos, neg, taste, context, cands = gpu.make_inputs(items, 4, 9, np.random.default_rng(2))
    assert [a.shape for a in (pos, neg, taste, context, cands)] == [(4, 16)] * 3 + [(4, 8), (4, 9, 16)]
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in (pos, neg, taste, context, cands))
    np.testing.assert_allclose(np.linalg.norm(taste, axis=1), 1.0, rtol=1e-5)
    assert np.isin(cands.reshape(-1, 16), items).all(axis=1).all()  # candidates are catalog items


def test_summary_and_parity_figures() -> None:
    s = gpu.summarise(np.array([1.0, 2.0, 3.0, 4.0, 100.0]), batch=10, k=20)
    assert s["median_ms"] == 3.0 and s["min_ms"] == 1.0 and s["mean_ms"] == 22.0 and s["calls"] == 5
    assert s["users_per_s"] == pytest.approx(10 / 0.003) and s["scores_per_s"] == pytest.approx(200 / 0.003)
    ref = np.array([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    moved = ref.copy()
    moved[0, 4] = 4.5  # user 0's worst item enters its top 2
    p = gpu.parity(moved, ref, top_n=2)
    assert p == {"max_abs_diff": 3.5, "top_same": 0.5}
    assert gpu.parity(ref + 1e-7, ref, top_n=2)["top_same"] == 1.0


def test_timing_stops_after_its_budget_but_not_before_the_minimum() -> None:
    ticks = iter(np.arange(0.0, 1000.0, 0.5))  # every call takes 0.5 s of this clock
    ms = gpu.time_calls(lambda: None, repeats=100, warmup=2, max_seconds=3.0, min_calls=4, clock=lambda: next(ticks))
    assert len(ms) == 6 and np.all(ms == 500.0)
    ticks = iter(np.arange(0.0, 1000.0, 0.5))
    assert len(gpu.time_calls(lambda: None, 10, 0, max_seconds=0.1, min_calls=4, clock=lambda: next(ticks))) == 4


def test_reason_names_a_missing_cuda_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert "has no CUDAExecutionProvider (install onnxruntime-gpu)" in gpu.why_not_cuda(None, None)
    assert "could not be loaded with device=cuda: boom" in gpu.why_not_cuda(None, "boom")


@pytest.mark.parametrize("bad", ["0,8", "a", ""])
def test_batch_list_is_checked(bad: str) -> None:
    with pytest.raises(SystemExit):
        gpu.parse(["--batches", bad])
