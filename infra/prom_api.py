"""A minimal client of the Prometheus HTTP API (``/api/v1/query``, ``/api/v1/query_range``), stdlib only."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from streams.errors import StackError


@dataclass(frozen=True)
class PrometheusClient:
    """Queries a Prometheus server at ``url`` (e.g. ``http://127.0.0.1:9090``)."""

    url: str
    timeout_s: float = 10.0

    def _get(self, path: str, params: dict[str, str]) -> Any:
        full = f"{self.url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(full, timeout=self.timeout_s) as response:  # noqa: S310 - operator's URL
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error in the body
            body = json.loads(exc.read() or b"{}")
        except (OSError, ValueError) as exc:
            raise StackError(f"Prometheus at {self.url} did not answer {path}: {exc}") from exc
        if body.get("status") != "success":
            raise StackError(f"Prometheus rejected {params.get('query')!r}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) of ``expr``; raise ``StackError`` on a PromQL error."""
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        data = self._get("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
        """Matrix of ``expr`` from ``start`` to ``end`` (Unix seconds): ``[{"metric", "values": [[t, "v"]]}]``."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"}
        result: list[dict[str, Any]] = self._get("/api/v1/query_range", params)["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (``/api/v1/rules``) with its ``health`` and ``lastError``."""
        groups = self._get("/api/v1/rules", {})["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url.rstrip('/')}/-/ready", timeout=1.0) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False
