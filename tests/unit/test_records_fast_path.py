"""decode_event's fast path (no pattern checks where the bytes prove them) against its strict decoder: the same
records for the same payloads, the same reasons and messages for the same faults."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from unittest.mock import patch

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import records
from streams.errors import InvalidEvent
from streams.records import MAX_EVENT_BYTES, Event, decode_event, decode_message

TYPICAL = (
    b'{"type":"play","event_id":"e-123456789-abc","user_id":"u-0001234","track_id":"t-01234",'
    b'"ts_ms":1763960000000,"session_id":"s-1","played_ms":180000,"context":{"device":"mobile","source":"radio"}}'
)
TEXT_FIELDS = ("event_id", "user_id", "track_id", "session_id", "context.device", "context.source")

# Characters each rule turns on: controls (rejected), DEL (rejected, and legal raw in JSON), C1 controls (accepted
# by _NO_CONTROL), the escape and quote characters, multi-byte UTF-8, and the label alphabet's edges.
TRICKY = '\x00\x01\t\n\x1f\x7f\x80\x9f\\"/ é€\u2028\ufeff😀:.-_Az09'
CLEAN = 'abcXYZ0189_.:-/ é€\x80\x9f\u2028😀\\"'  # no controls: valid ids, escaped or not (backslash, quote)
LENGTHS = [31, 32, 33, 63, 64, 65, 127, 128, 129]
texts = st.one_of(
    st.text(st.sampled_from(CLEAN), min_size=1, max_size=12),
    st.text(st.one_of(st.sampled_from(TRICKY), st.characters()), max_size=8),
    # Lengths at the limits of labels (32), event ids (64) and ids (128), in one- to four-byte characters.
    st.builds(lambda c, n: c * n, st.sampled_from("aé€😀\x7f"), st.sampled_from(LENGTHS)),
)
labels = st.one_of(
    st.text(st.sampled_from("abcXYZ0189_.:-"), min_size=1, max_size=12),
    st.sampled_from(["mobile", "radio", "smart_speaker", "a:b.c-d", "mobilé", "mobile\x7f", "mo bile", "\\"]),
    texts,
)
others = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2))
VALID = {"event_id": "e-1", "user_id": "u-1", "track_id": "t-1", "ts_ms": 1_763_960_000_000, "played_ms": 1_000}
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(["play", "skip", "like", "pause", 1]),
    "v": st.sampled_from([1, 2]),
    "event_id": texts,
    "user_id": texts,
    "track_id": texts,
    "session_id": st.one_of(texts, st.none()),
    "ts_ms": st.one_of(st.sampled_from([999_999_999_999, 1_763_960_000_000, 4_102_444_800_001]), st.integers()),
    "played_ms": st.one_of(st.sampled_from([-1, 0, 86_400_000, 86_400_001]), st.integers()),
    "position_ms": st.integers(-1, 86_400_001),
    "duration_ms": st.integers(-1, 86_400_001),
}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """Objects shaped like events: a valid one with some fields changed (often to text with escapes, DEL or
    controls), removed or given another JSON type, a context perhaps, and unknown fields mixed in."""
    event: dict[str, Any] = {"type": draw(st.sampled_from(["play", "skip", "like"])), **VALID}
    for key in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=4)):
        change = draw(st.integers(0, 9))
        event[key] = draw(FIELDS[key]) if change > 1 else draw(others) if change else None
        if event[key] is None and key not in ("session_id", "position_ms", "duration_ms"):
            del event[key]
    if draw(st.booleans()):
        context = draw(st.dictionaries(st.sampled_from(["device", "source", "extra"]), labels, max_size=3))
        event["context"] = context if draw(st.integers(0, 9)) else draw(others)
    event.update(draw(st.dictionaries(texts, st.one_of(texts, st.integers(), others), max_size=2)))
    return event


def _encode(event: dict[str, Any], how: str) -> bytes | str:
    if how == "ascii":  # non-ASCII as \u escapes
        return json.dumps(event).encode()
    if how == "utf-8":  # raw UTF-8, DEL raw, controls escaped
        return json.dumps(event, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if how == "msgspec":  # as the SDK writes events; it cannot write lone surrogates
        try:
            return msgspec.json.encode(event)
        except UnicodeEncodeError:
            return _encode(event, "utf-8")
    return json.dumps(event, ensure_ascii=False)  # a str payload


@st.composite
def payloads(draw: st.DrawFn) -> bytes | str:
    """An event encoded one of several ways, then perhaps with raw bytes (controls, DEL, a backslash, invalid
    UTF-8) written over or into it."""
    raw = _encode(draw(events()), draw(st.sampled_from(["ascii", "utf-8", "msgspec", "str"])))
    if isinstance(raw, str) or draw(st.integers(0, 3)):
        return raw
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        byte = draw(st.sampled_from([0x00, 0x0A, 0x1F, 0x22, 0x5C, 0x7F, 0x80, 0xC3, 0xED, 0xFF]))
        data[at : at + draw(st.integers(0, 1))] = bytes([byte])
    return bytes(data)


def _outcome(call: Callable[[], Event]) -> tuple[Any, ...]:
    try:
        event = call()
    except InvalidEvent as exc:
        return ("invalid", exc.reason, exc.detail)
    except Exception as exc:  # noqa: BLE001 - anything else the decoder lets through must match too
        return ("raised", type(exc), str(exc))
    return ("event", type(event), msgspec.structs.asdict(event), event)


def _strictly(call: Callable[[], Any]) -> Any:
    """``call()`` with every event taking the strict decoder."""
    with patch.object(records, "_ids_are_clean", lambda raw: False):
        return call()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads())
def test_fast_and_strict_decoders_agree(raw: bytes | str) -> None:
    if len(raw) > MAX_EVENT_BYTES:
        return
    expected = _strictly(lambda: _outcome(lambda: decode_event(raw)))
    assert _outcome(lambda: decode_event(raw)) == expected
    if isinstance(raw, bytes):
        assert _outcome(lambda: decode_event(bytearray(raw))) == expected
        assert _outcome(lambda: decode_event(memoryview(raw))) == expected  # never searched: the strict decoder


def _message_outcome(raw: bytes) -> list[tuple[bytes, tuple[Any, ...]]] | tuple[Any, ...]:
    def result(value: Event | InvalidEvent) -> tuple[Any, ...]:
        if isinstance(value, InvalidEvent):
            return ("invalid", value.reason, value.detail)
        return ("event", type(value), value)

    try:
        return [(payload, result(value)) for payload, value in decode_message(raw)]
    except Exception as exc:  # noqa: BLE001 - e.g. UnicodeDecodeError for an encoded surrogate, as before
        return ("raised", type(exc), str(exc))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.builds(_encode, events(), st.sampled_from(["ascii", "utf-8", "msgspec"])), min_size=1, max_size=8))
def test_fast_and_strict_decoders_agree_on_batches(events: list[bytes]) -> None:
    batch = b"[" + b",".join(events) + b"]"
    assert _message_outcome(batch) == _strictly(lambda: _message_outcome(batch))


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("bad", [b"\\u0001", b"\\n", b"\\u007f", b"\x7f", b"\\u007F"])
def test_every_text_field_rejects_control_characters(field: str, bad: bytes) -> None:
    event = json.loads(TYPICAL)
    parent, _, name = field.rpartition(".")
    (event[parent] if parent else event)[name] = "ok"
    raw = json.dumps(event).encode().replace(b'"ok"', b'"o' + bad + b'k"')
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw)
    assert info.value.reason == "invalid_field"
    assert "matching regex" in info.value.detail and f"`$.{field}`" in info.value.detail


def test_clean_events_skip_the_strict_decoder() -> None:
    def no_strict(raw: object) -> Event:
        raise AssertionError("took the strict decoder")

    with patch.object(records, "_decode_strict", no_strict):
        assert decode_event(TYPICAL).context.device == "mobile"
        assert decode_event(TYPICAL.decode()).user_id == "u-0001234"
        assert decode_event(TYPICAL.replace(b'"u-0001234"', '"u-\u00e9\u0085"'.encode())).user_id == "u-\xe9\x85"


def _undescribed(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _undescribed(v) for k, v in schema.items() if k != "description"}
    if isinstance(schema, list):
        return [_undescribed(v) for v in schema]
    return schema


def test_strict_twins_are_the_records_with_their_patterns_checked() -> None:
    # The same names, fields, limits, defaults and tags (the twins have no docstrings).
    assert _undescribed(msgspec.json.schema(records._strict_decoder.type)) == _undescribed(msgspec.json.schema(Event))
    for record, twin in records._STRICT.items():
        assert [f.name for f in msgspec.structs.fields(twin)] == [f.name for f in msgspec.structs.fields(record)]
    escaped = TYPICAL.replace(b"u-0001234", b"u-\\u00e9")  # a clean escape: strict decoder, the same record
    event = decode_event(escaped)
    assert type(event) is records.Play and type(event.context) is records.Context and event.user_id == "u-\xe9"
