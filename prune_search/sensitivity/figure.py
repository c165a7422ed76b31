"""The scan as an interactive plotly figure: one line per group, val accuracy against keep ratio."""

from pathlib import Path

import plotly.graph_objects as go

from prune_search.sensitivity.result import SensitivityResult

HTML_FILE = "sensitivity.html"


def sensitivity_figure(result: SensitivityResult) -> go.Figure:
    """Val accuracy (%) against the keep ratio of one group (the others full), the base accuracy,
    the lowest accuracy the allowed drop admits, and each group's allocated ratio (stars)."""
    fig = go.Figure()
    allocated = result.allocation["ratios"]
    stars_x, stars_y, stars_text = [], [], []
    for group, size in result.groups.items():
        rows = sorted((r for r in result.rows if r.group == group), key=lambda r: r.ratio)
        fig.add_trace(
            go.Scatter(
                x=[r.ratio for r in rows],
                y=[100 * r.val_acc for r in rows],
                mode="lines+markers",
                name=f"{group} ({size})",
                text=[f"{group}: keep {r.keep}/{size}, drop {r.drop_pts:.2f} pts" for r in rows],
                hovertemplate="%{text}<br>val acc %{y:.2f}%<extra></extra>",
            )
        )
        chosen = [r for r in rows if r.ratio == allocated[group]]
        if chosen:
            stars_x.append(chosen[0].ratio)
            stars_y.append(100 * chosen[0].val_acc)
            stars_text.append(f"{group}: allocated {chosen[0].ratio:g} ({chosen[0].keep}/{size})")
    fig.add_trace(
        go.Scatter(
            x=stars_x,
            y=stars_y,
            mode="markers",
            name="allocation",
            marker={"symbol": "star", "size": 12, "color": "black"},
            text=stars_text,
            hovertemplate="%{text}<extra></extra>",
        )
    )
    base = 100 * result.base_val_acc
    max_drop = result.allocation["max_drop"]
    fig.add_hline(y=base, line_color="black", annotation_text=f"base {base:.2f}%")
    fig.add_hline(
        y=base - max_drop, line_dash="dash", line_color="red", annotation_text=f"allowed drop {max_drop:g} pts"
    )
    recal = "after BN recalibration" if result.config.get("recalibrate_bn") else "no BN recalibration"
    fig.update_layout(
        title=f"Sensitivity per group: val accuracy with one group pruned ({recal})",
        xaxis_title="keep ratio of the pruned group (others full)",
        yaxis_title="val accuracy (%)",
        legend_title="group (channels)",
    )
    return fig


def write_figure(result: SensitivityResult, out: Path) -> Path:
    """Write ``sensitivity.html`` (plotly.js inlined: opens offline) into the folder ``out``."""
    path = out / HTML_FILE
    out.mkdir(parents=True, exist_ok=True)
    sensitivity_figure(result).write_html(path, include_plotlyjs=True, full_html=True)
    return path
