"""One self-contained HTML report: no network needed to open it.

plotly.js (4.8 MB) is embedded once, gzip-compressed and base64-encoded (≈ 1.9 MB); the page inflates it with
the browser's ``DecompressionStream`` and then draws the figures, whose scripts wait as
``type="text/x-plotly-figure"`` until plotly.js is there.
"""

import base64
import functools
import gzip
import html
import json
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from prune_search.report import figures
from prune_search.report.data import collect
from prune_search.search.stored import StoredStudy

FIGURE_SCRIPT = "text/x-plotly-figure"
"""The type of a figure's script until plotly.js is loaded (a browser runs no script of an unknown type)."""

_LOADER = f"""<script>
(async () => {{
  const packed = Uint8Array.from(atob(document.getElementById("plotly-js").textContent), c => c.charCodeAt(0));
  const inflated = new Blob([packed]).stream().pipeThrough(new DecompressionStream("gzip"));
  const library = document.createElement("script");
  library.textContent = await new Response(inflated).text();
  document.head.appendChild(library);
  for (const figure of document.querySelectorAll('script[type="{FIGURE_SCRIPT}"]')) {{
    const run = document.createElement("script");
    run.textContent = figure.textContent;
    figure.replaceWith(run);
  }}
}})();
</script>"""


@functools.cache
def packed_plotlyjs() -> str:
    """plotly.js, gzip-compressed and base64-encoded (ASCII)."""
    return base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def _section(title: str, figs: list[go.Figure]) -> str:
    parts = [f"<h2>{html.escape(title)}</h2>"]
    for fig in figs:
        drawn = fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
        parts.append(drawn.replace("<script>", f'<script type="{FIGURE_SCRIPT}">'))
    return "\n".join(parts)


def write_report(stored: StoredStudy, out: Path) -> Path:
    """Write the study's report to ``out`` (HTML; its folder must exist) and return the path."""
    data = collect(stored)
    config = stored.config
    sections = [
        _section("Pareto front: 2-D projections", figures.pareto_projections(data)),
        _section("Pareto front: 3-D", [figures.pareto_3d(data)]),
        _section("Hypervolume history", [figures.hypervolume_history(data)]),
        _section("Keep ratios across the front", [figures.keep_heatmap(data)]),
        _section("Importance per group", [figures.importance_distributions(data)]),
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
<html lang="en"><head><meta charset="utf-8"><title>prune-search report: {html.escape(stored.study.study_name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}} pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head>
<body><h1>prune-search study <code>{html.escape(stored.study.study_name)}</code></h1>
<p>{len(data.archive)} trials, {len(data.front)} on the feasible front; base model
{config["base"]["macs"]:,} MACs, {config["base"]["params"]:,} params.</p>
{table}
{"".join(sections)}
<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=1))}</pre>
<script id="plotly-js" type="application/gzip-base64">{packed_plotlyjs()}</script>
{_LOADER}
</body></html>"""
    partial = out.with_name(f".{out.name}.partial")
    try:
        partial.write_text(page, encoding="utf-8")
        partial.replace(out)  # whole or not at all: a failed write leaves any earlier report as it was
    finally:
        partial.unlink(missing_ok=True)
    return out
