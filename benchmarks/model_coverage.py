"""Which torchvision and timm classification models the whole pipeline handles, one row per model.

For every model (10 classes, 3 input channels, random weights): build it; build the search space with
``PruningSpace.from_model`` (timed; ``$PRUNE_SEARCH_TRACE_TIMEOUT_S`` is set to ``--trace-timeout``);
check the analytic cost (``CostModel``) of ``--candidates`` random candidates against the physically pruned
model (``materialize``; MACs = ``counted_macs``: ``FlopCounterMode`` total ÷ 2 with fused CPU attention
counted; parameters counted); run the pruned models forward; export one (``export``: plan + weights +
model.json) and load it back with ``load_pruned``, whose output must equal the pruned model's.

Each model runs in its own subprocess with a ``--timeout``, so a hang or a crash costs one row, not the table.
Status: ``ok`` (every check passed), ``refused: …`` (a one-line PruneSearchError, e.g. a layer torch-pruning
cannot prune through), ``failed: …`` (it ran but a check did not pass), ``error: …`` (an unexpected
exception), ``timeout`` (the subprocess ran past ``--timeout``; the stage it was at is named).

Run:  OMP_NUM_THREADS=1 python benchmarks/model_coverage.py [--resolution native|N] [--models tv:resnet18,...]
      [--candidates 5] [--timeout 300] [--trace-timeout 60] [--out benchmarks/results/model_coverage.md]

``native`` is 224 px (299 for Inception v3; timm's default input size for timm models); a model that cannot
take a smaller ``--resolution`` resizes its input up to its minimum (``tv:``) or default size (``timm:``).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

TORCHVISION = [
    "resnet18",
    "wide_resnet50_2",
    "densenet121",
    "googlenet",
    "inception_v3",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "squeezenet1_1",
    "mnasnet0_5",
    "alexnet",
    "vgg11_bn",
    "resnext50_32x4d",
    "regnet_y_400mf",
    "convnext_tiny",
    "vit_b_16",
    "shufflenet_v2_x1_0",
    "swin_t",
    "maxvit_t",
    "vgg16_bn",
    "resnet50",
    "mobilenet_v3_large",
    "efficientnet_b3",
    "convnext_small",
    "vit_b_32",
    "swin_s",
    "regnet_x_1_6gf",
    "shufflenet_v2_x0_5",
]
# Small variants of popular timm families.
TIMM = [
    "resnet18",
    "resnext26ts",
    "regnetx_002",
    "regnety_002",
    "efficientnet_b0",
    "efficientnetv2_rw_t",
    "mobilenetv2_100",
    "mobilenetv3_small_100",
    "mobilenetv3_large_100",
    "convnext_atto",
    "vit_tiny_patch16_224",
    "deit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224",
    "densenet121",
    "ghostnet_100",
    "mixnet_s",
    "rexnet_100",
    "repvgg_a0",
    "dla34",
    "lcnet_050",
    "mobilevit_xxs",
    "levit_128s",
    "inception_v3",
]
DEFAULT_MODELS = [f"tv:{name}" for name in TORCHVISION] + [f"timm:{name}" for name in TIMM]
COLUMNS = [
    "model",
    "px",
    "groups",
    "what is pruned",
    "unmodelled MACs",
    "space build s",
    "exact k/n",
    "pruned forward ok",
    "round trip ok",
    "status",
]


def native_size(name: str) -> int:
    """The model's usual input size: 224 px, 299 for Inception v3, timm's default input size for timm models."""
    if name.startswith("timm:"):
        from prune_search.models.timm_zoo import default_input_size

        return default_input_size(name[5:])
    return 299 if name == "tv:inception_v3" else 224


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def pruned_kinds(model, space) -> str:
    """What the groups of ``space`` prune, by kind of root layer: e.g. ``conv 20, heads 12, linear 13``;
    ``blocks`` counts groups kept equal per channel block (grouped convolutions, GroupNorm, MHA heads),
    ``branches`` groups whose members take uneven shares (concatenations)."""
    from torch import nn

    modules = dict(model.named_modules())
    counts: dict[str, int] = {}
    for group in space.groups:
        kind = "heads" if group.heads else "conv" if isinstance(modules[group.name], nn.Conv2d) else "linear"
        counts[kind] = counts.get(kind, 0) + 1
        if group.blocks > 1 and not group.heads:
            counts["blocks"] = counts.get("blocks", 0) + 1
        if any(group.partial(m) for m in group.members):
            counts["branches"] = counts.get("branches", 0) + 1
    return ", ".join(f"{kind} {n}" for kind, n in counts.items())


def check_model(name: str, resolution: str, candidates: int, record: dict, save) -> None:
    """Run every stage for ``name``, filling ``record`` and calling ``save()`` after each stage."""
    import torch
    from torch import nn

    from prune_search.errors import PruneSearchError
    from prune_search.evaluators import CostModel, compute_importance, materialize
    from prune_search.finalize.export import export, load_pruned
    from prune_search.models import ModelSpec, build_model
    from prune_search.space import PruningSpace
    from prune_search.space.flops import counted_macs

    def reference(model: nn.Module, example: torch.Tensor) -> tuple[tuple[int, int], torch.Tensor]:
        with torch.no_grad():
            out = model(example)
        return (counted_macs(model, example), sum(p.numel() for p in model.parameters())), out

    def stage(label: str) -> None:
        record["stage"] = label
        save()

    try:
        size = native_size(name) if resolution == "native" else int(resolution)
        record["px"] = size
        stage("build")
        spec = ModelSpec(name, 3, 10, size)
        torch.manual_seed(0)
        model = build_model(spec).eval()
        with torch.no_grad():  # non-trivial BN statistics, so a wrongly kept channel shows in the outputs
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.5, 0.5)
                    module.running_var.uniform_(0.5, 2.0)
        example = torch.randn(1, 3, size, size)
        stage("space")
        start = time.perf_counter()
        space = PruningSpace.from_model(model, example)
        record["space_s"] = round(time.perf_counter() - start, 2)
        record["groups"] = len(space.groups)
        record["pruned"] = pruned_kinds(model, space)
        cost = CostModel(space)
        record["unmodelled_pct"] = round(100 * cost.unmodelled_macs / cost.base()[0], 2)
        stage("cost")
        importance = compute_importance(model, space, "l2")
        batch = space.sample(candidates, seed=0)
        macs, params = CostModel(space)(batch)
        exact = forward_ok = 0
        record["exact"], record["n"], record["forward"] = 0, candidates, 0
        first = None
        for row in range(candidates):
            pruned, plan = materialize(model, space, importance, batch[row])
            counted, out = reference(pruned.eval(), example)
            exact += counted == (int(macs[row]), int(params[row]))
            if counted != (int(macs[row]), int(params[row])) and "mismatch" not in record:
                record["mismatch"] = f"analytic {int(macs[row])}/{int(params[row])} vs {counted[0]}/{counted[1]}"
            forward_ok += tuple(out.shape) == (1, 10) and bool(torch.isfinite(out).all())
            record["exact"], record["forward"] = exact, forward_ok
            if first is None:
                first = (pruned, plan, out)
            save()
        stage("round trip")
        pruned, plan, out = first
        with tempfile.TemporaryDirectory() as folder:
            base_params = sum(p.numel() for p in model.parameters())
            export(pruned, plan, spec, {"result": {"base_params": base_params}}, Path(folder))
            loaded = load_pruned(folder)
            with torch.no_grad():
                again = loaded(example)
        record["round_trip"] = bool(torch.allclose(again, out, rtol=1e-4, atol=1e-5))
        problems = []
        if exact < candidates:
            problems.append(f"{candidates - exact} inexact ({record['mismatch']})")
        if forward_ok < candidates:
            problems.append(f"{candidates - forward_ok} bad forward")
        if not record["round_trip"]:
            problems.append("round trip differs")
        record["status"] = "failed: " + "; ".join(problems) if problems else "ok"
    except PruneSearchError as exc:
        record["status"] = f"refused: {_first_line(exc)}"
    except Exception as exc:
        record["status"] = f"error: {type(exc).__name__}: {_first_line(exc)}"
        record["traceback"] = traceback.format_exc()[-2000:]
    record.pop("stage", None)
    save()


def worker(args: argparse.Namespace) -> None:
    record: dict = {"model": args.worker}
    path = Path(args.record)

    def save() -> None:
        path.write_text(json.dumps(record))

    check_model(args.worker, args.resolution, args.candidates, record, save)
    sys.stdout.flush()
    os._exit(0)  # a space build past its time limit leaves a tracing thread running: do not wait for it


def run_one(name: str, args: argparse.Namespace) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        record_path = Path(handle.name)
    command = [sys.executable, __file__, "--worker", name, "--record", str(record_path)]
    command += ["--resolution", args.resolution, "--candidates", str(args.candidates)]
    env = {**os.environ, "PRUNE_SEARCH_TRACE_TIMEOUT_S": str(args.trace_timeout)}
    start = time.perf_counter()
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        result, timed_out = None, True
    wall = time.perf_counter() - start
    try:
        record = json.loads(record_path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        record = {}
    record_path.unlink(missing_ok=True)
    record.setdefault("model", name)
    if timed_out:
        record["status"] = f"timeout ({args.timeout} s, at {record.get('stage', 'start')})"
    elif "status" not in record:
        tail = (result.stderr or result.stdout or "").strip().splitlines()
        record["status"] = f"error: exit {result.returncode}: {(tail[-1] if tail else '')[:200]}"
    record["wall_s"] = round(wall, 1)
    return record


def cell(record: dict, column: str) -> str:
    if column == "model":
        return f"`{record['model']}`"
    if column == "px":
        return str(record.get("px", ""))
    if column == "groups":
        return str(record.get("groups", ""))
    if column == "what is pruned":
        return record.get("pruned", "")
    if column == "unmodelled MACs":
        return f"{record['unmodelled_pct']:g} %" if "unmodelled_pct" in record else ""
    if column == "space build s":
        return f"{record['space_s']:.1f}" if "space_s" in record else ""
    if column == "exact k/n":
        return f"{record['exact']}/{record['n']}" if "n" in record else ""
    if column == "pruned forward ok":
        return f"{record['forward']}/{record['n']}" if "n" in record else ""
    if column == "round trip ok":
        return {True: "yes", False: "no"}.get(record.get("round_trip"), "")
    return record["status"].replace("|", "\\|")


def table(records: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, c) for c in COLUMNS) + " |" for r in records]
    return "\n".join(lines)


def headline(records: list[dict]) -> str:
    parts = []
    for prefix, label in (("tv:", "torchvision"), ("timm:", "timm")):
        rows = [r for r in records if r["model"].startswith(prefix)]
        if rows:
            ok = sum(r["status"] == "ok" for r in rows)
            refused = sum(r["status"].startswith("refused") for r in rows)
            parts.append(f"{label}: {ok}/{len(rows)} ok, {refused} refused, {len(rows) - ok - refused} other")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated tv:NAME / timm:NAME")
    parser.add_argument("--resolution", default="native", help="native, or an input size in px for every model")
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per model (its subprocess)")
    parser.add_argument("--trace-timeout", type=float, default=60, help="$PRUNE_SEARCH_TRACE_TIMEOUT_S for a model")
    parser.add_argument("--out", default="benchmarks/results/model_coverage.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--record", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.resolution != "native" and not (args.resolution.isdigit() and int(args.resolution) > 0):
        parser.error("--resolution must be 'native' or a positive number of px")
    if args.worker:
        worker(args)
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    records = []
    started = time.perf_counter()
    for name in models:
        record = run_one(name, args)
        records.append(record)
        print(f"{name}: {record['status']} ({record['wall_s']} s)", flush=True)
    total = time.perf_counter() - started
    command = "OMP_NUM_THREADS={} python benchmarks/model_coverage.py {}".format(
        os.environ.get("OMP_NUM_THREADS", ""), shlex.join(sys.argv[1:])
    )
    text = "\n".join(
        [
            "# Model coverage: space, exact cost, pruned forward, export round trip",
            "",
            f"Command: `{command}`",
            "",
            f"{len(models)} models, {args.candidates} random candidates each, input {args.resolution}"
            f"{' px' if args.resolution != 'native' else ''}, 3 channels, 10 classes, random weights, CPU; "
            f"space build time limit {args.trace_timeout:g} s, {args.timeout} s per model; "
            f"{total / 60:.1f} min in all. Headline: {headline(records)}.",
            "",
            table(records),
            "",
        ]
    )
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
