"""Nested levels of one elastic checkpoint vs standalone fine-tuned models of the same widths.

For K front trials of a study (``--front K``, spread across MACs) or ``--trial-numbers a,b,c``,
nested by ``--nest``:
- elastic: ``make_elastic`` with ``--epochs`` per level (smallest first, smaller levels frozen);
- standalone: each level's nested candidate pruned from the base model and fine-tuned alone
  with the SAME recipe (``finalize.tune.fine_tune``, KD from the base), exported like ``finalize``.
Reported per level: val/test accuracy of both, and before fine-tuning (the pruned base model,
identical in both by construction); the checkpoint size vs the sum of the standalone exports;
the time of a width switch on the CPU.

Run:  python benchmarks/elastic_vs_standalone.py --study el --storage sqlite:////tmp/el/el.db \
          --trial-numbers 955,1048,1594 --epochs 15 --out /tmp/el/compare
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from prune_search.data import DataSpec, load_dataset
from prune_search.device import resolve_device
from prune_search.elastic import load_elastic, make_elastic, nest, pick_trials, trial_candidates
from prune_search.elastic.nesting import parse_trials
from prune_search.finalize import FinalizeConfig, fine_tune
from prune_search.finalize.export import export
from prune_search.search import open_study
from prune_search.search.study import base_checkpoint
from prune_search.storage import resolve_url
from prune_search.training import load_model


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def _switch_ms(path: Path, levels: int, repeats: int = 20) -> float:
    """Median ms of ``set_width`` over a cycle through all levels (architectures already built)."""
    model = load_elastic(path)
    for level in range(levels):
        model.set_width(level)
    times = []
    for step in range(repeats * levels):
        start = time.perf_counter()
        model.set_width(step % levels)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage", default=None)
    parser.add_argument("--front", type=int, default=None)
    parser.add_argument("--trial-numbers", default=None, help="e.g. 12,40,77 (instead of --front)")
    parser.add_argument("--nest", default="max")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = resolve_device(args.device)
    handle = open_study(resolve_url(args.storage), args.study)
    numbers = pick_trials(handle, args.front, parse_trials(args.trial_numbers) if args.trial_numbers else None)
    config = FinalizeConfig(epochs=args.epochs)

    _, untuned = make_elastic(handle, numbers, args.out / "elastic-0", rule=args.nest, device=device, progress=False)
    _, tuned = make_elastic(
        handle, numbers, args.out / "elastic", rule=args.nest, tuning=config, device=device, progress=False
    )
    nested = nest(handle.space, numbers, trial_candidates(handle, numbers), args.nest)
    spec = handle.model_spec()
    base, _ = load_model(base_checkpoint(handle, None), spec)
    data = DataSpec.from_dict(handle.config["data"])
    bundle = load_dataset(data)
    rows = []
    standalone_bytes = 0
    for index, trial in enumerate(nested.trials):
        folder = args.out / f"standalone-{index}"
        alone = fine_tune(
            base,
            handle.space,
            handle.importance,
            nested.candidates[index],
            bundle,
            config,
            folder / "state.pt",
            identity={"benchmark": "elastic", "level": index, "trial": trial},
            device=device,
            progress=False,
        )
        (folder / "state.pt").unlink()
        export(alone.model, alone.plan, spec, {"data": data.to_dict()}, folder)
        standalone_bytes += _size(folder)
        rows.append(
            {
                "level": index,
                "trial": trial,
                "macs": tuned[index]["macs"],
                "params": tuned[index]["params"],
                "pruned_val_acc": untuned[index]["val_acc"],
                "pruned_test_acc": untuned[index]["test_acc"],
                "elastic_val_acc": tuned[index]["val_acc"],
                "elastic_test_acc": tuned[index]["test_acc"],
                "standalone_val_acc": alone.val_acc,
                "standalone_test_acc": alone.test_acc,
            }
        )
    result = {
        "study": args.study,
        "trials": nested.trials,
        "nest": args.nest,
        "epochs": args.epochs,
        "device": str(device),
        "levels": rows,
        "elastic_bytes": (args.out / "elastic" / "elastic.pt").stat().st_size,
        "standalone_bytes": standalone_bytes,
        "switch_ms": _switch_ms(args.out / "elastic" / "elastic.pt", len(rows)),
        "notes": nested.notes,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
