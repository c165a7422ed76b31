"""How much room the quality targets leave: uniform pruning's distance to the unpruned model, beside the gains
over uniform that issue 14 asks for and those every compared method reached.

Reads the results files ``benchmarks/fmnist_quality.py`` writes (its ``### model (unpruned: val V %, test T %)``
sections and their per-budget method rows) and prints, per file, model and budget:

- the unpruned model's test accuracy and uniform pruning's (fine-tuned with the file's recipe), and their gap:
  all a better choice of widths can win back at that budget, short of beating the unpruned model;
- the issue's target for the search's pick (at 20 % of the base MACs kept: uniform + 0.5 points; at 35 %:
  uniform + 0.2; at 50 %: no method more than 0.1 above the pick) and the share of the gap it asks to win back;
- the search's pick (``search``) and the best other method, each as test points above uniform.

Run:
    python benchmarks/headroom.py benchmarks/results/fmnist_quality_grid*.md --results benchmarks/results/headroom.md
"""

import argparse
import re
from pathlib import Path

SECTION = re.compile(r"^### (?P<model>\S+) \(unpruned: val (?P<val>[\d.]+) %, test (?P<test>[\d.]+) %\)")
TARGET_GAIN = {"20%": 0.5, "35%": 0.2}  # test points above uniform the search's pick must reach (issue 14)
TARGET_LEAD = {"50%": 0.1}  # no method more than this many points above the pick


def mean_of(cell: str) -> float:
    """The mean of a ``mean ± std`` (or bare ``mean``) table cell, in %."""
    return float(cell.split("±")[0])


def read_results(path: Path) -> list[dict]:
    """One dict per model section of ``path``: ``model``, ``unpruned`` (test %) and ``rows``: per budget, the
    method's ``{"test": %, "seeds": n}``."""
    sections: list[dict] = []
    for line in path.read_text().splitlines():
        found = SECTION.match(line)
        if found:
            sections.append({"model": found["model"], "unpruned": float(found["test"]), "rows": {}})
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if sections and len(cells) == 10 and re.fullmatch(r"\d+%", cells[0]):
            budget, method, seeds, test = cells[0], cells[1], int(cells[5]), mean_of(cells[7])
            sections[-1]["rows"].setdefault(budget, {})[method] = {"test": test, "seeds": seeds}
    return sections


def headroom_rows(path: Path) -> list[dict]:
    """Per model and budget of ``path`` that has a ``uniform`` row: the figures of the module docstring."""
    rows = []
    for section in read_results(path):
        for budget, methods in section["rows"].items():
            if "uniform" not in methods:
                continue
            uniform = methods["uniform"]["test"]
            gap = section["unpruned"] - uniform
            others = {m: v["test"] - uniform for m, v in methods.items() if m not in ("uniform", "search")}
            best = max(others, key=others.get) if others else None
            gain = TARGET_GAIN.get(budget)
            rows.append(
                {
                    "file": path.name,
                    "model": section["model"],
                    "budget": budget,
                    "seeds": methods["uniform"]["seeds"],
                    "unpruned": section["unpruned"],
                    "uniform": uniform,
                    "gap": gap,
                    "target": f"uniform {gain:+.1f}" if gain is not None else budget_lead(budget),
                    "share": gain / gap if gain is not None and gap > 0 else None,
                    "search": methods["search"]["test"] - uniform if "search" in methods else None,
                    "best": best,
                    "best_gain": others[best] if best else None,
                }
            )
    return rows


def budget_lead(budget: str) -> str:
    lead = TARGET_LEAD.get(budget)
    return f"none above by > {lead:.1f}" if lead is not None else ""


def signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.2f}"


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "# Headroom: what the quality targets ask for, against uniform pruning's distance to the unpruned model",
        "",
        "Per results file of `benchmarks/fmnist_quality.py`, model and budget (share of the base MACs kept): test "
        "accuracy (%) of the unpruned model and of uniform pruning fine-tuned with the file's recipe; their gap is "
        "all that any choice of widths can win back short of beating the unpruned model. Target: issue 14's bar "
        "for the search's pick; share: the part of the gap that target asks to win back. `search` and the best "
        "other method (the peers, global and front picks) as test points above uniform (means over the seeds).",
        "",
        "```bash",
        command,
        "```",
        "",
        "| file | model | budget | seeds | unpruned % | uniform % | gap | target | share of gap | search | "
        "best other | its gain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        share = f"{row['share']:.0%}" if row["share"] is not None else ""
        lines.append(
            f"| {row['file']} | {row['model']} | {row['budget']} | {row['seeds']} | {row['unpruned']:.2f} | "
            f"{row['uniform']:.2f} | {row['gap']:.2f} | {row['target']} | {share} | {signed(row['search'])} | "
            f"{row['best'] or ''} | {signed(row['best_gain'])} |"
        )
    lines += [
        "",
        "| budget | rows | gap (min–max) | target asks | largest gain of any method | of search |",
        "|---|---|---|---|---|---|",
    ]
    for budget, summary in per_budget(rows).items():
        lines.append(
            f"| {budget} | {summary['rows']} | {summary['gap'][0]:.2f}–{summary['gap'][1]:.2f} | {summary['target']} | "
            f"{signed(summary['best'])} | {signed(summary['search'])} |"
        )
    return "\n".join(lines) + "\n"


def per_budget(rows: list[dict]) -> dict[str, dict]:
    """Per budget over ``rows``: how many, the gap's range, the target and the largest gain over uniform of any
    method other than uniform and of ``search`` (None where no row has one)."""
    out: dict[str, dict] = {}
    for budget in sorted({row["budget"] for row in rows}, key=lambda b: int(b.rstrip("%"))):
        mine = [row for row in rows if row["budget"] == budget]
        gains = [g for row in mine for g in (row["best_gain"], row["search"]) if g is not None]
        searched = [row["search"] for row in mine if row["search"] is not None]
        out[budget] = {
            "rows": len(mine),
            "gap": (min(row["gap"] for row in mine), max(row["gap"] for row in mine)),
            "target": mine[0]["target"],
            "best": max(gains) if gains else None,
            "search": max(searched) if searched else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="results files of benchmarks/fmnist_quality.py")
    parser.add_argument("--results", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()
    rows = [row for path in args.files for row in headroom_rows(path)]
    if not rows:
        parser.error("no model section with a uniform row in these files: give results of fmnist_quality.py")
    command = "python benchmarks/headroom.py " + " ".join(str(path) for path in args.files)
    if args.results:
        command += f" --results {args.results}"
    text = markdown(rows, command)
    print(text, end="")
    if args.results:
        args.results.write_text(text)


if __name__ == "__main__":
    main()
