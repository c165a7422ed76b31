"""Iterative prune-retrain: importance → prune physically → retrain, step by step along a schedule.

Every step recomputes importance on the current (already pruned) model from train batches,
keeps the channels the shared selection function picks (strategy ``min``), removes the rest
with torch-pruning and retrains with the shared epoch loop (CE, or KD from the original
model). The run stops at the end of the schedule, when val accuracy falls more than
``max_drop`` points below the base model's, or when the network is dead (one class predicted
for nearly every val sample); the last step within the threshold is the result.
"""

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from prune_search.data import DatasetBundle
from prune_search.errors import PruneSearchError
from prune_search.evaluators import CostModel, PruningPlan, check_criterion, compute_importance, materialize
from prune_search.finalize.tune import FinalizeConfig, train_network
from prune_search.iterative.schedule import ScheduleStep
from prune_search.search.config import DEFAULTS
from prune_search.space import CandidateBatch, PruningSpace, SpaceOptions
from prune_search.space.trace import trace_structure
from prune_search.training.loop import evaluate

DEAD_SHARE = 0.95  # a model predicting one class for at least this share of val samples is dead
OK, BELOW, DEAD, END = "ok", "below-threshold", "dead", "schedule-end"


@dataclass(frozen=True)
class IterativeConfig:
    """Retraining recipe per step and the stopping rule.

    ``tuning``: the finalizer's fine-tuning recipe, its ``epochs`` run after every step;
    ``max_drop``: largest allowed val-accuracy drop below the base model, in percentage
    points; ``calibration_batches``: train batches (of ``tuning.batch_size``) for importance;
    ``ignored_layers``: module names never pruned (``--ignore-layers``), at every step.
    """

    tuning: FinalizeConfig = field(default_factory=lambda: FinalizeConfig(epochs=2))
    max_drop: float = 1.0
    criterion: str = DEFAULTS["criterion"]
    calibration_batches: int = DEFAULTS["calibration_batches"]
    ignored_layers: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.tuning.epochs < 1 or self.calibration_batches < 1:
            raise PruneSearchError("--epochs-per-step and --calibration-batches must be at least 1")
        if self.max_drop < 0:
            raise PruneSearchError("--max-drop must be at least 0")
        check_criterion(self.criterion)
        self.tuning.validate()

    def step_tuning(self, step: int) -> FinalizeConfig:
        """The retraining recipe of step ``step`` (its own seed, so steps see different shuffles)."""
        return replace(self.tuning, seed=self.tuning.seed * 1000 + step)


@dataclass(frozen=True)
class StepRecord:
    """One executed step: status (ok / below-threshold / dead), keep counts, costs, accuracies.

    ``keep`` is in original channels; ``macs``/``params`` per input sample (exact, analytic);
    accuracies in [0, 1] on val: ``pruned_val_acc`` right after pruning, ``val_acc`` after
    retraining (best epoch); ``top_class``/``top_class_share``: the most often predicted val
    class and its share of predictions; times in seconds.
    """

    step: int
    t: int
    status: str
    keep: dict[str, int]
    macs: int
    params: int
    pruned_val_acc: float
    val_acc: float
    val_loss: float
    best_epoch: int
    top_class: int
    top_class_share: float
    prune_s: float
    train_s: float


@dataclass
class IterativeResult:
    """The whole run: base metrics, every executed step, why it stopped, and the surviving model.

    ``best`` is the last ``ok`` step (``None`` when the first step already failed); ``model``
    (CPU, eval mode) and ``plan`` belong to it, and ``test_acc`` is its test accuracy, measured
    once.
    """

    base_val_acc: float
    base_test_acc: float
    base_macs: int
    base_params: int
    steps: list[StepRecord]
    stop_reason: str
    best: StepRecord | None
    model: nn.Module | None
    plan: PruningPlan | None
    test_acc: float | None


@torch.no_grad()
def top_class_share(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device) -> tuple[int, float]:
    """The class ``model`` predicts most often over ``loader`` and the share of samples it gets, in [0, 1]."""
    model.eval()
    counts: torch.Tensor | None = None
    for inputs, _ in loader:
        logits = model(inputs.to(device))
        found = torch.bincount(logits.argmax(1).cpu(), minlength=logits.shape[1])
        counts = found if counts is None else counts + found
    if counts is None or int(counts.sum()) == 0:
        raise PruneSearchError("the val split is empty; dead-network detection needs val samples")
    top = int(counts.argmax())
    return top, float(counts[top]) / float(counts.sum())


def step_space(
    model: nn.Module, input_shape: list[int], min_keep: int, ignored_layers: tuple[str, ...] = ()
) -> PruningSpace:
    """The space of the current (possibly pruned) ``model`` on a grid fine enough for every keep count.

    The ratio grid is ``1/M, 2/M, ..., 1`` with ``M`` the largest group, so any count from
    ``min(n, min_keep)`` to ``n`` is a valid candidate of every group; strategy ``min`` only.
    ``ignored_layers`` (module names) are never pruned.
    """
    parameter = next(model.parameters())
    example = torch.zeros(2, *input_shape[1:], device=parameter.device)
    structure = trace_structure(model, example, ignored_layers)
    largest = max(group.size for group in structure.groups)
    return PruningSpace(structure, SpaceOptions(1 / largest, 1 / largest, 1, min_keep, ("min",)))


def _prune(
    model: nn.Module, target: dict[str, int], space: PruningSpace, config: IterativeConfig, bundle: DatasetBundle
) -> tuple[nn.Module, PruningPlan]:
    """``model`` pruned to ``target`` keep counts (group name → channels) with fresh importance."""
    current = step_space(model, space.structure.input_shape, space.options.min_keep, config.ignored_layers)
    if current.names != space.names:
        raise PruneSearchError(
            "pruning changed the model's group structure "
            f"({', '.join(current.names)} instead of {', '.join(space.names)}); iterative pruning needs stable groups"
        )
    device = next(model.parameters()).device
    importance = compute_importance(
        model,
        current,
        config.criterion,
        batches=bundle.loader("train", config.tuning.batch_size),
        max_batches=config.calibration_batches,
        seed=config.tuning.seed,
        device=device,
    )
    keep = torch.tensor([[target[name] for name in current.names]], dtype=torch.int64)
    return materialize(model, current, importance, CandidateBatch(keep, torch.zeros_like(keep)))


def run_iterative(
    base: nn.Module,
    space: PruningSpace,
    schedule: list[ScheduleStep],
    bundle: DatasetBundle,
    config: IterativeConfig,
    state_file: Path,
    *,
    device: torch.device,
    progress: bool = True,
    on_step: Callable[[StepRecord], None] | None = None,
) -> IterativeResult:
    """Prune ``base`` (unchanged) along ``schedule`` (keep counts of ``space``'s groups).

    ``space`` is the base model's space (its group sizes, its floor and its cost model);
    ``state_file`` holds the per-epoch training state of the step being retrained and is
    removed after each step. ``on_step`` sees every step's record as soon as it is known.
    """
    config.validate()
    if not schedule:
        raise PruneSearchError("the schedule has no step that prunes anything")
    val_loader = bundle.loader("val", 512)
    teacher = copy.deepcopy(base).to(device).eval()
    current = copy.deepcopy(base).to(device)
    base_val = evaluate(current, val_loader, device).accuracy
    base_top, base_share = top_class_share(current, val_loader, device)
    if base_share >= DEAD_SHARE:
        raise PruneSearchError(
            f"the base model predicts class {base_top} for {100 * base_share:.1f} % of val samples "
            "(a dead, constant-class network); train it properly first"
        )
    cost = CostModel(space)
    base_macs, base_params = cost.base()
    kept = {group.name: list(range(group.size)) for group in space.groups}
    history: list[list] = []
    steps: list[StepRecord] = []
    best: tuple[nn.Module, PruningPlan, StepRecord] | None = None
    stop_reason = END
    for index, step in enumerate(schedule, start=1):
        started = time.perf_counter()
        current, plan = _prune(current, step.keep, space, config, bundle)
        kept = {name: [kept[name][i] for i in plan.kept[name]] for name in space.names}
        history += plan.history
        prune_s = time.perf_counter() - started
        pruned_val = evaluate(current, val_loader, device).accuracy
        fitted = train_network(
            current,
            bundle,
            config.step_tuning(index),
            state_file,
            teacher=teacher,
            identity={"step": index, "t": step.t, "keep": step.keep, **asdict(config)},
            resume=False,
            device=device,
            progress=progress,
        )
        state_file.unlink(missing_ok=True)
        top, share = top_class_share(current, val_loader, device)
        if share >= DEAD_SHARE:
            status = DEAD
        elif 100 * (base_val - fitted.val_acc) > config.max_drop:
            status = BELOW
        else:
            status = OK
        keep_tensor = torch.tensor([[len(kept[name]) for name in space.names]], dtype=torch.int64)
        macs, params = (int(v[0]) for v in cost(CandidateBatch(keep_tensor, torch.zeros_like(keep_tensor))))
        record = StepRecord(
            index,
            step.t,
            status,
            {name: len(kept[name]) for name in space.names},
            macs,
            params,
            pruned_val,
            fitted.val_acc,
            fitted.val_loss,
            fitted.best_epoch,
            top,
            share,
            prune_s,
            fitted.history[-1].wall_s,
        )
        steps.append(record)
        if on_step is not None:
            on_step(record)
        if status != OK:
            stop_reason = status
            break
        composed = PruningPlan(
            {name: list(ids) for name, ids in kept.items()},
            dict.fromkeys(space.names, "min"),
            list(history),
            list(space.structure.input_shape),
        )
        best = (copy.deepcopy(current).cpu().eval(), composed, record)
    base_test = evaluate(base.to(device), bundle.loader("test", 512), device).accuracy
    if best is None:
        return IterativeResult(base_val, base_test, base_macs, base_params, steps, stop_reason, None, None, None, None)
    model, plan, record = best
    test = evaluate(model.to(device), bundle.loader("test", 512), device).accuracy
    return IterativeResult(
        base_val, base_test, base_macs, base_params, steps, stop_reason, record, model.cpu().eval(), plan, test
    )
