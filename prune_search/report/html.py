"""One self-contained HTML report (plotly.js inlined once, no network needed to open it)."""

import html
import json
from pathlib import Path

import plotly.graph_objects as go

from prune_search.report import figures
from prune_search.report.data import collect
from prune_search.search.study import StudyHandle


def _section(title: str, figs: list[go.Figure], first: list[bool]) -> str:
    parts = [f"<h2>{html.escape(title)}</h2>"]
    for fig in figs:
        parts.append(fig.to_html(full_html=False, include_plotlyjs=first[0], config={"displaylogo": False}))
        first[0] = False
    return "\n".join(parts)


def write_report(handle: StudyHandle, out: Path) -> Path:
    """Write the study's report to ``out`` (HTML; its folder must exist) and return the path."""
    data = collect(handle)
    config = handle.config
    first = [True]
    sections = [
        _section("Pareto front: 2-D projections", figures.pareto_projections(data), first),
        _section("Pareto front: 3-D", [figures.pareto_3d(data)], first),
        _section("Hypervolume history", [figures.hypervolume_history(data)], first),
        _section("Keep ratios across the front", [figures.keep_heatmap(data)], first),
        _section("Importance per group", [figures.importance_distributions(data)], first),
    ]
    finalized = "".join(
        f"<tr><td>{r['trial']}</td><td>{100 * r['test_acc']:.2f}%</td><td>{100 * r['base_test_acc']:.2f}%</td>"
        f"<td>−{r['macs_reduction_pct']:.1f}%</td><td>−{r['params_reduction_pct']:.1f}%</td>"
        f"<td>{'KD' if r['kd'] else 'CE'}, {r['epochs']} epochs</td></tr>"
        for r in data.finalized
    )
    table = (
        "<h2>Finalized models</h2><table><tr><th>trial</th><th>test acc</th><th>base test acc</th>"
        f"<th>MACs</th><th>params</th><th>fine-tuning</th></tr>{finalized}</table>"
        if data.finalized
        else "<h2>Finalized models</h2><p>none yet: <code>prune-search finalize</code></p>"
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>prune-search report: {html.escape(handle.study.study_name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}} pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head>
<body><h1>prune-search study <code>{html.escape(handle.study.study_name)}</code></h1>
<p>{len(data.archive)} trials, {len(data.front)} on the feasible front; base model
{config["base"]["macs"]:,} MACs, {config["base"]["params"]:,} params.</p>
{table}
{"".join(sections)}
<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=1))}</pre>
</body></html>"""
    out.write_text(page, encoding="utf-8")
    return out
