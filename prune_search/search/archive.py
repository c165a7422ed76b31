"""Every trial of a study as arrays, kept up to date by reading only new rows."""

import json
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.engine import Engine

from prune_search.errors import PruneSearchError
from prune_search.storage.bulk import read_candidates

if TYPE_CHECKING:
    from prune_search.search.stored import StoredStudy

REFRESH_ROWS = 20_000
"""Rows read per query when an archive catches up: at 100,000 trials a single read held ≈ 0.1 GB of rows at once."""


def encode_genes(levels: np.ndarray, strategies: np.ndarray) -> str:
    """``"l0,l1,…|s0,s1,…"``: the compact text form of one individual."""
    return ",".join(map(str, levels.tolist())) + "|" + ",".join(map(str, strategies.tolist()))


def _parse(text: str, dtype: type, count: int) -> np.ndarray | None:
    """The ``count`` comma-separated numbers of ``text`` parsed in C, or None where it holds something else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy's note on text it could not read to its end
        values = np.fromstring(text, dtype=dtype, sep=",")
    return values if len(values) == count else None


def decode_genes(texts: Sequence[str], width: int) -> np.ndarray:
    """Individuals ``[N, width]`` of their compact texts (:func:`encode_genes`), parsed at once."""
    values = _parse(",".join(texts).replace("|", ","), np.int64, len(texts) * width) if texts else np.zeros(0)
    if values is None:
        raise PruneSearchError("the study's candidates table holds a damaged row: its genes do not fit the space")
    return values.reshape(len(texts), width).astype(np.int64)


def decode_objectives(texts: Sequence[str], objectives: int) -> np.ndarray:
    """Objectives ``[N, objectives]`` of their JSON lists (``"[0.1, 2.0, 3.0]"``), parsed at once (each list on
    its own where one holds JSON's ``Infinity`` or ``NaN``)."""
    if not texts:
        return np.zeros((0, objectives))
    values = _parse(",".join(t[1:-1] for t in texts), np.float64, len(texts) * objectives)
    if values is None:
        values = np.array([json.loads(t) for t in texts], dtype=np.float64)
    return values.reshape(len(texts), objectives)


class Archive:
    """Genes ``X [N, 2G]`` (a space of ``groups`` G; :class:`~prune_search.search.codec.CandidateCodec` decodes
    them), objectives ``F [N, M]``, violations ``[N]`` of all stored trials, with their trial numbers, Optuna
    trial ids and digests (``keys``) in storage order; ``name`` (the study's) is for messages.

    The arrays are views of buffers that grow by doubling, so reading new rows costs what the new rows cost,
    not what the study holds.
    """

    def __init__(self, engine: Engine, study_id: int, groups: int, objectives: int, name: str) -> None:
        self.engine = engine
        self.study_id = study_id
        self.name = name
        self._size = 0
        self._buffers = {
            "X": np.zeros((0, 2 * groups), dtype=np.int64),
            "F": np.zeros((0, objectives)),
            "violation": np.zeros(0),
            "generation": np.zeros(0, dtype=np.int64),
            "numbers": np.zeros(0, dtype=np.int64),
            "trial_ids": np.zeros(0, dtype=np.int64),
        }
        self.keys: list[str] = []
        self.digests: set[str] = set()
        self._last_row = 0

    def __len__(self) -> int:
        return self._size

    @property
    def X(self) -> np.ndarray:
        return self._buffers["X"][: self._size]

    @property
    def F(self) -> np.ndarray:
        return self._buffers["F"][: self._size]

    @property
    def violation(self) -> np.ndarray:
        return self._buffers["violation"][: self._size]

    @property
    def generation(self) -> np.ndarray:
        return self._buffers["generation"][: self._size]

    @property
    def numbers(self) -> np.ndarray:
        return self._buffers["numbers"][: self._size]

    @property
    def trial_ids(self) -> np.ndarray:
        return self._buffers["trial_ids"][: self._size]

    def refresh(self) -> int:
        """Read the rows added since the last refresh, :data:`REFRESH_ROWS` at a time; returns how many."""
        added = 0
        while rows := read_candidates(self.engine, self.study_id, self._last_row, REFRESH_ROWS):
            self._add(rows)
            added += len(rows)
            if len(rows) < REFRESH_ROWS:
                break
        return added

    def _add(self, rows: list) -> None:
        self._last_row = rows[-1].id
        self._append(
            X=decode_genes([r.genes for r in rows], self._buffers["X"].shape[1]),
            F=decode_objectives([r.objectives for r in rows], self._buffers["F"].shape[1]),
            violation=np.array([r.violation for r in rows], dtype=np.float64),
            generation=np.array([r.generation for r in rows], dtype=np.int64),
            numbers=np.array([r.number for r in rows], dtype=np.int64),
            trial_ids=np.array([r.trial_id for r in rows], dtype=np.int64),
        )
        self.keys.extend(r.digest for r in rows)
        self.digests.update(r.digest for r in rows)

    def _append(self, **columns: np.ndarray) -> None:
        count = len(columns["X"])
        end = self._size + count
        for name, values in columns.items():
            buffer = self._buffers[name]
            if end > len(buffer):
                grown = np.zeros((max(end, 2 * len(buffer), 1024), *buffer.shape[1:]), dtype=buffer.dtype)
                grown[: self._size] = buffer[: self._size]
                self._buffers[name] = buffer = grown
            buffer[self._size : end] = values
        self._size = end

    def next_generation(self) -> int:
        return int(self.generation.max()) + 1 if len(self.generation) else 0

    def genes_of(self, numbers: Sequence[int]) -> np.ndarray:
        """The genes ``[len(numbers), 2G]`` of trials ``numbers``, in that order (read by the last refresh);
        a one-line error names a number the study does not hold."""
        where = {int(number): row for row, number in enumerate(self.numbers.tolist())}
        missing = [n for n in numbers if n not in where]
        if missing:
            last = int(self.numbers.max()) if len(self.numbers) else -1
            raise PruneSearchError(f"no trial {missing[0]} in study '{self.name}' (it has trials 0..{last})")
        return self.X[[where[n] for n in numbers]]


def load_archive(study: "StoredStudy") -> Archive:
    """Every trial of ``study`` (a :class:`~prune_search.search.stored.StoredStudy` or a handle), read now."""
    archive = Archive(
        study.engine, study.study_id, study.groups(), len(study.config["objectives"]), study.study.study_name
    )
    archive.refresh()
    return archive
