import json

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.errors import InvalidEvent
from streams.records import (
    MAX_EVENT_BYTES,
    Like,
    Play,
    Recommendations,
    RecommendedTrack,
    Skip,
    decode_event,
    decode_recommendations,
    encode_event,
    encode_record,
    event_type,
    rounded,
)

BASE = {"event_id": "e-1", "user_id": "u-1", "track_id": "trk-1", "ts_ms": 1_700_000_000_000}


def raw(**fields):
    return json.dumps({**BASE, **fields}).encode()


def test_each_type_decodes_to_its_record():
    assert isinstance(decode_event(raw(type="play", played_ms=180_000)), Play)
    assert isinstance(decode_event(raw(type="skip", played_ms=4_000, position_ms=4_000)), Skip)
    like = decode_event(raw(type="like", context={"device": "mobile", "source": "radio"}))
    assert isinstance(like, Like) and like.context.device == "mobile" and event_type(like) == "like"


def test_round_trip_is_lossless():
    e = decode_event(raw(type="skip", played_ms=1, session_id="s-9", duration_ms=200_000))
    assert decode_event(encode_event(e)) == e


def test_unknown_fields_are_ignored_for_forward_compatibility():
    assert decode_event(raw(type="like", added_in_v2="x")).event_id == "e-1"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b"", "malformed_json"),
        (raw(type="pause"), "unknown_type"),
        (
            json.dumps({k: v for k, v in BASE.items() if k != "user_id"} | {"type": "like"}).encode(),
            "missing_field",
        ),
        (raw(type="play"), "missing_field"),
        (raw(type="play", played_ms=-5), "invalid_field"),
        (raw(type="like", user_id=""), "invalid_field"),
        (raw(type="like", ts_ms=10), "invalid_field"),
        (raw(type="like", user_id=123), "invalid_field"),
        (raw(type="like", track_id="x" * 10_000), "oversized"),
        (b"[1, 2]", "invalid_field"),
        (raw(type="like", user_id="u\n"), "invalid_field"),
        (raw(type="like", event_id="e\n"), "invalid_field"),
        (raw(type="like", context={"device": "mobile\n"}), "invalid_field"),
        (raw(type="like").replace(b'"u-1"', b'"u-\xed\xa0\x80"'), "malformed_json"),  # an encoded surrogate
        (raw(type="like").replace(b'"u-1"', b'"u-\xff"'), "malformed_json"),
    ],
)
def test_bad_input_gets_a_reason(payload, reason):
    with pytest.raises(InvalidEvent) as info:
        decode_event(payload)
    assert info.value.reason == reason
    assert info.value.detail


def test_size_limit_is_exact():
    filler = "x" * 100
    ok = raw(type="like", session_id=filler)
    assert len(ok) < MAX_EVENT_BYTES
    decode_event(ok)


def test_recommendations_round_trip():
    r = Recommendations(
        user_id="u",
        items=[RecommendedTrack("t", 0.5, 1)],
        model_version="m1",
        provider="CPUExecutionProvider",
    )
    assert decode_recommendations(encode_record(r)) == r
    assert msgspec.json.decode(encode_record(r))["v"] == 1


def test_batch_messages_decode_event_by_event():
    from streams.errors import InvalidEvent
    from streams.records import MAX_BATCH_EVENTS, decode_message

    good = b'{"type":"like","event_id":"e1","user_id":"u","track_id":"t","ts_ms":1763900000000}'
    out = decode_message(b" [" + good + b', {"type":"nap"}, ' + good + b"]")
    assert [isinstance(e, InvalidEvent) for _, e in out] == [False, True, False]
    assert out[1][1].reason == "unknown_type" and out[0][0] == good
    assert decode_message(good)[0][1].event_id == "e1"  # a single event is a batch of one
    surrogate = good.replace(b'"u"', b'"u\xed\xa0\x80"')  # not UTF-8: that event alone is rejected
    out = decode_message(b"[" + good + b"," + surrogate + b"]")
    assert [getattr(e, "reason", None) for _, e in out] == [None, "malformed_json"]
    too_many = b"[" + b",".join([good] * (MAX_BATCH_EVENTS + 1)) + b"]"
    for raw, reason in (
        (b"[]", "malformed_json"),
        (b"[1,", "malformed_json"),
        (too_many, "oversized"),
        (None, "malformed_json"),
    ):
        (only,) = decode_message(raw)
        assert isinstance(only[1], InvalidEvent) and only[1].reason == reason, raw[:20] if raw else raw


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6), max_size=30),
    st.sampled_from([4, 5]),
)
def test_rounded_is_round_for_float32_values(values: list[float], digits: int) -> None:
    got = rounded(np.asarray(values, np.float32), digits)
    assert got == [round(v, digits) for v in values]
    assert [repr(g) for g in got] == [repr(round(v, digits)) for v in values]  # the same JSON text


def test_rounded_ties_go_to_even_as_round_does() -> None:
    ties = np.asarray([0.5, 1.5, 2.5, -0.5, 0.125, 0.375], np.float32)  # exact binary halves at 2 digits: 0.125
    assert rounded(ties / 1e4, 4) == [round(float(v), 4) for v in (ties / 1e4).astype(np.float32)]
    assert rounded(np.asarray([0.125, 0.375, 2.5e-05], np.float32), 2) == [0.12, 0.38, 0.0]
