"""Plotly figures of the evidence runs, written as self-contained HTML (plotly.js inlined)."""

from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from prune_search.evidence.compare import METHODS

COLORS = {
    "search": "#000000",
    "front": "#d62728",
    "front_bn": "#ff7f0e",
    "front_kl": "#bcbd22",
    "front_trained": "#ff9896",
    "uniform": "#1f77b4",
    "global_min": "#2ca02c",
    "global_median": "#9467bd",
    "global_mean": "#8c564b",
    "global_max": "#e377c2",
    "tp_global": "#7f7f7f",
    "tp_global_taylor": "#17becf",
    "fastnas": "#aec7e8",
}


def comparison_figure(summary: list[dict[str, Any]], base_test_pct: float | None, title: str) -> go.Figure:
    """Test accuracy (mean ± std over seeds, %) against MACs reduction (%), one trace per method."""
    figure = go.Figure()
    for method in METHODS:
        rows = sorted((r for r in summary if r["method"] == method), key=lambda r: r["macs_reduction_pct"])
        if not rows:
            continue
        figure.add_trace(
            go.Scatter(
                x=[r["macs_reduction_pct"] for r in rows],
                y=[r["test_mean"] for r in rows],
                error_y={"type": "data", "array": [r["test_std"] for r in rows]},
                mode="lines+markers",
                name=method,
                marker={"color": COLORS[method]},
            )
        )
    if base_test_pct is not None:
        figure.add_hline(y=base_test_pct, line_dash="dot", annotation_text="unpruned")
    figure.update_layout(title=title, xaxis_title="MACs reduction (%)", yaxis_title="test accuracy (%)")
    return figure


def proxy_figure(result: dict[str, Any]) -> go.Figure:
    """One column per band, one row per predictor: predictor against fine-tuned val accuracy."""
    bands = [b["band"] for b in result["bands"]]
    names = list(result["bands"][0]["predictors"])
    titles = [
        f"{name}, {band:.0%} band: ρ={b['predictors'][name]['spearman']:.2f}"
        for name in names
        for band, b in zip(bands, result["bands"], strict=True)
    ]
    figure = make_subplots(rows=len(names), cols=len(bands), subplot_titles=titles, vertical_spacing=0.04)
    for r, name in enumerate(names, start=1):
        for c, band in enumerate(bands, start=1):
            rows = [row for row in result["rows"] if row["band"] == band]
            figure.add_trace(
                go.Scatter(
                    x=[row[f"pred_{name}"] for row in rows],
                    y=[100 * row["val_acc"] for row in rows],
                    text=[f"trial {row['trial']}" for row in rows],
                    mode="markers",
                    showlegend=False,
                ),
                row=r,
                col=c,
            )
    figure.update_layout(height=260 * len(names), title="predictor (higher = predicted better) vs val accuracy (%)")
    return figure


def write_html(figure: go.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path
