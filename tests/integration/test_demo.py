"""README command 1: the demo shows recommendations changing after skips and likes, and Ctrl-C stops it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections import defaultdict

LINE = re.compile(r"^(user-\d+)\s+(PLAY|SKIP|LIKE)\s+(\S+) \(\S+\)\s+-> next: (.*?)\s+\[")


def test_demo_runs_and_stops_cleanly_on_ctrl_c(quick_bundle, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "infra.demo",
        "--model-dir",
        str(quick_bundle),
        "--run-dir",
        str(tmp_path / "run"),
        "--listeners",
        "20",
        "--featured",
        "2",
        "--rate",
        "40",
        "--summary-every",
        "3",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines, shown = [], defaultdict(list)
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if m := LINE.match(line):
                shown[m.group(1)].append((m.group(2), m.group(3), m.group(4)))
            summaries = [x for x in lines if x.startswith("-- ")]
            if min((len(v) for v in shown.values()), default=0) >= 12 and len(shown) == 2 and summaries:
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += rest.splitlines()
    output = "\n".join(lines)
    assert proc.returncode == 0, output
    assert "stopped; the broker, Redis, worker and API are shut down." in output, output
    assert len(shown) == 2, output
    for steps in shown.values():
        # Every line shows a list: the app saw the recommendations its event produced (an empty list is the wait
        # timing out, e.g. an on-demand list written over the worker's fresher one).
        assert all(nxt.strip() for _, _, nxt in steps), output
        # After every event the list shown is the fresh one, and it differs from the list before the event.
        assert all(track not in nxt.split(", ")[0] for _, track, nxt in steps), output
        changes = sum(1 for a, b in zip(steps, steps[1:], strict=False) if a[2] != b[2])
        assert changes >= len(steps) - 2, output
    kinds = {kind for steps in shown.values() for kind, _, _ in steps}
    assert "SKIP" in kinds and kinds & {"PLAY", "LIKE"}, output
    summary = [x for x in lines if x.startswith("-- ")][-1]
    assert re.search(r"p50 [\d.]+ ms\s+p95 [\d.]+ ms\s+p99 [\d.]+ ms", summary), summary
    assert "dead letters 0" in summary
