"""A real Prometheus server as a child process: own config, own TSDB dir, a free loopback port.

Contract: ``start()`` writes ``prometheus.yml`` into ``run_dir`` (one static job per entry of ``targets``,
the given rule files, scrape and evaluation every ``interval_s``), starts the ``prometheus`` binary found
on PATH on ``127.0.0.1:<free port>`` and waits for ``/-/ready``; it raises ``StackError`` when the binary
is missing (install it with ``bash infra/prometheus/install.sh``) or does not become ready. It never uses
a system Prometheus that may listen on :9090.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from infra.ports import LOOPBACK, free_port, wait_until
from infra.process import ServiceProcess
from infra.prom_api import PrometheusClient
from streams.errors import StackError

INSTALL_HINT = "install it with `bash infra/prometheus/install.sh` (Debian package prometheus; root)"


def find_binary(name: str) -> str:
    """The path of ``name`` (``prometheus`` or ``promtool``) on PATH, or ``StackError`` saying how to install."""
    path = shutil.which(name)
    if path is None:
        raise StackError(f"`{name}` is not on PATH: {INSTALL_HINT}")
    return path


def scrape_config(targets: dict[str, list[str]], rule_files: list[Path], interval_s: float) -> dict[str, object]:
    """A Prometheus configuration: one job per ``targets`` key (``host:port`` strings), the rule files."""
    interval = f"{int(interval_s * 1000)}ms"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(p.resolve()) for p in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": hosts}]} for job, hosts in targets.items()],
    }


class PrometheusServer:
    """``prometheus`` scraping ``targets`` and evaluating ``rule_files``; logs to ``run_dir/prometheus.log``."""

    def __init__(
        self,
        run_dir: Path,
        targets: dict[str, list[str]],
        rule_files: list[Path],
        *,
        interval_s: float = 1.0,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.run_dir = run_dir
        self.targets = targets
        self.rule_files = rule_files
        self.interval_s = interval_s
        self.startup_timeout_s = startup_timeout_s
        self.port = 0
        self._process: ServiceProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def client(self) -> PrometheusClient:
        return PrometheusClient(self.url)

    def start(self) -> PrometheusServer:
        binary = find_binary("prometheus")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(self.targets, self.rule_files, self.interval_s)))
        self.port = free_port()
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.run_dir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--log.level=warn",
        ]
        self._process = ServiceProcess("prometheus", argv, self.run_dir / "prometheus.log", cwd=self.run_dir)
        self._process.start()
        process = self._process
        if not wait_until(
            self.client.ready, self.startup_timeout_s, interval_s=0.2, give_up=lambda: not process.running
        ):
            self.stop()
            raise StackError(f"prometheus did not become ready on {self.url}:\n{process.log_tail(30)}")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def log_tail(self, lines: int = 30) -> str:
        return self._process.log_tail(lines) if self._process is not None else ""
