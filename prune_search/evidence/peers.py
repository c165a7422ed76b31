"""Peer methods' width choices at a MACs budget, as candidates of the study's space.

- ``tp_global`` / ``tp_global_taylor``: Torch-Pruning's global pruning with group-normalised magnitude /
  first-order Taylor importance, built in :mod:`~prune_search.finalize.global_pruning` (the trained budget pick
  uses the Taylor one too). Only the widths are taken; the study's importance chooses the channels.
- ``fastnas``: NVIDIA ModelOpt's FastNAS (``modelopt.torch.prune.prune`` with mode ``fastnas``;
  ``pip install 'prune-search[peers]'``), run on a copy of the base model on the CPU. It measures
  every width choice of every prunable layer by its score (here the accuracy on a fixed sample of
  ``FASTNAS_SCORE_BATCHES`` train batches of ``FASTNAS_SCORE_BATCH_SIZE``, never val or test),
  then bisects a threshold on the score drop to meet a FLOPs bound, given as ``2 × max_macs``
  (FLOPs = 2 × MACs, per sample). Its width choices are ``FASTNAS_RATIOS`` (FastNAS's own
  default ratios) of every layer with channel divisor 1: its default divisor of 32 leaves no
  choice on 16-, 32- and 64-channel layers. Before each score it re-estimates BatchNorm on the
  ``FASTNAS_CALIBRATION_BATCHES`` train batches of ``FASTNAS_CALIBRATION_BATCH_SIZE`` it was
  given, which it does only from a full queue of 50 batches, so the train split is repeated
  (reshuffled) when it holds fewer. One score costs those 50 calibration forwards plus the score
  batches, and there is one per width choice (up to 20 per prunable layer), so its time grows with
  the model's forward time: about 3 minutes for resnet20 on digits on one CPU thread. Its output
  counts are snapped to the grid like the TP peers'; should the snapped candidate exceed the
  budget (FastNAS counts FLOPs of its own), the group with the largest keep ratio steps down one
  grid level until it fits.
"""

import contextlib
import copy
import io
import itertools
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators import CostModel
from prune_search.evidence.context import Bench
from prune_search.finalize.global_pruning import GLOBAL_PRUNERS, global_pruning_candidate, group_widths, taylor_batches
from prune_search.search.baselines import snap
from prune_search.space import CandidateBatch, PruningSpace

PEERS = (*GLOBAL_PRUNERS, "fastnas")
FASTNAS_RATIOS = tuple(round(0.05 * i, 2) for i in range(1, 21))
FASTNAS_CALIBRATION_BATCHES = 50
FASTNAS_CALIBRATION_BATCH_SIZE = 16
FASTNAS_SCORE_BATCHES = 2
FASTNAS_SCORE_BATCH_SIZE = 128
MISSING_MODELOPT = "peer fastnas needs NVIDIA ModelOpt: pip install 'prune-search[peers]'"


def _fastnas_rules(mtp) -> dict:
    """FastNAS's mode config: its default rules with ``FASTNAS_RATIOS`` and divisor 1 everywhere."""
    rules = {}
    for layer, rule in mtp.fastnas.FastNASConfig().model_dump().items():
        rule = dict(rule["*"])
        for ratio, divisor in (("channels_ratio", "channel_divisor"), ("features_ratio", "feature_divisor")):
            if ratio in rule:
                rule[ratio], rule[divisor] = FASTNAS_RATIOS, 1
        rules[layer] = {"*": rule}
    return rules


def _fastnas_widths(base: Bench, max_macs: int) -> torch.Tensor:
    """Keep count per group ``[G]`` of the subnet FastNAS finds within ``2 × max_macs`` FLOPs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import modelopt.torch.prune as mtp
    except ImportError as error:
        raise PruneSearchError(MISSING_MODELOPT) from error
    repeated = itertools.chain.from_iterable(
        base.bundle.loader("train", FASTNAS_CALIBRATION_BATCH_SIZE, shuffle=True, seed=seed)
        for seed in itertools.count()
    )
    calibration = list(itertools.islice(repeated, FASTNAS_CALIBRATION_BATCHES))  # the split reshuffled as needed
    scored = base.bundle.loader("train", FASTNAS_SCORE_BATCH_SIZE, shuffle=True, seed=1)
    sample = list(itertools.islice(scored, FASTNAS_SCORE_BATCHES))
    total = sum(len(targets) for _, targets in sample)

    def accuracy(model: nn.Module) -> float:
        model.eval()  # FastNAS re-estimates BatchNorm here, from its queue of calibration batches
        with torch.no_grad():
            return sum(int((model(x).argmax(1) == y).sum()) for x, y in sample) / total

    model = copy.deepcopy(base.model).cpu().eval()
    with (
        tempfile.TemporaryDirectory() as folder,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        try:
            pruned, _ = mtp.prune(
                model,
                mode=[("fastnas", _fastnas_rules(mtp))],
                constraints={"flops": 2 * max_macs},
                dummy_input=calibration[0][0][:1],  # one image: FLOPs per sample
                config={
                    "data_loader": calibration,
                    "score_func": accuracy,
                    "checkpoint": str(Path(folder) / "fastnas_search.pth"),
                    "verbose": False,
                },
            )
        except ValueError as error:
            if "can be satisfied" not in str(error):
                raise
            raise PruneSearchError(
                f"fastnas has no subnet within {2 * max_macs:,} FLOPs (2 × the budget of {max_macs:,} MACs); "
                "choose a larger budget"
            ) from None
    return group_widths(pruned, base.handle.space)


def _fit(space: PruningSpace, keep: torch.Tensor, max_macs: int, method: str) -> torch.Tensor:
    """``keep`` ``[G]``, the group with the largest keep ratio one grid level lower while over ``max_macs``."""
    cost = CostModel(space)
    levels = space.level_keep_counts()
    allowed = torch.arange(levels.shape[1])[None] >= space.min_levels()[:, None]
    keep = keep.clone()
    strategy = torch.full((1, len(keep)), space.strategies.index("min"))
    while int(cost(CandidateBatch(keep[None], strategy))[0][0]) > max_macs:
        below = torch.where(allowed & (levels < keep[:, None]), levels, torch.full_like(levels, -1)).max(1).values
        if not bool((below >= 0).any()):
            raise PruneSearchError(
                f"{method} leaves no candidate of this space within {max_macs:,} MACs; choose a larger budget"
            )
        ratio = torch.where(below >= 0, keep.double() / space.sizes.double(), torch.full_like(keep, -1).double())
        group = int(ratio.argmax())
        keep[group] = below[group]
    return keep


def peer_candidate(base: Bench, method: str, max_macs: int) -> CandidateBatch:
    """The ``method`` peer's widths (one of :data:`PEERS`) with the most MACs ≤ ``max_macs`` (per sample)."""
    if method not in PEERS:
        raise PruneSearchError(f"unknown peer '{method}'; peers are {', '.join(PEERS)}")
    space = base.handle.space
    if "min" not in space.strategies:
        raise PruneSearchError(f"peer {method} keeps channels by strategy 'min', which this study's space leaves out")
    if method == "fastnas":
        keep = _fit(space, snap(space, _fastnas_widths(base, max_macs)), max_macs, method)[None]
        return CandidateBatch(keep, torch.full_like(keep, space.strategies.index("min")))
    return global_pruning_candidate(space, base.model, taylor_batches(base.bundle), method, max_macs)
