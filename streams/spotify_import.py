"""``segue-import``: bring a listener's Spotify "Download your data" history into segue.

    segue-import --user alice ~/Downloads/my_spotify_data            # seed alice's long-term taste
    segue-import --user alice --replay Streaming_History_Audio_2023.json   # or replay it as events

Reads both export formats (a folder is searched for them):

* account data, ``StreamingHistory*.json`` (also ``StreamingHistory_music_*.json``): a list of
  ``{"endTime": "2023-01-31 22:14", "artistName", "trackName", "msPlayed"}``;
* extended history, ``Streaming_History_Audio_*.json`` / ``endsong_*.json``: a list of ``{"ts":
  "2023-01-31T22:14:05Z", "ms_played", "master_metadata_track_name", "master_metadata_album_artist_name",
  "spotify_track_uri", "skipped", "reason_end", "platform", ...}``; podcast entries (no track) are left out.

Plays are mapped onto the served catalog (``tracks.json`` of the model bundle) by Spotify URI where the catalog
has ``spotify_uri``, else by normalised artist + title (``artist_name`` + ``title``); the report says how many
matched and names the most played unmatched tracks. A play under 30 s (or flagged ``skipped``) becomes a skip.

Two ways in:

* **seed** (default): the matched plays are applied in time order through ``streams.session.apply_event`` to an
  empty state, and the resulting long-term taste replaces the listener's (their session is kept), written to
  the store with compare-and-set (``SEGUE_REDIS__*``).
* **replay** (``--replay``): the matched plays are sent as v1 events through the SDK to the events topic
  (``SEGUE_KAFKA__*``, ``SEGUE_TOPICS__EVENTS``), so the worker applies them like live events. Event ids are
  derived from the play, so importing the same file twice is recognised by the worker's duplicate check while
  the ids are recent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from tqdm import tqdm

from models_onnx.bundle import read_manifest, read_tracks
from streams.errors import InvalidEvent, InvalidImport, SegueError
from streams.records import MAX_TS_MS, MIN_TS_MS, decode_event
from streams.session import SKIP_PROXY_MS, Dynamics, SessionState, apply_event
from streams.settings import WorkerSettings

PATTERNS: Final = ("StreamingHistory*.json", "Streaming_History_Audio_*.json", "endsong_*.json")
MAX_PLAYED_MS: Final = 86_400_000
SOURCE: Final = "import"


@dataclass(frozen=True)
class HistoryPlay:
    """One play from an export, in either format."""

    ts_ms: int  # when the play ended (account data) or the stream ended (extended: ``ts``)
    ms_played: int
    artist: str
    title: str
    uri: str | None = None
    skipped: bool | None = None
    platform: str | None = None


@dataclass
class ImportReport:
    """What an import read and matched."""

    files: list[str] = field(default_factory=list)
    plays: int = 0
    not_music: int = 0  # podcast episodes, audiobooks: entries without a track
    matched: int = 0
    skips: int = 0
    unmatched: Counter[tuple[str, str]] = field(default_factory=Counter)

    def summary(self) -> str:
        lines = [
            f"read {self.plays} plays from {len(self.files)} file(s) ({self.not_music} entries without a track "
            "left out)",
            f"matched {self.matched} of {self.plays} plays to the catalog ({self.skips} as skips); "
            f"{self.plays - self.matched} unmatched plays of {len(self.unmatched)} distinct tracks",
        ]
        if self.unmatched:
            top = ", ".join(f"{a} - {t} ({n}x)" for (a, t), n in self.unmatched.most_common(5))
            lines.append(f"most played unmatched: {top}")
        return "\n".join(lines)


def find_files(paths: Iterable[Path]) -> list[Path]:
    """The export files named, or found in the folders named; InvalidImport if there are none."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted({f for pattern in PATTERNS for f in p.rglob(pattern)})
            if not found:
                raise InvalidImport(
                    f"{p} holds no StreamingHistory*.json, Streaming_History_Audio_*.json or endsong_*.json: "
                    "point at the unzipped 'my_spotify_data' folder or at the files themselves"
                )
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise InvalidImport(f"{p} does not exist")
    return out


def _parse_time(value: object, fmt: str, where: str) -> int:
    if not isinstance(value, str):
        raise InvalidImport(f"{where}: timestamp {value!r} is not a string")
    try:
        ts = datetime.strptime(value, fmt).replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidImport(f"{where}: timestamp {value!r} is not in the export's format ({fmt})") from exc
    return int(ts.timestamp() * 1000)


def parse_entries(entries: object, name: str, report: ImportReport) -> list[HistoryPlay]:
    """Plays of one export file's decoded JSON; InvalidImport if it is not a streaming history."""
    hint = (
        "expected a Spotify 'Download your data' StreamingHistory*.json (account data) or "
        "Streaming_History_Audio_*.json / endsong_*.json (extended history)"
    )
    if not isinstance(entries, list):
        raise InvalidImport(f"{name} is not a list of plays: {hint}")
    plays: list[HistoryPlay] = []
    for i, e in enumerate(entries):
        where = f"{name} entry {i}"
        if not isinstance(e, dict):
            raise InvalidImport(f"{where} is not an object: {hint}")
        if "endTime" in e and "msPlayed" in e:
            artist, title = e.get("artistName"), e.get("trackName")
            ts = _parse_time(e["endTime"], "%Y-%m-%d %H:%M", where)
            ms, uri, skipped, platform = e["msPlayed"], None, None, None
        elif "ts" in e and "ms_played" in e:
            artist, title = e.get("master_metadata_album_artist_name"), e.get("master_metadata_track_name")
            ts = _parse_time(e["ts"], "%Y-%m-%dT%H:%M:%SZ", where)
            ms, uri = e["ms_played"], e.get("spotify_track_uri")
            skipped, platform = e.get("skipped"), e.get("platform")
        else:
            raise InvalidImport(f"{where} has neither endTime/msPlayed nor ts/ms_played: {hint}")
        if not isinstance(ms, int) or ms < 0:
            raise InvalidImport(f"{where}: ms played {ms!r} is not a non-negative integer")
        if not artist or not title:
            report.not_music += 1
            continue
        plays.append(
            HistoryPlay(
                ts, ms, str(artist), str(title), uri or None, bool(skipped) if skipped is not None else None, platform
            )
        )
    return plays


def read_history(paths: Sequence[Path], report: ImportReport, progress: bool | None = None) -> list[HistoryPlay]:
    """Every play of the export files in ``paths`` (files or folders), in time order."""
    plays: list[HistoryPlay] = []
    for path in tqdm(find_files(paths), desc="read", unit="file", disable=None if progress else True):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidImport(f"{path} is not UTF-8 text ({exc}): is it the zip? unzip it first") from exc
        except json.JSONDecodeError as exc:
            raise InvalidImport(f"{path} is not JSON ({exc}): pass the .json files of the export") from exc
        plays.extend(parse_entries(data, path.name, report))
        report.files.append(str(path))
    plays.sort(key=lambda p: p.ts_ms)
    report.plays = len(plays)
    return plays


def normalise(text: str) -> str:
    """Lower-case, accents, bracketed parts ("(feat. X)", "[Live]"), " - Remastered 2011" tails and
    punctuation removed; whitespace collapsed."""
    t = unicodedata.normalize("NFKD", text.lower())
    t = "".join(c for c in t if not unicodedata.combining(c))
    t = re.sub(r"[(\[].*?[)\]]", " ", t)
    t = re.sub(r"\s+-\s+.*(remaster|version|live|edit|mix|mono|stereo).*$", " ", t)
    t = re.sub(r"[^\w\s]", " ", t)
    return " ".join(t.split())


class CatalogMatcher:
    """Maps export plays onto catalog track ids by Spotify URI or by normalised (artist, title)."""

    def __init__(self, tracks: Sequence[Mapping[str, Any]]) -> None:
        self.by_uri: dict[str, str] = {}
        self.by_name: dict[tuple[str, str], str] = {}
        for t in tracks:
            tid = t["track_id"]
            uri = t.get("spotify_uri") or t.get("uri")
            if isinstance(uri, str) and uri:
                self.by_uri.setdefault(uri, tid)
            artist = t.get("artist_name") or t.get("artist")
            title = t.get("title") or t.get("name")
            if isinstance(artist, str) and isinstance(title, str):
                self.by_name.setdefault((normalise(artist), normalise(title)), tid)

    @property
    def usable(self) -> bool:
        return bool(self.by_uri or self.by_name)

    def match(self, play: HistoryPlay) -> str | None:
        if play.uri and play.uri in self.by_uri:
            return self.by_uri[play.uri]
        return self.by_name.get((normalise(play.artist), normalise(play.title)))


def device_of(platform: str | None) -> str | None:
    """A v1 ``context.device`` for an export's ``platform`` string (None when unknown)."""
    if not platform:
        return None
    p = platform.lower()
    for needle, device in (
        ("android auto", "car"), ("car", "car"), ("cast", "speaker"), ("sonos", "speaker"),
        ("speaker", "speaker"), ("echo", "speaker"), ("alexa", "speaker"), ("android", "mobile"),
        ("ios", "mobile"), ("iphone", "mobile"), ("web", "web"), ("windows", "desktop"), ("os x", "desktop"),
        ("osx", "desktop"), ("macos", "desktop"), ("linux", "desktop"),
    ):  # fmt: skip
        if needle in p:
            return device
    return None


def to_events(
    plays: Sequence[HistoryPlay], user_id: str, matcher: CatalogMatcher, report: ImportReport
) -> list[dict[str, Any]]:
    """v1 event dicts of the matched plays, in time order; plays under 30 s or flagged skipped are skips."""
    events = []
    for i, p in enumerate(plays):
        track = matcher.match(p)
        if track is None:
            report.unmatched[(p.artist, p.title)] += 1
            continue
        ts = min(max(p.ts_ms, MIN_TS_MS), MAX_TS_MS)
        skip = p.skipped is True or p.ms_played < SKIP_PROXY_MS
        digest = hashlib.blake2b(f"{user_id}|{p.ts_ms}|{p.uri or p.artist + p.title}|{i}".encode(), digest_size=12)
        event: dict[str, Any] = {
            "v": 1,
            "type": "skip" if skip else "play",
            "event_id": f"imp-{digest.hexdigest()}",
            "user_id": user_id,
            "track_id": track,
            "ts_ms": ts,
            "played_ms": min(p.ms_played, MAX_PLAYED_MS),
            "context": {"source": SOURCE, **({"device": d} if (d := device_of(p.platform)) else {})},
        }
        events.append(event)
        report.matched += 1
        report.skips += skip
    return events


def seeded_taste(events: Sequence[Mapping[str, Any]], index: Mapping[str, int], items: np.ndarray) -> np.ndarray:
    """The long-term taste float32 [D] that the session rule gives after applying ``events`` in order."""
    state = SessionState.empty(items.shape[1])
    dyn = Dynamics()
    for raw in events:
        event = decode_event(json.dumps(raw))
        i = index[event.track_id]
        state = apply_event(state, event, i, items[i], dyn)
    return state.taste


def seed_state(current: SessionState | None, taste: np.ndarray) -> SessionState:
    """``current`` with its long-term taste replaced (a new state if None); the version moves on."""
    base = current if current is not None else SessionState.empty(int(taste.shape[0]))
    return replace(base, taste=taste.astype(np.float32), version=base.version + 1)


async def write_seed(store: Any, user_id: str, taste: np.ndarray, attempts: int = 5) -> SessionState:
    """Replace the user's taste in ``store`` (a ``streams.stores.Store``) with compare-and-set."""
    for _ in range(attempts):
        (current,) = await store.get_states([user_id])
        new = seed_state(current, taste)
        refused = await store.put_states({user_id: new}, {user_id: current.version if current else None})
        if not refused:
            return new
    raise InvalidImport(f"the state of {user_id} kept changing during the import: try again")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``segue-import``)."""
    p = argparse.ArgumentParser(prog="segue-import", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", type=Path, help="export files or the unzipped export folder")
    p.add_argument("--user", required=True, help="the segue user id to import for")
    p.add_argument("--replay", action="store_true", help="send the plays as events instead of seeding the taste")
    p.add_argument("--bundle", type=Path, default=None, help="model bundle (default: SEGUE_SCORING__MODEL_DIR)")
    p.add_argument("--dry-run", action="store_true", help="read and match only; write and send nothing")
    args = p.parse_args(argv)
    settings = WorkerSettings()
    bundle = args.bundle or settings.scoring.model_dir
    report = ImportReport()
    try:
        decode_event(json.dumps({"v": 1, "type": "like", "event_id": "x", "user_id": args.user,
                                 "track_id": "x", "ts_ms": MIN_TS_MS}))  # fmt: skip
        plays = read_history(args.paths, report, progress=True)
        manifest = read_manifest(bundle)
        matcher = CatalogMatcher(read_tracks(bundle, manifest))
        if not matcher.usable:
            print(
                f"warning: the catalog of {bundle} has no spotify_uri or artist_name/title fields, so no play "
                "can match; add them to tracks.json (docs/import.md)",
                file=sys.stderr,
            )
        events = to_events(plays, args.user, matcher, report)
        print(report.summary())
        if args.dry_run or not events:
            return 0 if events or args.dry_run else 1
        if args.replay:
            from streams.sdk import EventProducer

            with EventProducer.connect(settings.kafka, topic=settings.topics.events) as producer:
                for e in tqdm(events, desc="replay", unit="ev"):
                    producer.send(e)
                producer.flush()
            print(f"sent {len(events)} events for {args.user} to {settings.topics.events}")
        else:
            from serving.catalog import Catalog
            from streams.stores import RedisStore

            catalog = Catalog.load(bundle)
            taste = seeded_taste(events, catalog.index, catalog.embeddings)
            store = RedisStore.connect(settings.redis)

            async def run() -> SessionState:
                try:
                    return await write_seed(store, args.user, taste)
                finally:
                    await store.close()

            state = asyncio.run(run())
            print(f"seeded the long-term taste of {args.user} (|taste| {np.linalg.norm(state.taste):.3f})")
    except InvalidEvent as exc:
        print(f"error: --user {args.user!r} is not a valid user id: {exc.detail}", file=sys.stderr)
        return 2
    except SegueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
