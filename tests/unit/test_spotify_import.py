"""segue-import on small export files the tests write themselves, in each Spotify format."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest

from models_onnx.bundle import read_manifest, read_tracks
from serving.catalog import Catalog
from streams.errors import InvalidImport
from streams.records import decode_event
from streams.spotify_import import (
    CatalogMatcher,
    ImportReport,
    device_of,
    main,
    normalise,
    read_history,
    seeded_taste,
    to_events,
    write_seed,
)
from streams.stores import MemoryStore

# Catalog tracks the test names: (track index, artist name, title, spotify uri)
NAMED = [
    (0, "Björk", "Jóga", "spotify:track:0000000000000000000001"),
    (1, "Massive Attack", "Teardrop", "spotify:track:0000000000000000000002"),
    (2, "The Beatles", "Let It Be - Remastered 2009", None),
    (3, "Daft Punk", "One More Time (feat. Romanthony)", None),
]


@pytest.fixture
def named_bundle(quick_bundle, tmp_path):
    """The quick bundle with names and URIs on four catalog tracks (as a real catalog would have)."""
    out = tmp_path / "bundle"
    shutil.copytree(quick_bundle, out)
    tracks = read_tracks(out, read_manifest(out))
    for i, artist, title, uri in NAMED:
        tracks[i].update(artist_name=artist, title=title, **({"spotify_uri": uri} if uri else {}))
    (out / "tracks.json").write_text(json.dumps(tracks))
    return out


def account_data(path):
    """StreamingHistory_music_0.json: the account-data format."""
    plays = [
        {"endTime": "2023-03-01 08:00", "artistName": "Björk", "trackName": "Joga", "msPlayed": 305000},
        {"endTime": "2023-03-01 08:05", "artistName": "Massive Attack", "trackName": "Teardrop", "msPlayed": 12000},
        {"endTime": "2023-03-01 08:09", "artistName": "The Beatles", "trackName": "Let It Be", "msPlayed": 243000},
        {"endTime": "2023-03-01 08:15", "artistName": "Nobody Known", "trackName": "Unheard", "msPlayed": 200000},
    ]
    path.write_text(json.dumps(plays, ensure_ascii=False))
    return path


def extended(path):
    """Streaming_History_Audio_2023.json / endsong_0.json: the extended format (with a podcast entry)."""
    base = {"conn_country": "DE", "ip_addr": "x", "offline": False, "shuffle": False, "incognito_mode": False}
    plays = [
        {**base, "ts": "2023-03-02T20:00:00Z", "platform": "Android OS 13 API 33 (Google, Pixel 7)",
         "ms_played": 250000, "master_metadata_track_name": "Teardrop",
         "master_metadata_album_artist_name": "Massive Attack",
         "spotify_track_uri": "spotify:track:0000000000000000000002", "reason_start": "trackdone",
         "reason_end": "trackdone", "skipped": False},
        {**base, "ts": "2023-03-02T20:04:00Z", "platform": "windows", "ms_played": 95000,
         "master_metadata_track_name": "ONE MORE TIME", "master_metadata_album_artist_name": "Daft Punk",
         "spotify_track_uri": "spotify:track:9999999999999999999999", "reason_start": "clickrow",
         "reason_end": "fwdbtn", "skipped": True},
        {**base, "ts": "2023-03-02T20:30:00Z", "platform": "web_player", "ms_played": 1800000,
         "master_metadata_track_name": None, "master_metadata_album_artist_name": None, "spotify_track_uri": None,
         "episode_name": "A podcast", "spotify_episode_uri": "spotify:episode:1", "skipped": None},
    ]  # fmt: skip
    path.write_text(json.dumps(plays))
    return path


def test_normalise_and_devices():
    assert normalise("Let It Be - Remastered 2009") == normalise("let it be")
    assert normalise("One More Time (feat. Romanthony)") == "one more time"
    assert normalise("Jóga") == "joga"
    assert device_of("Android OS 13 API 33 (Google, Pixel 7)") == "mobile"
    assert device_of("iOS 16.1 (iPhone14,5)") == "mobile" and device_of("web_player") == "web"
    assert device_of("cast_to_device") == "speaker" and device_of("windows") == "desktop"
    assert device_of(None) is None and device_of("fridge") is None


def test_both_formats_are_read_matched_and_turned_into_valid_events(named_bundle, tmp_path):
    folder = tmp_path / "my_spotify_data"
    folder.mkdir()
    account_data(folder / "StreamingHistory_music_0.json")
    extended(folder / "Streaming_History_Audio_2023.json")
    (folder / "Userdata.json").write_text("{}")  # other files of the export are not read
    report = ImportReport()
    plays = read_history([folder], report)
    assert report.plays == 6 and report.not_music == 1 and len(report.files) == 2
    assert [p.ts_ms for p in plays] == sorted(p.ts_ms for p in plays)
    matcher = CatalogMatcher(read_tracks(named_bundle, read_manifest(named_bundle)))
    events = to_events(plays, "alice", matcher, report)
    assert report.matched == 5 and sum(report.unmatched.values()) == 1
    assert "Nobody Known - Unheard" in report.summary() and "matched 5 of 6" in report.summary()
    decoded = [decode_event(json.dumps(e)) for e in events]
    tracks = [e.track_id for e in decoded]
    ids = Catalog.load(named_bundle).track_ids
    assert tracks == [ids[0], ids[1], ids[2], ids[1], ids[3]]  # by name (accents, remaster), by URI, by name
    kinds = [type(e).__name__ for e in decoded]
    assert kinds == ["Play", "Skip", "Play", "Play", "Skip"]  # 12 s -> skip; skipped flag -> skip
    assert decoded[3].context.device == "mobile" and decoded[3].context.source == "import"
    again = to_events(plays, "alice", matcher, ImportReport())
    assert [e["event_id"] for e in again] == [e["event_id"] for e in events]  # re-import: same ids


def test_seeding_writes_the_long_term_taste_through_the_session_rule(named_bundle, tmp_path):
    catalog = Catalog.load(named_bundle)
    matcher = CatalogMatcher(read_tracks(named_bundle, read_manifest(named_bundle)))
    report = ImportReport()
    events = to_events(read_history([extended(tmp_path / "endsong_0.json")], report), "bob", matcher, report)
    taste = seeded_taste(events, catalog.index, catalog.embeddings)
    # Only the kept play moves the taste (skips do not): taste_rate * the Teardrop embedding.
    np.testing.assert_allclose(taste, 0.05 * catalog.embeddings[1], atol=1e-4)  # state vectors may be half precision
    store = MemoryStore()
    first = asyncio.run(write_seed(store, "bob", taste))
    assert first.version == 1 and first.events == 0
    (stored,) = asyncio.run(store.get_states(["bob"]))
    np.testing.assert_allclose(stored.taste, taste)
    second = asyncio.run(write_seed(store, "bob", 2 * taste))
    assert second.version == 2  # an existing state keeps its session and moves on


def test_the_command_seeds_a_store_or_says_what_is_wrong(named_bundle, tmp_path, capsys):
    path = account_data(tmp_path / "StreamingHistory0.json")
    assert main([str(path), "--user", "carol", "--bundle", str(named_bundle), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "matched 3 of 4 plays" in out and "(1 as skips)" in out

    bad = tmp_path / "StreamingHistory1.json"
    bad.write_text('{"not": "a list"}')
    assert main([str(bad), "--user", "carol", "--bundle", str(named_bundle)]) == 2
    assert "is not a list of plays" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text('[{"foo": 1}]')
    assert main([str(other), "--user", "carol", "--bundle", str(named_bundle)]) == 2
    assert "neither endTime/msPlayed nor ts/ms_played" in capsys.readouterr().err
    broken = tmp_path / "StreamingHistory2.json"
    broken.write_text("[{")
    assert main([str(broken), "--user", "carol", "--bundle", str(named_bundle)]) == 2
    assert "is not JSON" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidImport, match="unzipped 'my_spotify_data' folder"):
        read_history([empty], ImportReport())
    assert main([str(path), "--user", "bad\nuser", "--bundle", str(named_bundle)]) == 2
    assert "not a valid user id" in capsys.readouterr().err


def test_a_catalog_without_names_matches_nothing_and_says_so(quick_bundle, tmp_path, capsys):
    path = account_data(tmp_path / "StreamingHistory0.json")
    assert main([str(path), "--user", "dora", "--bundle", str(quick_bundle), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "no spotify_uri or artist_name/title" in captured.err and "matched 0 of 4" in captured.out
