"""A study's configuration: what the first worker decides, every later worker reads."""

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prune_search.errors import PruneSearchError
from prune_search.space import SpaceOptions

if TYPE_CHECKING:
    from prune_search.space import PruningSpace

OBJECTIVES = ("proxy", "macs", "params")
CONFIG_ATTR = "prune_search"
SPACE_KEY = "space"
IMPORTANCE_KEY = "importance"
FITNESS_KEY = "fitness_table"
KEEP_ATTR = "keep"  # a trial's user attr holding its keep counts as text, "16 8 32" in group order
RESULT_ATTR = "finalized"
"""A finalized trial's result is stored as user attrs ``finalized.<field>`` (``finalized.sparse.<field>``), one
readable row each in optuna-dashboard; older studies hold it as one ``finalized`` dict."""
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_BUDGET_UNITS = {"--max-macs": " MACs", "--max-params": " params"}


def keep_counts(stored: str | dict[str, Any], names: list[str]) -> dict[str, int]:
    """Keep counts by group name from a trial's :data:`KEEP_ATTR` value: this version's text in group order
    (``"16 8 32"``) or an older study's ``{name: count}``."""
    if isinstance(stored, dict):
        return {name: int(stored[name]) for name in names}
    return dict(zip(names, map(int, stored.split()), strict=True))


@dataclass
class StartOptions:
    """Flags of ``prune-search start``; ``None`` means "not given" (stored value or default).

    ``ignored_layers``: module names (``--ignore-layers``) whose channels the space never prunes
    (default none); a study stores them with its space (``config["space"]["ignored_layers"]``).

    The last four fields come resolved from a higher layer (``prune_search.sensitivity.study``
    turns ``--sensitivity``/``--sensitivity-use`` into them) and shape a new study only:
    ``group_min_ratio``, per-group keep-ratio floors of the space; ``seeds``, keep ratios per
    group of candidates put into generation 0; ``recorded``, further entries of the study's
    configuration, stored as given; ``check_space``, called with the base model's space before
    anything is computed, raises a one-line error when the resolved values do not fit it.
    """

    model: str | None = None
    model_options: dict[str, Any] | None = None
    checkpoint: Path | None = None
    dataset: str | None = None
    data_root: str | None = None
    population: int | None = None
    objectives: list[str] | None = None
    max_macs: str | None = None
    max_params: str | None = None
    criterion: str | None = None
    proxy: str | None = None
    evaluations: int | None = None
    calibration_batches: int | None = None
    min_ratio: float | None = None
    ratio_step: float | None = None
    round_to: int | None = None
    min_keep: int | None = None
    ignored_layers: list[str] | None = None
    group_min_ratio: dict[str, float] | None = None
    seeds: list[dict[str, float]] | None = None
    recorded: dict[str, Any] | None = None
    check_space: Callable[["PruningSpace"], None] | None = None


_SPACE = SpaceOptions()

# The value of every flag of ``start`` left out when a study is created: the one definition, also shown in --help
# (the space's own from :class:`SpaceOptions`).
DEFAULTS = {
    "model": "resnet20",
    "dataset": "digits",
    "population": 100,
    "objectives": list(OBJECTIVES),
    "criterion": "taylor",
    "proxy": "bn_kl",
    "evaluations": 0,
    "calibration_batches": 8,
    "min_ratio": _SPACE.min_ratio,
    "ratio_step": _SPACE.ratio_step,
    "round_to": _SPACE.round_to,
    "min_keep": _SPACE.min_keep,
}


def _budget(text: str, flag: str) -> tuple[float, str]:
    """The number and unit (``%`` or a suffix) of budget ``text``; a one-line error for a malformed one, or
    one outside (0, 100 %] of the base model as far as the text alone tells."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*(%|[kKmMgG]?)\s*", str(text))
    if not match:
        raise PruneSearchError(f"{flag} '{text}' is not a budget; use e.g. 50% (of the base model) or 2.5M")
    number, unit = float(match.group(1)), match.group(2)
    if number <= 0:
        raise PruneSearchError(f"{flag} '{text}' leaves no budget; give a positive value")
    if unit == "%" and number > 100:
        raise PruneSearchError(f"{flag} '{text}' is more than the base model; a budget lies in (0, 100%]")
    return number, unit


def check_budget(text: str | None, flag: str) -> None:
    """Refuse, before the base model is known, a budget that no base model makes valid (see :func:`_budget`)."""
    if text is not None:
        _budget(text, flag)


def parse_budget(text: str | None, base: int, flag: str, smallest: int | None = None) -> int | None:
    """``"50%"`` → half of ``base``; ``"2.5M"``/``"300k"``/``"1e6"`` → absolute count.

    A one-line error for a budget outside (0, 100 %] of ``base``, or below ``smallest`` (when given: the
    smallest candidate of the space, which no search can go under)."""
    if text is None:
        return None
    number, unit = _budget(text, flag)
    limit = int(base * number / 100) if unit == "%" else int(number * _SUFFIX[unit.lower()])
    what = _BUDGET_UNITS.get(flag, "")
    if limit <= 0:
        raise PruneSearchError(f"{flag} '{text}' leaves no budget; give a positive value")
    if limit > base:
        raise PruneSearchError(
            f"{flag} '{text}' ({limit:,}{what}) is more than the base model's {base:,}{what}; a budget lies in "
            "(0, 100%] of the base model"
        )
    if smallest is not None and limit < smallest:
        least = math.ceil(1000 * smallest / base) / 10
        raise PruneSearchError(
            f"{flag} '{text}' ({limit:,}{what}) is below the smallest candidate of the space, {smallest:,}{what} "
            f"({least:.1f}% of the base model); give at least that, or lower --min-ratio"
        )
    return limit


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def objective_names(config: dict[str, Any]) -> list[str]:
    """A study's objectives as shown: the proxy's name in place of ``proxy``."""
    return [config["proxy"] if o == "proxy" else o for o in config["objectives"]]


def versions() -> dict[str, str]:
    """Versions of the packages that determine a study's numbers."""
    out = {}
    for package in ("prune-search", "torch", "torch-pruning", "optuna", "pymoo"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out


def stored_ignored(stored: dict[str, Any]) -> list[str]:
    """The ignored layers of a study's configuration, sorted (none for a study made before they were stored)."""
    return list(stored["space"].get("ignored_layers", []))


def contradictions(stored: dict[str, Any], options: StartOptions) -> str | None:
    """The first flag given to a joining worker that disagrees with the stored configuration."""
    given = {
        "model": options.model,
        "dataset": options.dataset,
        "population": options.population,
        "objectives": options.objectives,
        "criterion": options.criterion,
        "proxy": options.proxy,
        "evaluations": options.evaluations,
        "max_macs": options.max_macs,
        "max_params": options.max_params,
        "calibration_batches": options.calibration_batches,
    }
    for key, value in given.items():
        if value is not None and stored["flags"].get(key) != value:
            return f"--{key.replace('_', '-')} {value} (the study has {stored['flags'].get(key)})"
    for key in ("min_ratio", "ratio_step", "round_to", "min_keep"):
        value = getattr(options, key)
        if value is not None and stored["space"][key] != value:
            return f"--{key.replace('_', '-')} {value} (the study has {stored['space'][key]})"
    if options.ignored_layers is not None and sorted(set(options.ignored_layers)) != stored_ignored(stored):
        held = ",".join(stored_ignored(stored)) or "none"
        return f"--ignore-layers {','.join(options.ignored_layers) or 'none'} (the study has {held})"
    if options.model_options is not None and options.model_options != stored["model"]["options"]:
        return f"--model-option {options.model_options} (the study has {stored['model']['options']})"
    if options.checkpoint is not None and sha256_of(options.checkpoint) != stored["checkpoint_sha256"]:
        return f"--checkpoint {options.checkpoint} (its SHA-256 differs from the study's base checkpoint)"
    return None
