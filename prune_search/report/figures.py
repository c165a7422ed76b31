"""The report's plotly figures."""

from itertools import combinations

import numpy as np
import plotly.graph_objects as go

from prune_search.report.data import ReportData
from prune_search.search.status import spread

HEATMAP_ROWS = 40  # at most this many front trials in the keep-ratio heatmap, spread over MACs
_AXES = {"proxy": "proxy (loss estimate)", "macs": "MACs (% of base)", "params": "params (% of base)"}


def _series(data: ReportData) -> dict[str, np.ndarray]:
    base = data.stored.config["base"]
    return {"proxy": data.proxy, "macs": 100 * data.macs / base["macs"], "params": 100 * data.params / base["params"]}


def _cloud_name(data: ReportData) -> str:
    shown, held = len(data.sample), len(data.archive)
    return "all trials" if shown == held else f"trials ({shown:,} of {held:,}, sampled)"


def _front_values(data: ReportData, rows: list[dict]) -> dict[str, np.ndarray]:
    proxy = f"proxy_{data.stored.config['proxy']}"
    return {
        "proxy": np.array([r[proxy] for r in rows]),
        "macs": np.array([r["macs_pct"] for r in rows]),
        "params": np.array([r["params_pct"] for r in rows]),
    }


def pareto_projections(data: ReportData) -> list[go.Figure]:
    """One 2-D scatter per objective pair: all trials, the feasible front, base model, knee, finalized points."""
    series, front = _series(data), _front_values(data, data.front)
    finalized = {r["trial"]: r for r in data.finalized}
    figures = []
    for x, y in combinations(["macs", "params", "proxy"], 2):
        fig = go.Figure()
        fig.add_trace(
            go.Scattergl(
                x=series[x],
                y=series[y],
                mode="markers",
                name=_cloud_name(data),
                marker={"size": 4, "color": "lightgray"},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=front[x],
                y=front[y],
                mode="markers",
                name="feasible front",
                marker={"size": 6, "color": "royalblue"},
                text=[f"trial {r['trial']}" for r in data.front],
            )
        )
        full = [r for r in data.front if r["macs_pct"] == 100.0 and r["params_pct"] == 100.0]
        if full:
            marks = _front_values(data, full[:1])
            fig.add_trace(
                go.Scatter(
                    x=marks[x],
                    y=marks[y],
                    mode="markers",
                    name="base model",
                    marker={"size": 14, "symbol": "star", "color": "black"},
                )
            )
        if data.knee is not None:
            marks = _front_values(data, [data.knee])
            fig.add_trace(
                go.Scatter(
                    x=marks[x],
                    y=marks[y],
                    mode="markers",
                    name=f"knee (trial {data.knee['trial']})",
                    marker={"size": 14, "symbol": "diamond", "color": "crimson"},
                )
            )
        done = [r for r in data.front if r["trial"] in finalized]
        if done:
            marks = _front_values(data, done)
            labels = [f"{100 * finalized[r['trial']]['test_acc']:.2f}%" for r in done]
            fig.add_trace(
                go.Scatter(
                    x=marks[x],
                    y=marks[y],
                    mode="markers+text",
                    name="finalized (test accuracy)",
                    text=labels,
                    textposition="top center",
                    marker={"size": 12, "symbol": "circle-open", "color": "darkgreen"},
                )
            )
        fig.update_layout(
            title=f"{_AXES[y]} vs {_AXES[x]}",
            xaxis_title=_AXES[x],
            yaxis_title=_AXES[y],
            height=480,
            margin={"t": 50, "b": 40},
        )
        figures.append(fig)
    return figures


def pareto_3d(data: ReportData) -> go.Figure:
    """The feasible front in MACs × params × proxy; the camera stands back and the margins are narrow so that every
    axis title fits inside the figure (height in px)."""
    front = _front_values(data, data.front)
    fig = go.Figure(
        go.Scatter3d(
            x=front["macs"],
            y=front["params"],
            z=front["proxy"],
            mode="markers",
            marker={"size": 3, "color": front["proxy"], "colorscale": "Viridis"},
            text=[f"trial {r['trial']}" for r in data.front],
        )
    )
    fig.update_layout(
        title="feasible Pareto front",
        height=640,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        scene={
            "xaxis_title": _AXES["macs"],
            "yaxis_title": _AXES["params"],
            "zaxis_title": _AXES["proxy"],
            "camera": {"eye": {"x": 1.7, "y": 1.7, "z": 1.2}},
        },
    )
    return fig


def hypervolume_history(data: ReportData) -> go.Figure:
    trials = [h[1] for h in data.history]
    fig = go.Figure(go.Scatter(x=trials, y=[h[2] for h in data.history], mode="lines+markers"))
    fig.update_layout(
        title="hypervolume after each generation",
        xaxis_title="trials",
        yaxis_title="hypervolume (reference 1.1 per normalised objective)",
        height=400,
    )
    return fig


def keep_heatmap(data: ReportData) -> go.Figure:
    """Keep ratio (kept / original channels) of every group, one row per front trial, at most
    :data:`HEATMAP_ROWS` rows spread evenly over MACs; height in px grows with the rows up to about 900."""
    names, sizes = list(data.group_sizes), data.group_sizes
    rows = spread(data.front, HEATMAP_ROWS)
    z = [[r["keep"][n] / sizes[n] for n in names] for r in rows]
    shown = (
        f"{len(rows)} of {len(data.front)} trials, spread over MACs"
        if len(rows) < len(data.front)
        else f"all {len(rows)} trials"
    )
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=[f"trial {r['trial']} ({r['macs_pct']:.0f}% MACs)" for r in rows],
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": "keep ratio"},
        )
    )
    fig.update_layout(
        title=f"keep ratio per group across the front (sorted by MACs): {shown}",
        height=max(400, 150 + 18 * len(rows)),
        yaxis={"autorange": "reversed"},
    )
    return fig


def importance_distributions(data: ReportData) -> go.Figure:
    """A box per group of its channels' importance scores on a log axis spanning whole decades, each labelled
    10^k (minor ticks between); height in px."""
    scores = data.importance
    fig = go.Figure([go.Box(y=values, name=name, boxpoints=False) for name, values in scores.items()])
    yaxis = {"type": "log", "dtick": 1, "exponentformat": "power", "minor": {"ticks": "outside", "showgrid": True}}
    positive = np.concatenate([values[values > 0] for values in scores.values()])
    if len(positive):
        low = float(np.floor(np.log10(positive.min())))
        yaxis["range"] = [low, max(float(np.ceil(np.log10(positive.max()))), low + 1)]
    fig.update_layout(
        title=f"{data.stored.config['criterion']} importance per group", yaxis=yaxis, showlegend=False, height=450
    )
    return fig
