"""Real listening histories (Spotify-export format): loading, sessions, skip labels and evaluation folds.

Input directory (read at run time, never copied): ``events_part*.csv.gz`` with the columns
``user_id,end_time,ms_played,track_id`` (``end_time`` UTC ``YYYY-MM-DDTHH:MMZ``) and optionally
``tracks.csv.gz`` (``track_id,artist_id,...``) for each track's artist.

Preparation (``load_plays``):

* every user's plays are ordered by ``end_time`` (stable, so equal minutes keep the file order);
* a new session starts at a user's first play and after more than ``SESSION_GAP_MS`` (30 minutes)
  between two consecutive ``end_time`` values: the same rule ``streams.session.apply_event`` applies
  to event timestamps, so offline sessions and online sessions agree;
* skip label: ``ms_played < SKIP_MS`` (30 s, Spotify's own threshold for counting a stream).

Folds (``time_fold``, ``user_fold``): what models learn from (``train``), the streams of the users they
are tested on (``test``) and which of those events are scored (after each user's cut-off at 80% of their
time span). The track vocabulary comes from the training events only (``Vocab``).
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Final

import numpy as np

SKIP_MS: Final = 30_000
SESSION_GAP_MS: Final = 30 * 60 * 1000
DEFAULT_DATA: Final = "../shared/data/spotify-personal-streaming-history"
EVENT_COLUMNS: Final = ("user_id", "end_time", "ms_played", "track_id")


@dataclass(frozen=True, eq=False)
class Plays:
    """One play per row, grouped by user and in time order within each user; row arrays share length E."""

    user: np.ndarray  # int64 [E] index into user_ids
    ts_ms: np.ndarray  # int64 [E] end of the play, ms since the epoch (minute resolution)
    ms_played: np.ndarray  # int64 [E]
    track: np.ndarray  # int64 [E] index into track_ids
    session: np.ndarray  # int64 [E] global session number, increasing along the rows
    pos: np.ndarray  # int64 [E] position in the session, 0 for its first play
    user_ids: np.ndarray  # str [U]
    track_ids: np.ndarray  # str [T]
    artist_ids: np.ndarray  # str [T], "" when unknown

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def skip(self) -> np.ndarray:
        """bool [E]: the play lasted less than 30 s."""
        return self.ms_played < SKIP_MS

    def take(self, rows: np.ndarray) -> Plays:
        """The plays at ``rows`` (a bool mask or increasing indices); id tables are shared."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("user", "ts_ms", "ms_played", "track", "session", "pos"):
            kw[name] = kw[name][rows]
        return Plays(**kw)

    def user_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) row ranges of each user present, both int64 [U'] in row order."""
        change = np.flatnonzero(np.diff(self.user)) + 1
        starts = np.concatenate([[0], change]).astype(np.int64) if len(self) else np.zeros(0, np.int64)
        ends = np.concatenate([change, [len(self)]]).astype(np.int64) if len(self) else np.zeros(0, np.int64)
        return starts, ends


def _parse_minutes(text: np.ndarray) -> np.ndarray:
    """``YYYY-MM-DDTHH:MMZ`` strings -> int64 ms since the epoch."""
    stripped = np.char.rstrip(text.astype(str), "Z")
    return stripped.astype("datetime64[m]").astype(np.int64) * 60_000


def read_events(data_dir: Path) -> tuple[np.ndarray, ...]:
    """The raw columns of every ``events_part*.csv.gz`` in ``data_dir`` as arrays (str, str, int64, str)."""
    files = sorted(data_dir.glob("events_part*.csv*"))
    if not files:
        raise FileNotFoundError(f"no events_part*.csv.gz in {data_dir}")
    parts: list[list[str]] = []
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", newline="") as fh:  # type: ignore[operator]
            header = fh.readline().strip().split(",")
            if tuple(header) != EVENT_COLUMNS:
                raise ValueError(f"{path}: expected columns {EVENT_COLUMNS}, got {header}")
            lines = fh.read().splitlines()
        lines = [line for line in lines if line]
        if not lines:
            continue
        fields_ = ",".join(lines).split(",")  # one split for the whole file
        if len(fields_) % 4:
            raise ValueError(f"{path}: every row needs {len(EVENT_COLUMNS)} fields")
        parts.append(fields_)
    cols = [np.asarray([v for p in parts for v in p[i::4]]) for i in range(4)]
    return cols[0], cols[1], cols[2].astype(np.int64), cols[3]


def read_artists(data_dir: Path) -> dict[str, str]:
    """track_id -> artist_id from ``tracks.csv.gz`` (empty when the file is absent)."""
    path = data_dir / "tracks.csv.gz"
    if not path.is_file():
        return {}
    with gzip.open(path, "rb") as fh:
        reader = csv.reader(io.TextIOWrapper(fh, encoding="utf-8", newline=""))
        header = next(reader)
        ti, ai = header.index("track_id"), header.index("artist_id")
        return {row[ti]: row[ai] for row in reader if len(row) > max(ti, ai)}


def load_plays(data_dir: Path | str, max_users: int | None = None, seed: int = 0) -> Plays:
    """Load, order and sessionise a directory; ``max_users`` keeps a seeded random subset of users."""
    data_dir = Path(data_dir)
    users_s, times_s, ms, tracks_s = read_events(data_dir)
    user_ids, user = np.unique(users_s, return_inverse=True)
    if max_users is not None and max_users < len(user_ids):
        keep_users = np.sort(np.random.default_rng([seed, 11]).choice(len(user_ids), max_users, replace=False))
        mask = np.isin(user, keep_users)
        users_s, times_s, ms, tracks_s = users_s[mask], times_s[mask], ms[mask], tracks_s[mask]
        user_ids, user = np.unique(users_s, return_inverse=True)
    ts = _parse_minutes(times_s)
    track_ids, track = np.unique(tracks_s, return_inverse=True)
    order = np.lexsort((ts, user))  # stable: by user, then time, then file order
    user, ts, ms, track = user[order].astype(np.int64), ts[order], ms[order], track[order].astype(np.int64)
    new = np.ones(len(user), bool)
    new[1:] = (user[1:] != user[:-1]) | (ts[1:] - ts[:-1] > SESSION_GAP_MS)
    session = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    pos = np.arange(len(user)) - starts[session]
    artists = read_artists(data_dir)
    artist_ids = np.asarray([artists.get(t, "") for t in track_ids], dtype=object).astype(str)
    return Plays(user, ts, ms, track, session, pos, user_ids, track_ids, artist_ids)


@dataclass(frozen=True, eq=False)
class Vocab:
    """The training catalog: track ids in index order (most played first) and their training counts."""

    track_ids: np.ndarray  # str [N]
    artist_ids: np.ndarray  # str [N]
    counts: np.ndarray  # int64 [N] training plays
    index: dict[str, int]

    def __len__(self) -> int:
        return int(self.track_ids.shape[0])

    def items_of(self, plays: Plays) -> np.ndarray:
        """int64 [E]: each play's vocabulary index, -1 for tracks outside the training catalog."""
        local = np.asarray([self.index.get(t, -1) for t in plays.track_ids], dtype=np.int64)
        return local[plays.track]


def build_vocab(train: Plays) -> Vocab:
    """The vocabulary of the tracks played in ``train`` (only), ordered by play count, then id."""
    counts = np.bincount(train.track, minlength=len(train.track_ids))
    present = np.flatnonzero(counts)
    order = present[np.lexsort((train.track_ids[present], -counts[present]))]
    ids = train.track_ids[order]
    return Vocab(ids, train.artist_ids[order], counts[order].astype(np.int64), {t: i for i, t in enumerate(ids)})


@dataclass(frozen=True, eq=False)
class Fold:
    """One evaluation setting: learn from ``train``; replay ``test`` streams; score rows where ``scored``."""

    name: str  # "time" or "users"
    train: Plays
    test: Plays
    scored: np.ndarray  # bool [len(test)]: the play is after its user's cut-off
    vocab: Vocab
    train_items: np.ndarray  # int64 [len(train)] vocabulary index (all >= 0)
    test_items: np.ndarray  # int64 [len(test)] vocabulary index or -1


def cutoffs(plays: Plays, frac: float = 0.8) -> np.ndarray:
    """bool [E]: the play ends at or after ``first + frac * (last - first)`` of its user's time span."""
    starts, ends = plays.user_bounds()
    first = np.repeat(plays.ts_ms[starts], ends - starts)
    last = np.repeat(plays.ts_ms[ends - 1], ends - starts)
    return plays.ts_ms >= first + frac * (last - first)


def _fold(name: str, train: Plays, test: Plays, scored: np.ndarray) -> Fold:
    vocab = build_vocab(train)
    return Fold(name, train, test, scored, vocab, vocab.items_of(train), vocab.items_of(test))


def time_fold(plays: Plays, frac: float = 0.8) -> Fold:
    """Every user: learn from the earlier ``frac`` of their time span, score the rest."""
    after = cutoffs(plays, frac)
    return _fold("time", plays.take(~after), plays, after)


def user_fold(train: Plays, test: Plays, frac: float = 0.8) -> Fold:
    """Learn from all of ``train``; ``test`` users are unseen, their plays before the cut-off are history."""
    return _fold("users", train, test, cutoffs(test, frac))


def holdout_users(plays: Plays, frac: float, seed: int) -> tuple[Plays, Plays]:
    """Split ``plays`` by a seeded random ``frac`` of users into (kept, held-out); both keep all id tables."""
    n_users = len(plays.user_ids)
    n_out = max(1, int(round(frac * n_users)))
    out = np.zeros(n_users, bool)
    out[np.random.default_rng([seed, 13]).choice(n_users, n_out, replace=False)] = True
    mask = out[plays.user]
    return plays.take(~mask), plays.take(mask)
