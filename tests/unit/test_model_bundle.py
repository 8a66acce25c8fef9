"""Training pipeline pieces, ONNX export guarantees and the model bundle format v1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from models_onnx.bundle import (  # noqa: E402
    FORMAT,
    read_items,
    read_manifest,
    read_tracks,
    write_bundle,
)
from models_onnx.dataset import replay  # noqa: E402
from models_onnx.embeddings import item_embeddings  # noqa: E402
from models_onnx.export import check_parity, export_model  # noqa: E402
from models_onnx.generate import SyntheticWorld  # noqa: E402
from models_onnx.model import SessionScorer  # noqa: E402
from models_onnx.signature import INPUT_NAMES, OUTPUT_NAMES  # noqa: E402
from models_onnx.trainer import FitConfig, auc, fit  # noqa: E402
from streams.errors import ModelError  # noqa: E402
from streams.session import CONTEXT_FEATURES, SKIPPED  # noqa: E402


def _kept_sessions(world: SyntheticWorld, events: list[dict]) -> list[list[int]]:
    kept: dict[str, list[int]] = {}
    for e in events:
        if e["type"] != "skip":
            kept.setdefault(e["session_id"], []).append(world.index[e["track_id"]])
    return list(kept.values())


def test_quick_bundle_layout(quick_bundle: Path, world: SyntheticWorld) -> None:
    manifest = read_manifest(quick_bundle)
    assert manifest["format"] == FORMAT and manifest["format_version"] == 1 and manifest["signature"] == 1
    assert manifest["dim"] == 32 and manifest["n_tracks"] == 2000
    assert manifest["context_features"] == list(CONTEXT_FEATURES)
    assert manifest["training"]["data"] == "generated" and manifest["training"]["seed"] == 7
    assert manifest["model_version"].startswith("gen-s7-")
    items = read_items(quick_bundle, manifest)
    assert items.dtype == np.float32 and items.shape == (2000, 32)
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, atol=1e-5)
    tracks = read_tracks(quick_bundle, manifest)
    assert tracks == json.loads(json.dumps(world.track_records()))


def test_quick_bundle_onnx_passes_checker_with_v1_metadata(quick_bundle: Path) -> None:
    model = onnx.load(str(quick_bundle / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    meta = {p.key: p.value for p in model.metadata_props}
    manifest = read_manifest(quick_bundle)
    assert meta == {
        "segue.signature": "1",
        "segue.model_version": manifest["model_version"],
        "segue.dim": "32",
        "segue.context_features": ",".join(CONTEXT_FEATURES),
    }


def test_quick_training_learns_something(quick_bundle: Path) -> None:
    metrics = read_manifest(quick_bundle)["training"]["metrics"]
    assert metrics["model_auc_skip"] > 0.75
    assert metrics["model_auc_random"] > 0.75


def test_export_parity_and_its_failure_mode() -> None:
    torch.manual_seed(0)
    model = SessionScorer(dim=8, hidden=16)
    data = export_model(model, 8, "t-1", np.random.default_rng(0))
    assert check_parity(model, data, 8, np.random.default_rng(1)) < 1e-4
    torch.manual_seed(1)
    other = SessionScorer(dim=8, hidden=16)
    with pytest.raises(ModelError, match="disagree"):
        check_parity(other, data, 8, np.random.default_rng(1))


def test_model_respects_skip_and_positive_directions() -> None:
    torch.manual_seed(0)
    model = SessionScorer(dim=16).eval()  # untrained: the structure alone must give the right signs
    cand = torch.nn.functional.normalize(torch.randn(1, 5, 16), dim=-1)  # [1, 5, 16]
    zero = torch.zeros(1, 16)
    ctx = torch.zeros(1, len(CONTEXT_FEATURES))
    with torch.no_grad():
        neutral = model(zero, zero, zero, ctx, cand)
        skipped = model(zero, cand[:, 0], zero, ctx, cand)
        liked = model(cand[:, 0] * 2, zero, zero, ctx, cand)
    assert skipped[0, 0] < neutral[0, 0] < liked[0, 0]


def test_item_embeddings_are_deterministic_and_meaningful(world: SyntheticWorld) -> None:
    events = world.simulate_sessions(150, 3, 20, np.random.default_rng(2))
    sessions = _kept_sessions(world, events)
    groups = [world.track_artist, world.track_genre]
    a, counts = item_embeddings(sessions, world.n_tracks, 16, groups, np.random.default_rng(0))
    b, _ = item_embeddings(sessions, world.n_tracks, 16, groups, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (2000, 16)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert (counts == 0).any()  # some tracks were never kept, and still have a vector
    sims = a @ a.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argsort(-sims, axis=1)[:, :10]
    purity = (world.track_genre[nearest] == world.track_genre[:, None]).mean()
    assert purity > 0.8


def test_replay_collects_one_example_per_in_session_transition(world: SyntheticWorld) -> None:
    events = world.simulate_sessions(10, 2, 15, np.random.default_rng(3))
    items = np.eye(world.n_tracks, 8, dtype=np.float32) + 0.1
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    ex = replay(events, world.index, items)
    assert len(ex) == 10 * 2 * 14  # the first event of each session has no state before it
    assert ex.pos.shape == (len(ex), 8) and ex.context.shape == (len(ex), len(CONTEXT_FEATURES))
    # Targets and outcomes are the events after each session's first, in order.
    later = [e for i, e in enumerate(events) if i % 15 != 0]
    assert [world.track_ids[t] for t in ex.target] == [e["track_id"] for e in later]
    assert [o == SKIPPED for o in ex.outcome] == [e["type"] == "skip" for e in later]
    assert set(ex.user.tolist()) == set(range(10))


def test_fit_is_deterministic(world: SyntheticWorld) -> None:
    events = world.simulate_sessions(20, 2, 15, np.random.default_rng(4))
    rng = np.random.default_rng(0)
    items = rng.normal(size=(world.n_tracks, 8)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    ex = replay(events, world.index, items)
    params = []
    for _ in range(2):
        torch.manual_seed(3)
        model = SessionScorer(8, 16)
        loss = fit(model, ex, items, FitConfig(epochs=2, batch=64), np.random.default_rng(9), progress=False)
        assert np.isfinite(loss)
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(params[0], params[1])


def test_auc() -> None:
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0]), np.array([1.0])) == 0.5
    assert auc(np.array([1.0, 3.0]), np.array([2.0])) == 0.5
    assert np.isnan(auc(np.array([]), np.array([1.0])))


def _bundle_args(n: int = 3, dim: int = 4) -> tuple[bytes, np.ndarray, list[dict]]:
    items = np.eye(n, dim, dtype=np.float32)
    tracks = [{"track_id": f"trk-{i:05d}", "artist_id": "art-0000", "genre": "jazz"} for i in range(n)]
    return b"not-really-onnx", items, tracks


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no model bundle at .*python -m models_onnx.train --out"):
        read_manifest(tmp_path / "nowhere")
    model, items, tracks = _bundle_args()
    out = write_bundle(tmp_path / "b", model, items, tracks, "v-1", {"seed": 1, "data": "generated"})
    assert read_manifest(out)["model_version"] == "v-1"
    manifest = json.loads((out / "manifest.json").read_text())
    for key, value, message in [
        ("signature", 3, "signature 3"),
        ("format_version", 9, "format_version 9"),
        ("format", "other", "not a segue model bundle"),
        ("context_features", ["hour"], "context features"),
    ]:
        (out / "manifest.json").write_text(json.dumps({**manifest, key: value}))
        with pytest.raises(ModelError, match=message):
            read_manifest(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable manifest"):
        read_manifest(out)


def test_write_bundle_replaces_a_bundle_but_not_other_directories(tmp_path: Path) -> None:
    model, items, tracks = _bundle_args()
    out = tmp_path / "bundle"
    write_bundle(out, model, items, tracks, "v-1", {})
    write_bundle(out, model, items, tracks, "v-2", {})
    assert read_manifest(out)["model_version"] == "v-2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary leftovers
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ModelError, match="not a model bundle"):
        write_bundle(precious, model, items, tracks, "v-1", {})
    assert (precious / "notes.txt").read_text() == "keep me"
    with pytest.raises(ModelError, match="L2-normalised"):
        write_bundle(out, model, items * 2, tracks, "v-3", {})
    with pytest.raises(ModelError, match="do not match"):
        write_bundle(out, model, items, tracks[:2], "v-3", {})


def test_readers_check_items_and_tracks_against_the_manifest(tmp_path: Path) -> None:
    model, items, tracks = _bundle_args()
    out = write_bundle(tmp_path / "b", model, items, tracks, "v-1", {})
    manifest = read_manifest(out)
    np.save(out / "items.npy", items.astype(np.float64))
    with pytest.raises(ModelError, match="float32"):
        read_items(out, manifest)
    (out / "tracks.json").write_text(json.dumps(tracks[:1]))
    with pytest.raises(ModelError, match="3 tracks"):
        read_tracks(out, manifest)
