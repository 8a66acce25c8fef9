"""Render segue's Grafana dashboards as PNG pictures from a Prometheus server (no Grafana needed).

``python -m infra.render_dashboards --prometheus http://127.0.0.1:9090 --out DIR [--minutes 60]`` writes one
PNG per dashboard in ``infra/grafana/dashboards``: its panels laid out on Grafana's 24-column grid, with
titles, units and the dashed reference lines (budget, thresholds) of the dashboard's overrides.
Time series and stat panels use ``/api/v1/query_range``; tables use an instant query at the end.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from infra.dashboards import DASHBOARD_DIR, dashboard_files, expand, load_dashboard, panels  # noqa: E402
from infra.prom_api import PrometheusClient  # noqa: E402
from streams.errors import StackError  # noqa: E402

GRID_ROW_INCHES = 0.42
FIGURE_WIDTH_INCHES = 20.0
TITLE_INCHES = 0.6
# inside a panel's grid cell: room for the y labels, the title above and the time axis below (inches)
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 0.7, 0.25, 0.35, 0.4
# unit -> (scale, axis label) for the y axis
UNITS: dict[str, tuple[float, str]] = {
    "s": (1000.0, "ms"),
    "percentunit": (100.0, "%"),
    "bytes": (1 / 2**20, "MiB"),
    "ops": (1.0, "per s"),
    "reqps": (1.0, "req/s"),
    "x": (1.0, "x budget"),
}


def legend(fmt: str, labels: dict[str, str]) -> str:
    """Grafana's ``{{label}}`` legend format applied to a series' labels."""
    if not fmt:
        shown = {k: v for k, v in labels.items() if k != "__name__"}
        return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def dashed_names(panel: dict[str, Any]) -> dict[str, str]:
    """Series names the panel's overrides draw as dashed reference lines, with their colour."""
    out: dict[str, str] = {}
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        props = {p["id"]: p["value"] for p in override.get("properties", [])}
        if props.get("custom.lineStyle", {}).get("fill") == "dash":
            out[override["matcher"]["options"]] = props.get("color", {}).get("fixedColor", "red")
    return out


def _series(
    client: PrometheusClient, panel: dict[str, Any], window: tuple[float, float, float], rate_interval: str
) -> list[tuple[str, list[datetime], list[float]]]:
    start, end, step = window
    out = []
    for target in panel["targets"]:
        for s in client.query_range(expand(target["expr"], rate_interval), start, end, step):
            times = [datetime.fromtimestamp(float(t)) for t, _ in s["values"]]
            values = [float(v) for _, v in s["values"]]
            out.append((legend(target.get("legendFormat", ""), s["metric"]), times, values))
    return out


def _time_axis(ax: Axes, window: tuple[float, float, float]) -> None:
    ax.set_xlim(datetime.fromtimestamp(window[0]), datetime.fromtimestamp(window[1]))
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _draw_timeseries(ax: Axes, panel: dict[str, Any], series: list[tuple[str, list[datetime], list[float]]]) -> None:
    scale, label = UNITS.get(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""), (1.0, ""))
    dashed = dashed_names(panel)
    for name, times, values in series:
        scaled = [v * scale for v in values]
        if name in dashed:
            ax.plot(times, scaled, linestyle="--", color=dashed[name], linewidth=1.5, label=name)
        else:
            ax.plot(times, scaled, linewidth=1.2, label=name)
    ax.set_ylabel(label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if series:
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="upper left", ncol=max(1, min(4, len(series) // 4 + 1)), framealpha=0.6)


def _draw_stat(ax: Axes, panel: dict[str, Any], series: list[tuple[str, list[datetime], list[float]]]) -> None:
    scale, label = UNITS.get(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""), (1.0, ""))
    last = sum(values[-1] for _, _, values in series if values) * scale if series else float("nan")
    ax.text(0.5, 0.45, f"{last:.4g} {label}".strip(), transform=ax.transAxes, ha="center", va="center", fontsize=20)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_table(ax: Axes, rows: list[dict[str, str]]) -> None:
    ax.axis("off")
    if not rows:
        ax.text(0.5, 0.5, "no data", ha="center", va="center")
        return
    columns = sorted({k for row in rows for k in row if k != "__name__"})
    table = ax.table(cellText=[[row.get(c, "") for c in columns] for row in rows], colLabels=columns, loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)


def _cell(grid: dict[str, int], fig_h: float) -> tuple[float, float, float, float]:
    """The axes rectangle (figure fractions) of a panel at Grafana grid position ``grid``."""
    left = grid["x"] / 24 * FIGURE_WIDTH_INCHES + PAD_LEFT
    width = grid["w"] / 24 * FIGURE_WIDTH_INCHES - PAD_LEFT - PAD_RIGHT
    top = fig_h - TITLE_INCHES - grid["y"] * GRID_ROW_INCHES - PAD_TOP
    height = grid["h"] * GRID_ROW_INCHES - PAD_TOP - PAD_BOTTOM
    return (left / FIGURE_WIDTH_INCHES, (top - height) / fig_h, width / FIGURE_WIDTH_INCHES, height / fig_h)


def render(
    client: PrometheusClient,
    dashboard: dict[str, Any],
    window: tuple[float, float, float],
    out: Path,
    rate_interval: str = "1m",
) -> Path:
    """Draw ``dashboard`` over ``window`` = (start, end, step) in Unix seconds into the PNG ``out``."""
    found = list(panels(dashboard))
    rows = max((p["gridPos"]["y"] + p["gridPos"]["h"] for p in found), default=1)
    fig_h = rows * GRID_ROW_INCHES + TITLE_INCHES
    fig: Figure = plt.figure(figsize=(FIGURE_WIDTH_INCHES, fig_h))
    fig.suptitle(dashboard.get("title", ""), x=0.01, y=1 - 0.15 / fig_h, ha="left", va="top", fontsize=14)
    for panel in found:
        ax = fig.add_axes(_cell(panel["gridPos"], fig_h))
        ax.set_title(panel["title"], fontsize=10, loc="left")
        if panel["type"] == "table":
            end = window[1]
            table_rows = [
                s["metric"] for t in panel["targets"] for s in client.query(expand(t["expr"], rate_interval), at=end)
            ]
            _draw_table(ax, table_rows)
            continue
        series = _series(client, panel, window, rate_interval)
        if panel["type"] == "stat":
            _draw_stat(ax, panel, series)
        else:
            _draw_timeseries(ax, panel, series)
            _time_axis(ax, window)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def render_all(
    client: PrometheusClient,
    out_dir: Path,
    start: float,
    end: float,
    dashboards: Path = DASHBOARD_DIR,
    rate_interval: str = "1m",
) -> list[Path]:
    """One PNG per dashboard file, named after it; the step gives about 300 points per series."""
    step = max(1.0, round((end - start) / 300))
    return [
        render(client, load_dashboard(path), (start, end, step), out_dir / f"{path.stem}.png", rate_interval)
        for path in dashboard_files(dashboards)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.render_dashboards", description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--out", type=Path, required=True, help="directory for the PNG files")
    parser.add_argument("--minutes", type=float, default=60.0, help="time range ending now (default 60)")
    parser.add_argument("--rate-interval", default="1m", help="window for $__rate_interval (default 1m)")
    parser.add_argument("--dashboards", type=Path, default=DASHBOARD_DIR, help="folder of dashboard JSON")
    args = parser.parse_args(argv)
    end = time.time()
    try:
        paths = render_all(
            PrometheusClient(args.prometheus),
            args.out,
            end - args.minutes * 60,
            end,
            args.dashboards,
            args.rate_interval,
        )
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
