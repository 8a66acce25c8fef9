"""segue's Grafana dashboards and Prometheus rules as data: every PromQL expression they contain.

Files (relative to the repository root): ``infra/grafana/dashboards/*.json`` (Grafana dashboard JSON),
``infra/prometheus/rules/*.yml`` (recording and alerting rules). Dashboard queries may use Grafana's
``$__rate_interval``; ``expand`` substitutes a fixed window so Prometheus itself can evaluate them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

INFRA = Path(__file__).resolve().parent
DASHBOARD_DIR = INFRA / "grafana" / "dashboards"
RULES_DIR = INFRA / "prometheus" / "rules"
PROMETHEUS_CONFIG = INFRA / "prometheus" / "prometheus.yml"
DATASOURCE_UID = "segue-prometheus"

Kind = Literal["panel", "record", "alert"]


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it comes from (``source`` names the file and panel or rule)."""

    kind: Kind
    source: str
    expr: str
    legend: str = ""
    instant: bool = False


def expand(expr: str, rate_interval: str = "1m") -> str:
    """``expr`` with Grafana's interval variables replaced by a fixed range."""
    for var in ("$__rate_interval", "${__rate_interval}", "$__interval", "${__interval}"):
        expr = expr.replace(var, rate_interval)
    return expr


def dashboard_files(directory: Path = DASHBOARD_DIR) -> list[Path]:
    return sorted(directory.glob("*.json"))


def rule_files(directory: Path = RULES_DIR) -> list[Path]:
    return sorted(directory.glob("*.yml"))


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel with targets, including those inside rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panels({"panels": panel.get("panels", [])})
        elif panel.get("targets"):
            yield panel


def panel_queries(path: Path) -> list[Query]:
    dashboard = load_dashboard(path)
    return [
        Query(
            "panel",
            f"{path.name}: {panel['title']} [{target.get('refId', '?')}]",
            target["expr"],
            target.get("legendFormat", ""),
            bool(target.get("instant", False)),
        )
        for panel in panels(dashboard)
        for target in panel["targets"]
    ]


def rule_queries(path: Path) -> list[Query]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    out: list[Query] = []
    for group in data.get("groups", []):
        for rule in group.get("rules", []):
            kind: Kind = "alert" if "alert" in rule else "record"
            out.append(Query(kind, f"{path.name}: {rule.get('alert') or rule.get('record')}", str(rule["expr"])))
    return out


def alert_rules(directory: Path = RULES_DIR) -> list[dict[str, Any]]:
    """Every alerting rule (as the YAML mapping) in the rule files."""
    rules: list[dict[str, Any]] = []
    for path in rule_files(directory):
        for group in yaml.safe_load(path.read_text(encoding="utf-8")).get("groups", []):
            rules.extend(r for r in group.get("rules", []) if "alert" in r)
    return rules


def all_queries(dashboards: Path = DASHBOARD_DIR, rules: Path = RULES_DIR) -> list[Query]:
    """Every PromQL expression: dashboard panel targets, recording rules and alert rules."""
    found = [q for p in dashboard_files(dashboards) for q in panel_queries(p)]
    return found + [q for p in rule_files(rules) for q in rule_queries(p)]


if __name__ == "__main__":
    for query in all_queries():
        print(f"{query.kind:6} {query.source}\n       {' '.join(query.expr.split())}")
