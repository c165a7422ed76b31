"""Candidates per second: batched fast path (proxy + analytic cost) vs materialise-and-count.

Both paths score the same random candidates of the same space, side by side in one run:
- fast: ``ProxyEvaluator`` (taylor_loss) + ``CostModel`` over a population ``[P, G]`` on the device;
- materialise: ``materialize`` (deep copy + DependencyGraph + physical pruning) and a reference
  count (``FlopCounterMode`` forward ÷ 2, parameter sum) per candidate, on the CPU.

Run:  python benchmarks/evaluator_throughput.py [--population 100000] [--device auto]
"""

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from prune_search.device import resolve_device
from prune_search.evaluators import CostModel, ProxyEvaluator, compute_importance, materialize
from prune_search.models import ModelSpec, build_model
from prune_search.space import PruningSpace


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fast_rate(space, importance, device: torch.device, population: int, repeats: int) -> float:
    """Median candidates/s of proxy + cost over ``population`` candidates already on ``device``."""
    proxy, cost = ProxyEvaluator(space, importance, device), CostModel(space, device)
    batch = space.sample(population, seed=0).to(device)
    proxy(batch)
    cost(batch)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        proxy(batch)
        cost(batch)
        _sync(device)
        times.append(time.perf_counter() - start)
    return population / statistics.median(times)


def materialize_rate(model, space, importance, samples: int) -> float:
    """Candidates/s of physically pruning and counting MACs/params, one candidate at a time."""
    batch = space.sample(samples, seed=1)
    example = torch.zeros(space.structure.input_shape)
    start = time.perf_counter()
    for row in range(samples):
        pruned, _ = materialize(model, space, importance, batch[row])
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            pruned(example)
        counter.get_total_flops()
        sum(p.numel() for p in pruned.parameters())
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16_bn", "resnet56"])
    parser.add_argument("--population", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--materialize-samples", type=int, default=5)
    parser.add_argument("--device", default="auto", help="device of the fast path besides cpu (auto: CUDA if present)")
    args = parser.parse_args()
    devices = [torch.device("cpu")]
    extra = resolve_device(args.device)
    if extra.type != "cpu":
        devices.append(extra)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, population {args.population}")
    print()
    print("| model | groups | fast-path device | fast cand/s | materialise cand/s (CPU) | speed-up |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(ModelSpec(name, 3, 10, 32)).eval()
        space = PruningSpace.from_model(model, torch.randn(1, 3, 32, 32))
        importance = compute_importance(model, space, "l2")
        slow = materialize_rate(model, space, importance, args.materialize_samples)
        for device in devices:
            fast = fast_rate(space, importance, device, args.population, args.repeats)
            print(f"| {name} | {len(space)} | {device} | {fast:,.0f} | {slow:,.2f} | {fast / slow:,.0f}× |")


if __name__ == "__main__":
    main()
