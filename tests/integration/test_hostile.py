"""Over 10,000 generated hostile events through the real broker and worker: every one reaches the dead-letter
topic with a reason and is counted, and the good events between them are applied."""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from infra.prom_text import total
from streams.records import REASONS, decode_dead_letter
from tests.integration.helpers import eventually, read_topic, start_worker, states, worker_settings

NOW = time.time_ns() // 1_000_000
TRACK = "trk-00001"
BASE = {"type": "play", "event_id": "x", "user_id": "hostile", "track_id": TRACK, "ts_ms": NOW, "played_ms": 1000}

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
not_a_string = json_values.filter(lambda v: not isinstance(v, str))
not_an_int = json_values.filter(lambda v: not isinstance(v, int) or isinstance(v, bool))
not_an_object = json_values.filter(lambda v: v is not None and not isinstance(v, dict))
WRONG = {
    "event_id": not_a_string,
    "user_id": not_a_string,
    "track_id": not_a_string,
    "ts_ms": not_an_int,
    "played_ms": not_an_int,
    "context": not_an_object,
    "type": json_values.filter(lambda v: v not in ("play", "skip", "like")),
}


def _dump(d: dict) -> bytes:
    return json.dumps(d).encode()


not_json = st.binary(max_size=200).filter(lambda b: not _is_object(b))
wrong_type = st.sampled_from(sorted(WRONG)).flatmap(lambda f: WRONG[f].map(lambda v: _dump({**BASE, f: v})))
huge = st.integers(129, 6000).map(lambda n: _dump({**BASE, "user_id": "u" * n}))
non_finite = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]).map(
    lambda x: _dump(BASE).replace(b'"played_ms": 1000', b'"played_ms": ' + x.encode())
)
unknown_track = (
    st.text(min_size=1, max_size=40)
    .filter(lambda t: t.strip() and t != TRACK and t.isprintable())
    .map(lambda t: _dump({**BASE, "track_id": "no-such-" + t}))
)
bad_time = st.one_of(
    st.integers(0, 1_000_000_000_000 - 1),  # before 2001
    st.integers(NOW + 2 * 86_400_000, 4_102_444_800_000),  # days in the future
    st.integers(4_102_444_800_001, 2**62),  # after 2100
).map(lambda ts: _dump({**BASE, "ts_ms": ts}))
control_chars = st.text(alphabet=st.characters(max_codepoint=31), min_size=1, max_size=5).map(
    lambda c: _dump({**BASE, "user_id": "u" + c})
)
lone_surrogate = st.sampled_from([b"\\ud800", b"\\udfff", b"\\ud83d"]).map(
    lambda s: _dump(BASE).replace(b'"hostile"', b'"host' + s + b'ile"')
)
# Raw bytes that are not UTF-8 inside a string: an encoded surrogate, a stray continuation byte, a cut sequence.
not_utf8 = st.sampled_from([b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\x80", b"\xff", b"\xc3", b"\xe2\x82"]).map(
    lambda s: _dump(BASE).replace(b'"hostile"', b'"host' + s + b'ile"')
)
missing = st.sampled_from(["event_id", "user_id", "track_id", "ts_ms", "played_ms", "type"]).map(
    lambda f: _dump({k: v for k, v in BASE.items() if k != f})
)
unknown_type = (
    st.text(max_size=10).filter(lambda t: t not in ("play", "skip", "like")).map(lambda t: _dump({**BASE, "type": t}))
)
hostile = st.one_of(
    not_json,
    wrong_type,
    huge,
    non_finite,
    unknown_track,
    bad_time,
    control_chars,
    lone_surrogate,
    not_utf8,
    missing,
    unknown_type,
)


def _is_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def generate(n_payloads: int = 11_000, batch: int = 25) -> list[bytes]:
    """At least ``n_payloads`` hostile payloads drawn by hypothesis (``batch`` per example). Hypothesis may end a run
    early (too many draws over its buffer or filtered out), so runs repeat until there are enough."""
    drawn: list[bytes] = []

    @settings(max_examples=n_payloads // batch, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(hostile, min_size=batch, max_size=batch))
    def draw(examples: list[bytes]) -> None:
        drawn.extend(examples)

    for _ in range(10):
        draw()
        if len(drawn) >= n_payloads:
            break
    return drawn


def test_hostile_events_are_all_dead_lettered(embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path):
    payloads = generate()
    assert len(payloads) >= 10_000
    settings_ = worker_settings(embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path)
    worker = start_worker(settings_, tmp_path)
    producer = KafkaProducer(bootstrap_servers=embedded_stack.kafka.servers, linger_ms=20)
    sent = {"hostile": 0, "good": 0, "duplicate": 0}
    futures = []
    try:
        for payload in payloads:
            futures.append((producer.send(unique_topics.events, key=b"hostile", value=payload), payload))
            sent["hostile"] += 1
            if sent["hostile"] % 10 == 0:  # good events between the bad ones, and retries of some of them
                n = sent["good"]
                user = f"good-{n % 20}"
                good = _dump({**BASE, "event_id": f"good-{n}", "user_id": user, "ts_ms": NOW + n})
                producer.send(unique_topics.events, key=user.encode(), value=good)
                sent["good"] += 1
                if n % 7 == 0:
                    producer.send(unique_topics.events, key=user.encode(), value=good)
                    sent["duplicate"] += 1
        producer.flush()
        letters = read_topic(
            embedded_stack.kafka.bootstrap_servers, unique_topics.dead_letters, 4, expected=len(payloads), timeout_s=120
        )
        decoded = [decode_dead_letter(m.value) for m in letters]
        lettered = {d.offset for d in decoded}
        missing = [payload for f, payload in futures if f.get().offset not in lettered]
        assert not missing, f"{len(missing)} hostile events were not dead-lettered: {missing[:5]}"
        assert len(decoded) == len(payloads)
        assert all(d.reason in REASONS and d.detail for d in decoded)
        reasons = {r: sum(d.reason == r for d in decoded) for r in REASONS}
        print(f"\nhostile={sent['hostile']} good={sent['good']} duplicates={sent['duplicate']} dead_letters={reasons}")

        users = [f"good-{i}" for i in range(20)]
        eventually(
            lambda: sum(s.version for s in states(settings_.redis, users).values() if s) == sent["good"], timeout_s=120
        )
        text = worker.metrics()
        assert total(text, "segue_dead_letters_total") == sent["hostile"]
        assert total(text, "segue_events_total", outcome="dead_letter") == sent["hostile"]
        assert total(text, "segue_events_total", outcome="applied") == sent["good"]
        assert total(text, "segue_events_total", outcome="duplicate") == sent["duplicate"]
        assert worker.process.running
    finally:
        producer.close()
        worker.stop()
