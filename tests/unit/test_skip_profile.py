"""The real-data skip profile on a hand-made dataset in the shared-data format (no shared data needed)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models_onnx.realdata import SESSION_GAP_MS, load_plays
from models_onnx.skip_profile import main, skip_profile

T0 = int(datetime(2024, 3, 1, 8, 0, tzinfo=UTC).timestamp() * 1000)
M = 60_000


def _write(root: Path, rows: list[tuple[str, int, int]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "events_part00.csv.gz", "wt") as fh:
        fh.write("user_id,end_time,ms_played,track_id\n")
        for i, (u, t, ms) in enumerate(rows):
            stamp = datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")
            fh.write(f"{u},{stamp},{ms},t{i % 7}\n")
    return root


def test_skip_profile_by_position_and_after_a_skip(tmp_path: Path) -> None:
    skip, keep = 5_000, 200_000
    # ua: one session of 4 plays (skip, skip, keep, skip); ub: one of 3 (keep, keep, skip), then a new session
    # after the gap whose first play is a skip (its predecessor is in another session: not "after" anything)
    rows = [("ua", T0 + i * M, ms) for i, ms in enumerate((skip, skip, keep, skip))]
    rows += [("ub", T0 + i * M, ms) for i, ms in enumerate((keep, keep, skip))]
    rows += [("ub", T0 + 3 * M + SESSION_GAP_MS + M, skip)]
    prof = skip_profile(load_plays(_write(tmp_path / "d", rows)), min_length=3, windows=((0, 1), (1, 3)))
    assert prof["plays"] == 8 and prof["listeners"] == 2 and prof["skip"] == pytest.approx(5 / 8)
    # within sessions: after a skip (ua 2nd, ua 3rd) -> 1 skip of 2; after a keep (ua 4th, ub 2nd, ub 3rd) -> 2 of 3
    assert prof["skip_after_skip"] == pytest.approx(1 / 2)
    assert prof["skip_after_keep"] == pytest.approx(2 / 3)
    assert prof["long_sessions"] == 2  # ub's one-play session is shorter than 3
    first, rest = prof["by_position"]["1"], prof["by_position"]["2-3"]
    assert first["pooled"] == pytest.approx(1 / 2) and first["plays"] == 2
    # positions 2-3: ua (skip, keep), ub (keep, skip): pooled 2 of 4, each listener 1/2
    assert rest["pooled"] == pytest.approx(1 / 2) and rest["mean_of_listeners"] == pytest.approx(1 / 2)
    assert rest["listeners"] == 2


def test_skip_profile_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write(tmp_path / "d", [("ua", T0 + i * M, 5_000 if i % 3 == 0 else 200_000) for i in range(25)])
    assert main(["--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "25 plays by 1 listeners: skipped 36.0%" in out and "11-20" in out
    assert main(["--data", str(tmp_path / "missing")]) == 2
    assert "pass --data DIR" in capsys.readouterr().err
