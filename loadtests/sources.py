"""Where benchmark events come from: simulated listeners of the bundle's synthetic world, or real sessions.

Both return v1 event dicts in one stream, in time order, plus each event's position on the replay clock
(``replay_ms``, milliseconds from the start of the replay) so that a generator can pace by it.

Real sessions (``../shared/data/spotify-personal-streaming-history``, read at run time, never copied) are
replayed with each user's own order kept: every user is shifted to a common start, so users listen side by
side, and the replay clock is the shifted time divided by a compression factor. The event's own ``ts_ms``
keeps the uncompressed, shifted time, so session gaps (30 minutes) mean what they meant. The default model
bundle is trained on generated data only, so real track ids are mapped onto the served catalog
deterministically: ``blake2b(real id) mod catalog size`` picks the catalog track (``map_track``). Listening
order, timing and skip behaviour are real; the track identities are not.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from models_onnx.bundle import read_manifest
from models_onnx.generate import by_time, world_from_manifest

REAL_DATA: Final = Path("../shared/data/spotify-personal-streaming-history")
COMMON_START_MS: Final = 1_704_067_200_000  # 2024-01-01T00:00Z, the shifted start of every real user
SKIP_BELOW_MS: Final = 30_000  # the usual skip proxy for this export (no explicit skip flag)
MAX_PLAYED_MS: Final = 86_400_000  # the event contract's upper bound for played_ms


@dataclass(frozen=True)
class Replay:
    """Events in replay order and their replay-clock positions (ms from the start, non-decreasing)."""

    events: list[dict[str, Any]]
    replay_ms: np.ndarray  # float64 [n]
    users: int
    description: str


def simulated(bundle: Path, n_events: int, n_users: int, seed: int = 7) -> Replay:
    """About ``n_events`` events of ``n_users`` simulated listeners, merged in time order.

    The replay clock is event time relative to the first event (rarely used: simulated runs pace by rate)."""
    world = world_from_manifest(read_manifest(bundle))
    per_user = max(1, round(n_events / n_users))
    sessions = max(1, per_user // 10)
    events = by_time(
        world.simulate_sessions(n_users, sessions, max(1, per_user // sessions), np.random.default_rng(seed))
    )
    ts = np.array([e["ts_ms"] for e in events], dtype=np.float64)
    desc = f"simulated listeners of the bundle's synthetic world (seed {seed}), {sessions} session(s) per user"
    return Replay(events, ts - ts[0] if len(ts) else ts, n_users, desc)


def map_track(real_id: str, track_ids: Sequence[str]) -> str:
    """The catalog track that stands in for a real track id: ``blake2b(id) mod len(track_ids)``."""
    h = int.from_bytes(hashlib.blake2b(real_id.encode(), digest_size=8).digest(), "little")
    return track_ids[h % len(track_ids)]


def _rows(data_dir: Path) -> Iterator[dict[str, str]]:
    for part in sorted(data_dir.glob("events_part*.csv.gz")):
        with gzip.open(part, "rt", newline="") as f:
            yield from csv.DictReader(f)


def _end_ms(end_time: str) -> int:
    return int(datetime.strptime(end_time, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC).timestamp() * 1000)


def real(data_dir: Path, track_ids: Sequence[str], n_events: int, n_users: int, compress: float = 60.0) -> Replay:
    """The first ``n_events // n_users`` plays of each of the first ``n_users`` people (file order).

    A play under 30 s becomes a ``skip``, otherwise a ``play``; its ``ts_ms`` is its start (``end_time -
    ms_played``) and it is replayed at its end, so each person's plays keep the export's order.
    Raises ``FileNotFoundError`` with the path when the data is absent."""
    if not (data_dir / "events_part00.csv.gz").is_file():
        raise FileNotFoundError(f"real listening data not found at {data_dir.resolve()}")
    per_user = max(1, n_events // n_users)
    taken: dict[str, list[tuple[int, str, int]]] = {}  # per user, in file order: (end ms, real track, played)
    for row in _rows(data_dir):
        user = row["user_id"]
        if user not in taken:
            if len(taken) >= n_users:
                break
            taken[user] = []
        mine = taken[user]
        if len(mine) < per_user:
            mine.append((_end_ms(row["end_time"]), row["track_id"], min(int(row["ms_played"]), MAX_PLAYED_MS)))
    events: list[dict[str, Any]] = []
    clock: list[float] = []
    for u, plays in enumerate(taken.values()):
        first = plays[0][0]  # the file is in end_time order per user
        for j, (end, real_id, played) in enumerate(plays):
            events.append(
                {
                    "v": 1,
                    "type": "skip" if played < SKIP_BELOW_MS else "play",
                    "event_id": f"real-{u:04d}-{j:07d}",
                    "user_id": f"real-{u:04d}",
                    "track_id": map_track(real_id, track_ids),
                    "ts_ms": max(COMMON_START_MS, COMMON_START_MS + (end - first) - played),  # the play's start
                    "played_ms": played,
                }
            )
            clock.append((end - first) / compress)  # replayed when it ended, as the export records it
    order = np.argsort(np.asarray(clock), kind="stable")  # stable: each user's file order is kept
    desc = (
        f"real sessions of {len(taken)} people, first {per_user} plays each, shifted to a common start, "
        f"replay clock compressed {compress:g}x; track ids mapped to the catalog by blake2b(id) mod {len(track_ids)}"
    )
    return Replay([events[i] for i in order], np.asarray(clock)[order], len(taken), desc)
