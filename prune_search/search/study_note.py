"""The study's optuna-dashboard note: configuration and a front summary, refreshed by workers."""

import warnings

import numpy as np
import optuna
from sqlalchemy.engine import Engine

from prune_search.search.archive import Archive
from prune_search.search.config import stored_ignored
from prune_search.search.front import REFERENCE, front_hypervolume, front_indices
from prune_search.search.status import spread
from prune_search.search.study import StudyHandle
from prune_search.search.summary import front_rows, load_archive
from prune_search.storage.measurements import read_scores
from prune_search.storage.url import with_retry


def note_markdown(handle: StudyHandle, archive: Archive | None = None, front: np.ndarray | None = None) -> str:
    """Markdown: what the study searches, its budgets, and the front at this moment. ``archive``: the study's
    trials as a worker holds them (read now when None); ``front [K]``: the archive rows of its feasible proxy
    front (computed when None)."""
    config = handle.config
    archive = archive if archive is not None else load_archive(handle)
    front = front if front is not None else front_indices(archive.F, archive.violation)
    rows = front_rows(handle, archive, proxy_front=front)
    limits = config["constraints"]
    lines = [
        f"## prune-search study `{handle.study.study_name}`",
        "",
        f"- model: `{config['model']['name']}` {config['model']['options'] or ''} on "
        f"`{config['data']['name']}`, {config['groups']} prunable groups; "
        f"base {config['base']['macs']:,} MACs, {config['base']['params']:,} params",
        f"- checkpoint: `{config['checkpoint']}` (SHA-256 `{config['checkpoint_sha256'][:16]}…`)",
        *_ignored_line(config),
        f"- importance: `{config['criterion']}`; objectives: {', '.join(handle.objective_names())} (all minimised)",
        *_fitness_line(config),
        f"- budgets: MACs ≤ {limits['max_macs'] or '—'}, params ≤ {limits['max_params'] or '—'}",
        f"- trials: {len(archive)}; feasible front: {len(rows)}; hypervolume "
        f"{front_hypervolume(archive.F[front], config):.4f} "
        f"(reference point {REFERENCE} on base-normalised objectives)",
        *_evaluations_line(handle, rows),
        "",
        "| trial | MACs % | params % | proxy | measured KL |",
        "|---|---|---|---|---|",
    ]
    proxy = f"proxy_{config['proxy']}"
    lines += [
        f"| {r['trial']} | {r['macs_pct']:.1f} | {r['params_pct']:.1f} | {r[proxy]:.4g} | {r['measured']['kl']:.4g} |"
        if "measured" in r
        else f"| {r['trial']} | {r['macs_pct']:.1f} | {r['params_pct']:.1f} | {r[proxy]:.4g} | — |"
        for r in spread(rows, 12)
    ]
    return "\n".join(lines)


def _ignored_line(config: dict) -> list[str]:
    """The layers the space leaves unpruned (``--ignore-layers``), for a study that has any."""
    ignored = stored_ignored(config)
    return [f"- ignored layers (never pruned): {', '.join(f'`{name}`' for name in ignored)}"] if ignored else []


def _evaluations_line(handle: StudyHandle, rows: list[dict]) -> list[str]:
    """The multi-fidelity budget and use, for a study that has one."""
    budget = handle.config.get("evaluations", 0)
    if not budget:
        return []
    measured = len(read_scores(handle.engine, handle.study_id))
    where = "the front below is that of the measured candidates" if measured else "none measured yet"
    return [
        f"- whole-candidate evaluations: {measured} of {budget} (KL to the unpruned model, BN re-estimated, on the "
        f"fitness sample; per trial in the `measured` user attribute); {where}"
    ]


def _fitness_line(config: dict) -> list[str]:
    """How the measured fitness table was made, for a study that has one."""
    setup = config.get("fitness")
    if setup is None:
        return []
    return [
        f"- fitness table: one group pruned at a time at up to {setup['levels']} keep counts per strategy, "
        f"BN statistics and KL / cross-entropy on {setup['samples']} train samples (seed {setup['seed']})"
    ]


def save_dashboard_note(study: optuna.Study, body: str, engine: Engine, trial_id: int | None = None) -> None:
    """Replace the optuna-dashboard note of ``study`` (or of its trial ``trial_id``) with the markdown ``body``,
    riding out a database outage as every other write does (:func:`~prune_search.storage.url.with_retry`;
    ``engine``: the study's, naming its storage in a one-line error). The trial is looked up inside the retry:
    that too reads the storage."""
    import optuna_dashboard  # imported when a note is written: read commands never need it

    def save() -> None:
        target = study if trial_id is None else optuna.trial.Trial(study, trial_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna_dashboard.save_note(target, body)

    with_retry(save, engine)


def update_study_note(handle: StudyHandle, archive: Archive | None = None, front: np.ndarray | None = None) -> None:
    """Replace the study's dashboard note with the current summary (``archive``, ``front``: as
    :func:`note_markdown` takes them), through :func:`save_dashboard_note`."""
    save_dashboard_note(handle.study, note_markdown(handle, archive, front), handle.engine)
