"""A small offline evaluation on the real listening histories in ../shared/data (skipped where absent).

Nothing from the data is written into the repository: the report goes to pytest's temp directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "spotify-personal-streaming-history"

pytestmark = pytest.mark.shared_data


@pytest.fixture
def data_dir() -> Path:
    if not (DATA / "events_part00.csv.gz").is_file():
        reason = f"shared data not found at {DATA.resolve()}"
        print(reason)
        pytest.skip(reason)
    return DATA


def test_small_evaluation_on_real_data(data_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from models_onnx.evaluate import main
    from serving.scorer import OnnxScorer

    out = tmp_path / "report"
    args = ["--data", str(data_dir), "--out", str(out), "--max-users", "12", "--positions", "1000"]
    args += ["--gru-epochs", "0.1", "--segue-epochs", "1", "--candidates", "200", "--history", "100"]
    args += ["--segue-max-train", "20000", "--bootstrap", "100", "--no-progress"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    for mode in ("time", "users"):
        fold = summary["folds"][mode]
        assert fold["n_positions"] >= 1000
        methods = {r["method"] for r in fold["results"]}
        assert {"popularity", "session-kNN (V-SKNN)", "GRU4Rec", "logistic regression"} <= methods
        pop = next(r for r in fold["results"] if r["method"] == "popularity")
        assert 0.0 <= pop["values"]["HR@20"][0] <= 1.0
        OnnxScorer.load(out / "bundles" / mode, device="cpu")
