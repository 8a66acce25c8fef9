"""Where the worker's time goes under load: py-spy samples, summarised by stage.

``Profiler`` runs ``py-spy record --format raw`` (collapsed stacks) against a process for a while; ``summarise``
attributes each sample to the first stage found walking from the innermost frame outwards, so time in numpy
under ``ExactRetriever.search`` counts as retrieval and time in aiokafka under Faust counts as Kafka client.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

# (stage, substrings of a frame "function (file:line)"), checked per frame from the innermost outwards.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ONNX Runtime (model call)", ("onnxruntime/", "OnnxScorer.score")),
    ("retrieval (matmul, exclusion, argpartition)", ("ExactRetriever.search",)),
    ("rescoring glue (query vectors, context, stacking, sort)", ("Rescorer.rank", "Rescorer.rank_fallback")),
    ("building recommendation records", ("to_record",)),
    ("session rule (fold_events, apply_event)", ("streams/session_batch.py", "apply_event", "streams/session.py")),
    ("state codec (msgpack)", ("state_codec.py",)),
    ("event decode/validate + record encode (msgspec JSON)", ("decode_event", "encode_record", "records.py")),
    ("Redis client (redis-py asyncio)", ("redis/",)),
    ("Prometheus metrics", ("prometheus_client/",)),
    ("Kafka produce (publishing recommendations)", ("aiokafka/producer/", "Producer.send (faust")),
    ("Kafka fetch (aiokafka consumer)", ("aiokafka/consumer/", "faust/transport/drivers/aiokafka.py")),
    ("pipeline bookkeeping (streams/pipeline.py)", ("streams/pipeline.py",)),
    ("agent: publish + lag (streams/agents.py)", ("streams/agents.py",)),
    ("metrics HTTP server (scrapes)", ("socketserver.py", "wsgiref/", "http/server.py")),
    ("Faust/mode per-event machinery", ("faust/", "mode/services.py", "mode/utils", "venusian")),
)
IDLE: tuple[str, ...] = ("Selector.select (selectors.py", "Condition.wait (threading.py", "_worker (concurrent")
TRANSPARENT: tuple[str, ...] = ("asyncio/", "selectors.py", "threading.py", "concurrent/futures/", "functools.py")
LOOP = "asyncio event loop (scheduling, callbacks, task creation)"
WAITING = "waiting (select/condition; idle)"


def stage_of(stack: str) -> str:
    """The stage of one sample: the innermost frame that names a stage decides (asyncio/threading plumbing
    and library helpers such as numpy are looked through)."""
    frames = stack.split(";")
    if frames and any(n in frames[-1] for n in IDLE):
        return WAITING
    for frame in reversed(frames):
        if any(n in frame for n in TRANSPARENT):
            continue
        for stage, needles in STAGES:
            if any(n in frame for n in needles):
                return stage
    if any("aiokafka/" in f for f in frames):
        return "Kafka client (other)"
    return LOOP if any("mode/worker.py" in f for f in frames) else "other"


def summarise(raw_text: str) -> list[tuple[str, int, float]]:
    """(stage, samples, share) from py-spy raw output, largest first."""
    counts: Counter[str] = Counter()
    for line in raw_text.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[stage_of(stack)] += int(n)
    total = sum(counts.values()) or 1
    return [(s, c, c / total) for s, c in counts.most_common()]


class Profiler:
    """``py-spy record`` of ``pid`` for ``seconds`` into ``out`` (collapsed stacks); a no-op without py-spy."""

    def __init__(self, pid: int, seconds: float, out: Path) -> None:
        self.out = out
        self._proc: subprocess.Popen | None = None
        exe = shutil.which("py-spy")
        if exe is None:
            self.error: str | None = "py-spy not installed (pip install py-spy)"
            return
        self.error = None
        cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "100"]
        cmd += ["--format", "raw", "--nonblocking", "--output", str(out)]
        self._log = (out.parent / "py-spy.log").open("w")
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)

    def wait(self, timeout_s: float) -> list[tuple[str, int, float]]:
        """Wait for py-spy to finish and return the summary (empty if nothing was recorded)."""
        if self._proc is None:
            return []
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        self._log.close()
        if not self.out.is_file():
            self.error = f"py-spy wrote nothing; see {self.out.parent / 'py-spy.log'}"
            return []
        return summarise(self.out.read_text())
