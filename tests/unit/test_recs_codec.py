"""Stored recommendations, format v2: catalog indices instead of ids, the same record back."""

from __future__ import annotations

import msgspec
import pytest

from streams.errors import StateFormatError
from streams.records import Reason, Recommendations, RecommendedTrack, encode_record
from streams.recs_codec import RecsCodec, model_version_of

IDS = [f"spotify:track:{i:022d}" for i in range(300)]
CODES = ["similar_to_liked", "avoids_skipped", "exploration"]


def record(items: list[RecommendedTrack], version: str = "m1") -> Recommendations:
    return Recommendations(
        user_id="u",
        items=items,
        model_version=version,
        provider="CPUExecutionProvider",
        session_id="u:1763900000000",
        event_id="0123456789abcdef0123456789abcdef",
        event_ms=1_763_900_000_123,
        generated_ms=1_763_900_000_140,
    )


def twenty() -> Recommendations:
    items = []
    for r in range(20):
        why = None
        if r % 3 == 0:
            why = Reason(CODES[r % 2], IDS[(r * 7) % 300], round(0.01 * r - 0.05, 4))
        elif r % 3 == 1:
            why = Reason("exploration")
        items.append(RecommendedTrack(IDS[(r * 13) % 300], round(3.5 - r * 0.123457, 5), r + 1, why))
    return record(items)


def test_v2_round_trip_is_exact_and_small():
    codec = RecsCodec(IDS, "m1", CODES)
    recs = twenty()
    raw = codec.encode(recs)
    assert raw[:1] != b"{" and model_version_of(raw) == "m1"
    assert codec.decode("u", raw) == recs
    assert len(raw) < 400 < len(encode_record(recs)) / 3  # ~4x smaller than the JSON record


def test_other_model_versions_and_missing_tables_decode_to_none():
    raw = RecsCodec(IDS, "m1", CODES).encode(twenty())
    assert RecsCodec(IDS, "m2", CODES).decode("u", raw) is None
    assert RecsCodec().decode("u", raw) is None


def test_the_table_travels():
    codec = RecsCodec(IDS, "m1", CODES)
    raw = codec.encode(twenty())
    assert RecsCodec.from_payload("m1", codec.catalog_payload()).decode("u", raw) == twenty()


def test_what_the_compact_form_cannot_hold_is_stored_as_json():
    codec = RecsCodec(IDS, "m1", CODES)
    unknown_track = record([RecommendedTrack("not-in-catalog", 1.0, 1)])
    unknown_code = record([RecommendedTrack(IDS[1], 1.0, 1, Reason("new_code"))])
    other_model = record([RecommendedTrack(IDS[1], 1.0, 1)], version="m0")
    for recs in (unknown_track, unknown_code, other_model):
        raw = codec.encode(recs)
        assert raw[:1] == b"{" and codec.decode("u", raw) == recs
    assert RecsCodec().encode(twenty())[:1] == b"{"  # no catalog: v1 JSON


def test_wide_catalogs_use_32_bit_indices():
    ids = [f"t{i}" for i in range(70_000)]
    codec = RecsCodec(ids, "m1", CODES)
    recs = record([RecommendedTrack("t69999", 0.5, 1), RecommendedTrack("t3", 0.25, 2)])
    assert codec.decode("u", codec.encode(recs)) == recs


def test_unknown_formats_are_refused():
    raw = msgspec.msgpack.decode(RecsCodec(IDS, "m1", CODES).encode(twenty()))
    raw[0] = 9
    with pytest.raises(StateFormatError):
        RecsCodec(IDS, "m1", CODES).decode("u", msgspec.msgpack.encode(raw))
    with pytest.raises(StateFormatError):
        model_version_of(b"\x01garbage")


def test_encoding_from_the_ranking_gives_the_records_bytes(quick_bundle):
    """The worker stores lists straight from its rankings; they must read back as the published record."""
    import numpy as np

    from serving.catalog import Catalog
    from serving.explain import REASON_CODES, Explanations
    from serving.rescore import Ranking, to_record

    catalog = Catalog.load(quick_bundle)
    codec = RecsCodec(catalog.track_ids, catalog.model_version, REASON_CODES)
    rng = np.random.default_rng(3)
    for with_reasons in (True, False):
        for _ in range(30):
            idx = rng.choice(len(catalog), size=20, replace=False)
            scores = (rng.normal(size=20) * 3).astype(np.float32)
            why = None
            if with_reasons:
                cited = np.where(rng.random(20) < 0.5, rng.integers(0, len(catalog), 20), -1)
                codes = rng.integers(0, len(REASON_CODES), 20).astype(np.int8)
                why = Explanations(codes, cited, rng.normal(size=20).astype(np.float32))
            ranking = Ranking(idx, scores, False, why)
            rec = to_record(
                "u",
                ranking,
                catalog.track_ids,
                catalog.model_version,
                "CPUExecutionProvider",
                generated_ms=5,
                event_id="e",
            )
            raw = codec.encode_ranked(rec, ranking)
            assert codec.decode("u", raw) == rec
