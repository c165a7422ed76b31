"""Reference candidates (one uniform keep ratio, group-normalised global ranking, the peers' widths) stored
as trials of the study, so a budget pick can choose between them and the search's own front, and whatever
it picks is a trial that ``finalize`` prunes, fine-tunes, exports and records like any other."""

import torch

from prune_search.search.runner import Scorer
from prune_search.search.study import StudyHandle
from prune_search.search.summary import archive_rows, load_archive
from prune_search.space import CandidateBatch
from prune_search.storage.bulk import complete_trials, persist_generation
from prune_search.storage.measurements import read_scores
from prune_search.storage.study_data import register_worker
from prune_search.storage.url import reported


def stored_rows(handle: StudyHandle, candidates: CandidateBatch, device: torch.device) -> list[dict]:
    """The trial rows (as :func:`~prune_search.search.summary.front_rows` gives them) of ``candidates`` ``[N, G]``,
    in that order: a candidate the study already holds keeps its trial; the others are scored and stored as new
    COMPLETE trials of the next generation, by a worker registered for it (the study then holds more trials than
    its ``--trials``)."""
    codec = handle.codec
    X = codec.canonical(codec.genes(candidates))
    digests = codec.digests(X)
    with reported(handle.url):
        archive = load_archive(handle)
        missing = sorted({i for i, d in enumerate(digests) if d not in archive.digests})
        if missing:
            worker_id, _ = register_worker(handle.engine, handle.study_id)
            fresh = {digests[i]: i for i in missing}
            records = Scorer(handle, device).records(X[list(fresh.values())], archive.next_generation(), worker_id)
            persist_generation(
                handle.engine,
                handle.study_id,
                records,
                handle.space.distributions(),
                target=complete_trials(handle.engine, handle.study_id) + len(records),
                generation=archive.next_generation(),
                worker_id=worker_id,
            )
            archive.refresh()
        where = {key: i for i, key in enumerate(archive.keys)}
        scores = read_scores(handle.engine, handle.study_id)
    return archive_rows(handle, archive, [where[d] for d in digests], scores)
