"""The closed loop on the real broker, Redis and worker: a small run, its report, and segue's reaction."""

from __future__ import annotations

import asyncio
import json

from loadtests.closed_loop import LoopConfig, evaluate
from loadtests.loop_report import PLOTS, write_report
from serving.diversity import Preferences
from tests.integration.helpers import start_worker, worker_settings

POSITIONS = 8


def test_closed_loop_smoke_run_is_complete_and_segue_reacts(
    embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path
):
    # This run measures ranking, not latency: a model slot a loaded test machine cannot overrun.
    settings = worker_settings(
        embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path, rescore_timeout_ms=2000.0
    )
    worker = start_worker(settings, tmp_path)
    cfg = LoopConfig(
        model_dir=quick_bundle,
        out=tmp_path / "report",
        listeners=10,
        positions=POSITIONS,
        history_sessions=2,
        history_length=6,
        late_from=4,
        boot=200,
        settings=(Preferences(), Preferences(0.3, 0.8)),
        curve_on="live",  # the knob stored per listener in Redis and applied by the worker
        bootstrap=embedded_stack.kafka.bootstrap_servers,
        redis_url=settings.redis.url,
        key_prefix=redis_prefix,
        events_topic=unique_topics.events,
        progress=False,
    )
    try:
        results = asyncio.run(evaluate(cfg))
    finally:
        worker.stop()
    write_report(cfg.out, results)

    # The report is complete.
    for name in ("results.json", "report.md", *PLOTS):
        assert (cfg.out / name).stat().st_size > 0, name
    stored = json.loads((cfg.out / "results.json").read_text())
    assert set(stored["arms"]) == {
        "segue",
        "segue-inprocess",
        "segue-no-intent",
        "segue-no-separation",
        "static",
        "random",
        "oracle",
    }
    for arm in stored["arms"].values():
        for key in ("skip_by_position", "like_by_position"):
            assert len(arm[key]["mean"]) == POSITIONS and len(arm[key]["lo"]) == POSITIONS
    head = stored["headline"]
    assert {"segue_vs_static", "segue_vs_random", "segue_trend", "target"} <= set(head)
    assert head["segue_vs_static"]["lo"] <= head["segue_vs_static"]["reduction"] <= head["segue_vs_static"]["hi"]
    report = (cfg.out / "report.md").read_text()
    assert "## Headline" in report and "relative reduction" in report and "trade-off" in report
    assert stored["live"]["lists_read"] == 10 * POSITIONS and stored["live"]["fallback_share"] == 0.0

    # segue reacts: a skipped track never comes back in the next list, and a skip reshuffles the list far more
    # than the static recommender (whose list only closes the gap the heard track left).
    segue, static = stored["arms"]["segue"], stored["arms"]["static"]
    assert segue["reaction"]["skips"] > 0 and segue["reaction"]["skipped_relisted"] == 0.0
    assert static["reaction"]["turnover_after_skip"] <= 1.0
    assert segue["reaction"]["turnover_after_skip"] > 2.0
    # Random skips far more than segue, and the knob stored in Redis spreads the lists the worker makes.
    assert stored["arms"]["random"]["skip_overall"]["mean"] > segue["skip_overall"]["mean"]
    # The oracle (it reads the hidden mood) is the floor, and the drift it meets is reported by position.
    assert stored["arms"]["oracle"]["skip_overall"]["mean"] < segue["skip_overall"]["mean"]
    assert len(stored["focus_preference"]) == POSITIONS and "segue_minus_oracle_slope" in head
    plain, spread = stored["curve"]
    assert spread["intra_list_diversity"] > plain["intra_list_diversity"] and spread["coverage"] > plain["coverage"]
