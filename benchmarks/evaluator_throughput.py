"""Candidates per second of the fast path and of the second fidelity, side by side in one run.

Fast path (first table), the same random candidates of the same space:
- fast: ``ProxyEvaluator`` (``--proxy``: taylor_loss, or bn_kl from a fitness table measured on
  random inputs; lookups cost the same whatever the values) + ``CostModel`` over a population
  ``[P, G]`` on the device;
- materialise: ``materialize`` (deep copy + DependencyGraph + physical pruning) and a reference
  count (``FlopCounterMode`` forward ÷ 2, parameter sum) per candidate, on the CPU.

Second fidelity (second table): whole candidates scored after BN re-estimation on
``--fidelity-samples`` inputs of ``--fidelity-model`` at 1×28×28 (Fashion-MNIST size):
``BatchedEvaluator`` in both modes (``masked``: ``--chunk`` candidates per forward pass;
``physical``: each candidate materialised, on the evaluator's device), ``AdaptiveBNEvaluator``
with batch statistics (one masked candidate per pass) and materialise-then-forward on the CPU.

Run:  python benchmarks/evaluator_throughput.py [--population 100000] [--device auto] [--proxy bn_kl]
"""

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from prune_search.device import resolve_device
from prune_search.evaluators import (
    AdaptiveBNEvaluator,
    BatchedEvaluator,
    CostModel,
    ProxyEvaluator,
    compute_importance,
    materialize,
    measure_fitness_table,
)
from prune_search.models import ModelSpec, build_model
from prune_search.space import PruningSpace


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fast_rate(space, importance, fitness, name: str, device: torch.device, population: int, repeats: int) -> float:
    """Median candidates/s of proxy ``name`` + cost over ``population`` candidates already on ``device``."""
    proxy, cost = ProxyEvaluator(space, importance, device, fitness), CostModel(space, device)
    batch = space.sample(population, seed=0).to(device)
    proxy(batch, name)
    cost(batch)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        proxy(batch, name)
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


def fidelity_rates(name: str, samples: int, count: int, chunk: int, device: torch.device) -> dict[str, float]:
    """Candidates/s of the three whole-candidate scorers on the same ``count`` candidates."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, 1, 10, 28)).eval().to(device)
    space = PruningSpace.from_model(model, torch.randn(1, 1, 28, 28, device=device))
    importance = compute_importance(model, space, "l2")
    batches = [(torch.randn(samples, 1, 28, 28), torch.randint(0, 10, (samples,)))]
    candidates = space.sample(count, seed=2)
    rates = {}
    for mode in ("masked", "physical"):
        start = time.perf_counter()
        BatchedEvaluator(model, space, importance, batches, device, chunk, mode)(candidates)
        _sync(device)
        rates[f"BatchedEvaluator {mode}"] = count / (time.perf_counter() - start)
    start = time.perf_counter()
    AdaptiveBNEvaluator(model, space, importance, [], batches, device, batch_statistics=True).measure(candidates)
    _sync(device)
    rates["one by one (masks)"] = count / (time.perf_counter() - start)
    cpu_model = model.cpu()
    start = time.perf_counter()
    for row in range(count):
        pruned, _ = materialize(cpu_model, space, importance, candidates[row : row + 1])
        for norm in pruned.modules():
            if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
                norm.train()
        with torch.no_grad():
            pruned(batches[0][0])
    rates["materialise + forward (CPU)"] = count / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16_bn", "resnet56"])
    parser.add_argument("--population", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--materialize-samples", type=int, default=5)
    parser.add_argument("--device", default="auto", help="device of the fast path besides cpu (auto: CUDA if present)")
    parser.add_argument("--proxy", default="taylor_loss", choices=["taylor_loss", "bn_kl"])
    parser.add_argument("--fidelity-model", default="resnet20")
    parser.add_argument("--fidelity-samples", type=int, default=256)
    parser.add_argument("--fidelity-candidates", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=8)
    args = parser.parse_args()
    devices = [torch.device("cpu")]
    extra = resolve_device(args.device)
    if extra.type != "cpu":
        devices.append(extra)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, population {args.population}")
    print()
    print(f"| model | groups | fast-path device | fast ({args.proxy}) cand/s | materialise cand/s (CPU) | speed-up |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(ModelSpec(name, 3, 10, 32)).eval()
        space = PruningSpace.from_model(model, torch.randn(1, 3, 32, 32))
        importance = compute_importance(model, space, "l2")
        fitness = None
        if args.proxy == "bn_kl":
            inputs = [(torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)))]
            scorer = AdaptiveBNEvaluator(model, space, importance, [], inputs, batch_statistics=True)
            fitness = measure_fitness_table(scorer, 2, {"random_inputs": 16})
        slow = materialize_rate(model, space, importance, args.materialize_samples)
        for device in devices:
            fast = fast_rate(space, importance, fitness, args.proxy, device, args.population, args.repeats)
            print(f"| {name} | {len(space)} | {device} | {fast:,.0f} | {slow:,.2f} | {fast / slow:,.0f}× |")
    print()
    print(f"second fidelity: {args.fidelity_model}, {args.fidelity_samples} inputs of 1×28×28, chunk {args.chunk}")
    print()
    print("| device | scorer | candidates/s |")
    print("|---|---|---|")
    for device in devices:
        rates = fidelity_rates(args.fidelity_model, args.fidelity_samples, args.fidelity_candidates, args.chunk, device)
        for scorer, rate in rates.items():
            print(f"| {device} | {scorer} | {rate:.2f} |")


if __name__ == "__main__":
    main()
