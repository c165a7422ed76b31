"""Creating a study (configuration, importance, space stored once) or joining an existing one."""

import contextlib
import warnings
from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import RDBStorage
from sqlalchemy.engine import Engine
from torch import nn
from tqdm import tqdm

from prune_search.data import DatasetBundle, DataSpec, load_dataset
from prune_search.device import resolve_device
from prune_search.errors import PruneSearchError
from prune_search.evaluators import (
    PROXIES,
    TABLE_PROXIES,
    AdaptiveBNEvaluator,
    CostModel,
    FitnessTable,
    Importance,
    ProxyEvaluator,
    check_criterion,
    compute_importance,
    measure_fitness_table,
)
from prune_search.evaluators.fitness_table import measured_counts
from prune_search.models import ModelSpec, check_trusted, resolve_factory
from prune_search.search.codec import CandidateCodec
from prune_search.search.config import (
    CONFIG_ATTR,
    DEFAULTS,
    FITNESS_KEY,
    IMPORTANCE_KEY,
    OBJECTIVES,
    SPACE_KEY,
    StartOptions,
    check_budget,
    contradictions,
    parse_budget,
    sha256_of,
    versions,
)
from prune_search.search.stored import StoredStudy, load_stored, open_storage, open_stored, study_exists
from prune_search.space import PruningSpace
from prune_search.storage.study_data import drop_data, put_data
from prune_search.storage.url import (
    reported,
    with_retry,
)
from prune_search.threads import set_threads_for
from prune_search.training.cache import cached_baseline
from prune_search.training.checkpoint import load_model

CONFIG_WAIT_S = 600.0
# The measured fitness table: BN statistics and scores of each one-group-pruned network come from
# FITNESS_BATCHES × FITNESS_BATCH_SIZE train samples (shuffled with FITNESS_SEED), at up to
# FITNESS_LEVELS keep counts per group and strategy.
FITNESS_BATCHES = 2
FITNESS_BATCH_SIZE = 128
FITNESS_SEED = 20261130
FITNESS_LEVELS = 9


@dataclass
class StudyHandle(StoredStudy):
    """An open study: what :class:`~prune_search.search.stored.StoredStudy` holds, with its search space,
    importance and fitness table built.

    ``fitness`` is the measured fitness table of a study whose proxy needs one (else None);
    ``trusted_factory`` is the ``package.module:factory`` the user named (``--model``) when
    opening it: only then is a base model built from a stored factory spec.
    """

    space: PruningSpace
    importance: Importance
    fitness: FitnessTable | None = None
    trusted_factory: str | None = None

    def groups(self) -> int:
        """G, the number of groups of the built space."""
        return len(self.space)

    @cached_property
    def codec(self) -> CandidateCodec:
        """The one decoding of the space's individuals (genes, candidates, params, trial rows)."""
        return CandidateCodec(self.space)

    def model_spec(self) -> ModelSpec:
        """The base model's stored spec (checked to be plain data, and buildable: a stored
        ``package.module:factory`` must be the one the user named as ``--model``)."""
        spec = ModelSpec.from_dict(self.config["model"])
        check_trusted(spec, self.trusted_factory, f"study '{self.study.study_name}'")
        return spec


def validate(options: StartOptions) -> None:
    """A one-line error for the first flag of ``options`` that no study can take."""
    objectives = options.objectives or DEFAULTS["objectives"]
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or len(set(objectives)) != len(objectives) or len(objectives) < 2:
        raise PruneSearchError(f"--objectives takes two or three distinct names of {', '.join(OBJECTIVES)}")
    check_criterion(options.criterion or DEFAULTS["criterion"])
    if (options.proxy or DEFAULTS["proxy"]) not in PROXIES:
        raise PruneSearchError(f"unknown proxy '{options.proxy}'; proxies are {', '.join(PROXIES)}")
    if options.evaluations is not None and options.evaluations < 0:
        raise PruneSearchError(f"--evaluations must be 0 (fast fitness only) or more, got {options.evaluations}")
    if (options.population or DEFAULTS["population"]) < 4:
        raise PruneSearchError("--population must be at least 4")
    check_budget(options.max_macs, "--max-macs")
    check_budget(options.max_params, "--max-params")


def _get(options: StartOptions, key: str) -> Any:
    value = getattr(options, key)
    return value if value is not None else DEFAULTS[key]


@dataclass
class BaseModel:
    """A study's starting point: the trained model (eval mode), its data and pruning space.

    :func:`load_base` makes it from the options of a new study, :func:`open_base` from an existing study.
    """

    spec: ModelSpec
    data: DataSpec
    bundle: DatasetBundle
    checkpoint: Path
    model: nn.Module
    space: PruningSpace


def load_base(options: StartOptions, device: torch.device, progress: bool) -> BaseModel:
    """The model, dataset and space that ``options`` name (defaults fill the gaps; no checkpoint:
    the cached baseline, trained on first use; the space leaves ``options.ignored_layers`` unpruned)."""
    model_name = _get(options, "model")
    resolve_factory(model_name)
    data = DataSpec(name=_get(options, "dataset"), root=options.data_root)
    bundle = load_dataset(data)
    checkpoint = options.checkpoint
    if checkpoint is None:
        checkpoint = cached_baseline(
            model_name, data, model_options=options.model_options, device=str(device), progress=progress
        )
    spec = ModelSpec(model_name, bundle.in_channels, bundle.num_classes, bundle.image_size, options.model_options or {})
    model, _ = load_model(Path(checkpoint), spec, trusted_factory=options.model)
    model = model.to(device).eval()
    example = next(iter(bundle.loader("train", 2)))[0].to(device)
    set_threads_for(model, example)
    space = PruningSpace.from_model(
        model,
        example,
        min_ratio=_get(options, "min_ratio"),
        ratio_step=_get(options, "ratio_step"),
        round_to=_get(options, "round_to"),
        min_keep=_get(options, "min_keep"),
        ignored_layers=options.ignored_layers or (),
    )
    return BaseModel(spec, data, bundle, Path(checkpoint), model, space)


def base_importance(base: BaseModel, options: StartOptions, device: torch.device) -> Importance:
    """Importance of ``base.space`` by the options' criterion on the first calibration batches of train."""
    return compute_importance(
        base.model,
        base.space,
        _get(options, "criterion"),
        batches=base.bundle.loader("train", 128),
        max_batches=_get(options, "calibration_batches"),
        device=device,
    )


def fitness_batches(bundle: DatasetBundle) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed train-split sample that scores candidates for the search (the fitness table and the
    whole-candidate evaluator): ``FITNESS_BATCHES`` shuffled batches of ``FITNESS_BATCH_SIZE``."""
    loader = bundle.loader("train", FITNESS_BATCH_SIZE, shuffle=True, seed=FITNESS_SEED)
    return [batch for _, batch in zip(range(FITNESS_BATCHES), loader, strict=False)]


def base_fitness(
    base: BaseModel, space: PruningSpace, importance: Importance, device: torch.device, progress: bool
) -> FitnessTable:
    """The measured fitness table of ``space`` on :func:`fitness_batches`."""
    batches = fitness_batches(base.bundle)
    evaluator = AdaptiveBNEvaluator(base.model, space, importance, [], batches, device, batch_statistics=True)
    setup = {
        "batches": len(batches),
        "samples": sum(len(targets) for _, targets in batches),
        "seed": FITNESS_SEED,
        "levels": FITNESS_LEVELS,
    }
    entries = sum(len(c) for c in measured_counts(space, FITNESS_LEVELS)) * len(space.strategies) + 1
    with tqdm(total=entries, desc="fitness table", disable=not progress, dynamic_ncols=True) as bar:
        return measure_fitness_table(evaluator, FITNESS_LEVELS, setup, on_step=lambda: bar.update())


def _resolved(options: StartOptions, space: PruningSpace) -> tuple[PruningSpace, dict[str, Any]]:
    """The space with the options' per-group floors, and the configuration entries the options
    record (``recorded``, then ``seeds``), after ``check_space`` accepted the base model's space."""
    if options.check_space is not None:
        options.check_space(space)
    if options.group_min_ratio:
        space = PruningSpace(space.structure, replace(space.options, group_min_ratio=options.group_min_ratio))
    entries = dict(options.recorded or {})
    if options.seeds:
        entries["seeds"] = options.seeds
    return space, entries


def _prepare(
    options: StartOptions, device: torch.device, progress: bool
) -> tuple[dict, PruningSpace, Importance, FitnessTable | None]:
    """Everything the first worker computes once: the base model's space, importance, fitness table
    (when the proxy needs one) and costs."""
    get = lambda key: _get(options, key)  # noqa: E731
    base = load_base(options, device, progress)
    space, resolved = _resolved(options, base.space)
    cost = CostModel(space)
    base_macs, base_params = cost.base()
    least_macs, least_params = (int(column[0]) for column in cost(space.smallest()))
    constraints = {  # refused before anything is computed: outside (0, 100 %], or below the smallest candidate
        "max_macs": parse_budget(options.max_macs, base_macs, "--max-macs", least_macs),
        "max_params": parse_budget(options.max_params, base_params, "--max-params", least_params),
    }
    importance = base_importance(base, options, device)
    fitness = base_fitness(base, space, importance, device, progress) if get("proxy") in TABLE_PROXIES else None
    spec, data, checkpoint = base.spec, base.data, base.checkpoint
    proxy_ref = float(ProxyEvaluator(space, importance, fitness=fitness)(space.smallest(), get("proxy"))[0])
    flags = {
        key: get(key) for key in ("model", "dataset", "population", "objectives", "criterion", "proxy", "evaluations")
    }
    flags.update(
        max_macs=options.max_macs, max_params=options.max_params, calibration_batches=get("calibration_batches")
    )
    ignored = sorted(set(options.ignored_layers or []))
    config = {
        "version": 1,
        "flags": flags,
        "model": spec.to_dict(),
        "data": data.to_dict(),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_of(Path(checkpoint)),
        "space": asdict(space.options) | {"strategies": list(space.strategies), "ignored_layers": ignored},
        "groups": len(space),
        "criterion": get("criterion"),
        "proxy": get("proxy"),
        "objectives": get("objectives"),
        "population": get("population"),
        "evaluations": get("evaluations"),
        "constraints": constraints,
        "base": {"macs": base_macs, "params": base_params, "proxy_ref": proxy_ref},
        "dead_groups": importance.dead,
        "versions": versions(),
        **resolved,
    }
    if fitness is not None:
        config["fitness"] = fitness.setup
    return config, space, importance, fitness


def _load(
    url: str, engine: Engine, storage: RDBStorage, name: str, model: str | None, wait_s: float = 0.0
) -> StudyHandle:
    """The handle of study ``name``; a worker joining a study being created waits up to ``wait_s`` seconds for
    its configuration."""
    return _handle(load_stored(url, engine, storage, name, wait_s), model)


def _handle(stored: StoredStudy, model: str | None) -> StudyHandle:
    """The handle of a stored study: its space, importance and fitness table built; ``model`` (the user's
    ``--model``) checked against the study's."""
    name = stored.study.study_name
    if stored.config["proxy"] in TABLE_PROXIES and stored.fitness_json is None:
        raise PruneSearchError(f"study '{name}' lacks its stored fitness table; create it again under a new name")
    spec = ModelSpec.from_dict(stored.config.get("model"))
    if model is not None and model != spec.name:
        raise PruneSearchError(
            f"study '{name}' exists with another configuration: --model {model} (the study has {spec.name}); "
            "drop the flag or choose another --study"
        )
    return StudyHandle(
        **{field.name: getattr(stored, field.name) for field in fields(StoredStudy)},
        space=PruningSpace.from_json(stored.space_json),
        importance=Importance.from_json(stored.importance_json),
        fitness=FitnessTable.from_json(stored.fitness_json) if stored.fitness_json is not None else None,
        trusted_factory=model,
    )


def base_checkpoint(handle: StudyHandle, override: Path | None) -> Path:
    path = Path(override or handle.config["checkpoint"])
    if not path.is_file():
        raise PruneSearchError(
            f"the study's base checkpoint {path} is missing on this machine; pass --checkpoint PATH to a copy of it"
        )
    if sha256_of(path) != handle.config["checkpoint_sha256"]:
        raise PruneSearchError(
            f"checkpoint {path} is not the study's base checkpoint (SHA-256 differs); "
            "pass the one the study was made from"
        )
    return path


def open_base(handle: StudyHandle, checkpoint: Path | None = None, data_root: str | None = None) -> BaseModel:
    """The base model of an existing study (CPU, eval mode) with its dataset and the study's splits.

    ``checkpoint`` overrides the stored path (it must be the same file, see :func:`base_checkpoint`);
    ``data_root`` the folder holding the dataset's files.
    """
    path = base_checkpoint(handle, checkpoint)
    spec = handle.model_spec()
    model, _ = load_model(path, spec, trusted_factory=handle.trusted_factory)
    stored = DataSpec.from_dict(handle.config["data"])
    data = DataSpec(stored.name, data_root or stored.root, stored.val_fraction, stored.split_seed, stored.image_size)
    bundle = load_dataset(data)
    set_threads_for(model.eval(), torch.zeros(1, bundle.in_channels, bundle.image_size, bundle.image_size))
    return BaseModel(spec, data, bundle, path, model, handle.space)


def open_study(url: str, name: str, *, model: str | None = None) -> StudyHandle:
    """An existing prune-search study (for ``front``, ``finalize``, ...).

    ``model`` is the user's ``--model``: it must be the study's model, and it is the one
    ``package.module:factory`` that may be built from the stored spec (``handle.trusted_factory``).
    """
    return _handle(open_stored(url, name), model)


def clash_error(name: str, clash: str) -> PruneSearchError:
    """The one-line error of a joining worker whose flag ``clash`` contradicts study ``name``."""
    return PruneSearchError(
        f"study '{name}' exists with another configuration: {clash}; drop the flag or choose another --study"
    )


def create_or_join(
    url: str, name: str, options: StartOptions, *, device: str = "auto", progress: bool = True
) -> tuple[StudyHandle, bool]:
    """Open study ``name``, creating it from ``options`` if missing. Returns (handle, created).

    Group floors, generation-0 seeds and recorded entries come resolved in ``options`` (a
    sensitivity scan: ``prune_search.sensitivity.create_or_join_with_scan``)."""
    validate(options)
    engine, storage = open_storage(url, create=True)
    with reported(url):
        return _create_or_join(url, engine, storage, name, options, device, progress)


def _configure(
    engine: Engine, storage: RDBStorage, study: optuna.Study, options: StartOptions, device: str, progress: bool
) -> None:
    """Compute and store the configuration, space, importance and fitness table of the new ``study``."""
    config, space, importance, fitness = _prepare(options, resolve_device(device), progress)
    study_id = storage.get_study_id_from_name(study.study_name)
    put_data(engine, study_id, SPACE_KEY, space.to_json())
    put_data(engine, study_id, IMPORTANCE_KEY, importance.to_json())
    if fitness is not None:
        put_data(engine, study_id, FITNESS_KEY, fitness.to_json())
    metric = {"proxy": config["proxy"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric.get(o, o) for o in config["objectives"]])
    study.set_user_attr(CONFIG_ATTR, config)


def _create_or_join(
    url: str, engine: Engine, storage: RDBStorage, name: str, options: StartOptions, device: str, progress: bool
) -> tuple[StudyHandle, bool]:
    created = False
    if not study_exists(storage, engine, name):
        directions = ["minimize"] * len(options.objectives or DEFAULTS["objectives"])
        try:  # claim the name first: racing workers wait for the creator's configuration in _load
            study = optuna.create_study(study_name=name, storage=storage, directions=directions)
        except optuna.exceptions.DuplicatedStudyError:
            study = None
        if study is not None:
            try:
                _configure(engine, storage, study, options, device, progress)
            except BaseException:  # a study without its configuration is of no use: the next start makes it again
                with contextlib.suppress(Exception):  # the storage may be what failed
                    drop_data(engine, storage.get_study_id_from_name(name))
                    optuna.delete_study(study_name=name, storage=storage)
                raise
            created = True
    # a joining worker reads the study while its creator or a database restart may be under way: ride it out
    handle = with_retry(lambda: _load(url, engine, storage, name, options.model, wait_s=CONFIG_WAIT_S), engine)
    if not created:
        handle.model_spec()  # a stored package.module:factory must be the worker's own --model
        clash = contradictions(handle.config, options)
        if clash:
            raise clash_error(name, clash)
    return handle, created
