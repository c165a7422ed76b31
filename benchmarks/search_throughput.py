"""Trials/s and final hypervolume: prune-search's batched NSGA-II vs plain Optuna NSGAIISampler.

Both searches optimise the same three objectives (Taylor proxy, MACs, params) of the same
``vgg16_bn`` search space, on the same kind of storage, side by side in one run:
- prune-search: ``run_worker`` (generations evaluated at once, stored in bulk);
- plain Optuna: ``study.optimize`` with ``NSGAIISampler(population_size=P)``, the objective
  decoding the trial's params and calling the same proxy and cost evaluators.
The base model is an untrained ``vgg16_bn`` (digits input, 8×8 px; weights do not change
the speed) and Taylor importance comes from 8 digits train batches. Hypervolume uses the
study normalisation of ``prune_search.search.front`` (reference point 1.1 per objective).

Run:  python benchmarks/search_throughput.py [--trials 5000] [--storages sqlite postgresql]
"""

import argparse
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import optuna
import torch

from prune_search.data import DataSpec
from prune_search.evaluators import CostModel, ProxyEvaluator
from prune_search.models import ModelSpec, build_model
from prune_search.search import StartOptions, create_or_join, run_worker
from prune_search.search.front import hypervolume
from prune_search.search.summary import load_archive
from prune_search.training.checkpoint import model_payload, save_checkpoint

SERVERS = {
    "postgresql": "postgresql+psycopg://root@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}


def untrained_checkpoint(folder: Path, model: str = "vgg16_bn") -> Path:
    """A checkpoint of ``model`` with seeded random weights for digits (8×8 px, 1 channel, 10 classes), in
    ``folder``: speed does not depend on the weights."""
    torch.manual_seed(0)
    spec = ModelSpec(model, 1, 10, 8)
    path = folder / f"{model}-untrained.pt"
    save_checkpoint(model_payload(spec, DataSpec("digits"), build_model(spec).state_dict()), path)
    return path


def ours(url: str, checkpoint: Path, trials: int, population: int) -> tuple[float, float, object]:
    options = StartOptions(model="vgg16_bn", checkpoint=checkpoint, dataset="digits", population=population)
    handle, _ = create_or_join(url, f"ours-{uuid.uuid4().hex[:8]}", options, device="cpu", progress=False)
    start = time.perf_counter()
    run_worker(handle, trials, seed=0)
    elapsed = time.perf_counter() - start
    archive = load_archive(handle)
    return trials / elapsed, hypervolume(archive.F, archive.violation, handle.config), handle


def plain_optuna(url: str, handle, trials: int, population: int) -> tuple[float, float]:
    space, config = handle.space, handle.config
    proxy, cost = ProxyEvaluator(space, handle.importance, fitness=handle.fitness), CostModel(space)
    distributions = space.distributions()

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        params = {
            name: trial.suggest_float(name, dist.low, dist.high, step=dist.step)
            if isinstance(dist, optuna.distributions.FloatDistribution)
            else trial.suggest_categorical(name, dist.choices)
            for name, dist in distributions.items()
        }
        batch = space.from_params(params)
        macs, size = cost(batch)
        return float(proxy(batch, config["proxy"])[0]), float(macs[0]), float(size[0])

    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=0)
    study = optuna.create_study(
        study_name=f"plain-{uuid.uuid4().hex[:8]}", storage=url, sampler=sampler, directions=["minimize"] * 3
    )
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    elapsed = time.perf_counter() - start
    F = np.array([t.values for t in study.get_trials(deepcopy=False)])
    return trials / elapsed, hypervolume(F, np.zeros(len(F)), config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--storages", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", *SERVERS])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    folder = Path(tempfile.mkdtemp(prefix="search-throughput-"))
    checkpoint = untrained_checkpoint(folder)
    print(f"vgg16_bn, {args.trials} trials, population {args.population}, proxy taylor_loss + MACs + params")
    print()
    print("| storage | prune-search trials/s | plain Optuna trials/s | speed-up | HV prune-search | HV plain Optuna |")
    print("|---|---|---|---|---|---|")
    for kind in args.storages:
        url = f"sqlite:///{folder / 'bench.db'}" if kind == "sqlite" else SERVERS[kind]
        fast, fast_hv, handle = ours(url, checkpoint, args.trials, args.population)
        slow, slow_hv = plain_optuna(url, handle, args.trials, args.population)
        print(
            f"| {kind} | {fast:,.0f} | {slow:,.1f} | {fast / slow:,.0f}× | {fast_hv:.4f} | {slow_hv:.4f} |", flush=True
        )


if __name__ == "__main__":
    main()
