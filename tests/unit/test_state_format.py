"""Session state format v1 stays readable: a saved fixture written by v1 decodes to the same state."""

from pathlib import Path

import numpy as np

from streams.records import Like, Play, Skip
from streams.session import Dynamics, SessionState, apply_event, id_digest
from streams.state_codec import decode_state, encode_state

# The dynamics the fixture was written with (independent of today's defaults).
FIXTURE_DYNAMICS = Dynamics(decay=0.8, like_weight=2.0)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "state-v1.bin"


def reference_state() -> SessionState:
    items = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    s = SessionState.empty(4)
    events = [
        Play(event_id="a", user_id="u", track_id="t0", ts_ms=1_763_900_000_000, played_ms=200_000, session_id="s"),
        Skip(event_id="b", user_id="u", track_id="t1", ts_ms=1_763_900_200_000, played_ms=3_000, session_id="s"),
        Like(event_id="c", user_id="u", track_id="t2", ts_ms=1_763_900_210_000, session_id="s"),
    ]
    for offset, (i, e) in enumerate(zip(range(3), events, strict=True)):
        s = apply_event(s, e, i, items[i], FIXTURE_DYNAMICS, partition=2, offset=100 + offset)
    return s


def test_v1_fixture_still_decodes():
    stored = decode_state(FIXTURE.read_bytes())
    expected = reference_state()
    np.testing.assert_allclose(stored.pos, expected.pos, rtol=1e-6)
    np.testing.assert_allclose(stored.neg, expected.neg, rtol=1e-6)
    np.testing.assert_allclose(stored.taste, expected.taste, rtol=1e-6)
    assert stored.seen_ids == tuple(id_digest(x) for x in "abc") and stored.recent == (0, 1, 2)
    assert (stored.partition, stored.offset, stored.session_id) == (2, 102, "s")


def test_unknown_format_is_refused():
    import msgspec
    import pytest

    from streams.errors import StateFormatError

    raw = msgspec.msgpack.decode(encode_state(reference_state()))
    raw[0] = 2
    with pytest.raises(StateFormatError):
        decode_state(msgspec.msgpack.encode(raw))
    with pytest.raises(StateFormatError):
        decode_state(b"\x00garbage")
