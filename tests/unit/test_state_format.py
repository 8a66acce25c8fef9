"""Session state formats stay readable: saved fixtures written by v1 and v2 decode to the same state."""

from pathlib import Path

import numpy as np

from streams.records import Like, Play, Skip
from streams.session import Dynamics, SessionState, apply_event, id_digest, stream_position
from streams.state_codec import decode_state, encode_state

# The dynamics the fixture was written with (independent of today's defaults).
FIXTURE_DYNAMICS = Dynamics(decay=0.8, like_weight=2.0)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE = FIXTURES / "state-v1.bin"


def reference_state() -> SessionState:
    items = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    s = SessionState.empty(4)
    events = [
        Play(event_id="a", user_id="u", track_id="t0", ts_ms=1_763_900_000_000, played_ms=200_000, session_id="s"),
        Skip(event_id="b", user_id="u", track_id="t1", ts_ms=1_763_900_200_000, played_ms=3_000, session_id="s"),
        Like(event_id="c", user_id="u", track_id="t2", ts_ms=1_763_900_210_000, session_id="s"),
    ]
    for offset, (i, e) in enumerate(zip(range(3), events, strict=True)):
        s = apply_event(s, e, i, items[i], FIXTURE_DYNAMICS, partition=2, position=stream_position(100 + offset))
    return s


def test_v1_fixture_still_decodes():
    check_fixture(decode_state(FIXTURE.read_bytes()))


def test_v2_fixture_decodes_and_matches_what_this_code_writes():
    raw = (FIXTURES / "state-v2.bin").read_bytes()
    check_fixture(decode_state(raw))
    assert encode_state(reference_state()) == raw  # the writer still produces v2 byte for byte


def test_wide_catalog_indices_round_trip():
    s = reference_state()
    wide = SessionState(pos=s.pos, neg=s.neg, taste=s.taste, recent=(3, 70_000, 5), outcomes=(0, 1, 2))
    assert decode_state(encode_state(wide)).recent == (3, 70_000, 5)


def check_fixture(stored: SessionState) -> None:
    expected = reference_state()
    np.testing.assert_allclose(stored.pos, expected.pos, rtol=1e-3)  # v1 kept float32, the rule now float16
    np.testing.assert_allclose(stored.neg, expected.neg, rtol=1e-3)
    np.testing.assert_allclose(stored.taste, expected.taste, rtol=1e-3)
    assert stored.seen_ids == tuple(id_digest(x) for x in "abc") and stored.recent == (0, 1, 2)
    assert (stored.partition, stored.position, stored.session_id) == (2, stream_position(102), "s")


def test_unknown_format_is_refused():
    import msgspec
    import pytest

    from streams.errors import StateFormatError

    raw = msgspec.msgpack.decode(encode_state(reference_state()))
    raw[0] = 99
    with pytest.raises(StateFormatError):
        decode_state(msgspec.msgpack.encode(raw))
    with pytest.raises(StateFormatError):
        decode_state(b"\x00garbage")
