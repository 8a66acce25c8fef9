"""The batch-cost benchmark runs the worker's batch step and reports what it processed."""

from __future__ import annotations

import json
from pathlib import Path

from loadtests.batch_cost import main, messages


def test_messages_pack_events_in_order() -> None:
    events = [{"n": i} for i in range(7)]
    packed = messages(events, 3, 0)
    assert [len(json.loads(m.value)) for m in packed] == [3, 3, 1]
    assert [e["n"] for m in packed for e in json.loads(m.value)] == list(range(7))
    assert [m.offset for m in packed] == [0, 1, 2]


def test_run_reports_every_size(quick_bundle: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cost.json"
    assert (
        main(
            ["--model-dir", str(quick_bundle), "--events", "400", "--users", "50", "--sizes", "1,64", "--out", str(out)]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    assert [r["size"] for r in rows] == [1, 64]
    for r in rows:
        assert 0 < r["ranked"] <= r["events"] and r["cpu_s"] > 0
    assert rows[0]["ranked"] == rows[0]["events"]  # one event per batch: one ranking per event
    assert rows[1]["ranked"] < rows[1]["events"]  # several events of a user in a batch: one ranking
    assert "| 64 |" in capsys.readouterr().out
