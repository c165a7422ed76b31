"""Every trial of a study as arrays, kept up to date by reading only new rows."""

import json
from collections.abc import Sequence

import numpy as np
from sqlalchemy.engine import Engine

from prune_search.errors import PruneSearchError
from prune_search.search.codec import CandidateCodec
from prune_search.space import CandidateBatch
from prune_search.storage.bulk import read_candidates


def encode_genes(levels: np.ndarray, strategies: np.ndarray) -> str:
    """``"l0,l1,…|s0,s1,…"``: the compact text form of one individual."""
    return ",".join(map(str, levels.tolist())) + "|" + ",".join(map(str, strategies.tolist()))


def decode_genes(text: str) -> np.ndarray:
    levels, strategies = text.split("|")
    return np.array([int(v) for v in levels.split(",")] + [int(v) for v in strategies.split(",")], dtype=np.int64)


class Archive:
    """Genes ``X [N, 2G]``, objectives ``F [N, M]``, violations ``[N]`` of all stored trials,
    with their trial numbers, Optuna trial ids and digests (``keys``) in storage order; ``codec`` decodes
    the genes, ``name`` (the study's) is for messages."""

    def __init__(self, engine: Engine, study_id: int, codec: CandidateCodec, objectives: int, name: str) -> None:
        self.engine = engine
        self.study_id = study_id
        self.codec = codec
        self.name = name
        self.X = np.zeros((0, 2 * len(codec)), dtype=np.int64)
        self.F = np.zeros((0, objectives))
        self.violation = np.zeros(0)
        self.generation = np.zeros(0, dtype=np.int64)
        self.numbers = np.zeros(0, dtype=np.int64)
        self.trial_ids = np.zeros(0, dtype=np.int64)
        self.keys: list[str] = []
        self.digests: set[str] = set()
        self._last_row = 0

    def __len__(self) -> int:
        return len(self.X)

    def refresh(self) -> int:
        """Read the rows added since the last refresh; returns how many."""
        rows = read_candidates(self.engine, self.study_id, self._last_row)
        if not rows:
            return 0
        self._last_row = rows[-1]["id"]
        self.X = np.vstack([self.X, np.stack([decode_genes(r["genes"]) for r in rows])])
        self.F = np.vstack([self.F, np.array([json.loads(r["objectives"]) for r in rows], dtype=np.float64)])
        self.violation = np.concatenate([self.violation, [r["violation"] for r in rows]])
        self.generation = np.concatenate([self.generation, [r["generation"] for r in rows]])
        self.numbers = np.concatenate([self.numbers, [r["number"] for r in rows]]).astype(np.int64)
        self.trial_ids = np.concatenate([self.trial_ids, [r["trial_id"] for r in rows]]).astype(np.int64)
        self.keys.extend(r["digest"] for r in rows)
        self.digests.update(r["digest"] for r in rows)
        return len(rows)

    def next_generation(self) -> int:
        return int(self.generation.max()) + 1 if len(self.generation) else 0

    def candidates(self, numbers: Sequence[int]) -> CandidateBatch:
        """The candidates ``[len(numbers), G]`` of trials ``numbers``, in that order (read by the last refresh);
        a one-line error names a number the study does not hold."""
        where = {int(number): row for row, number in enumerate(self.numbers.tolist())}
        missing = [n for n in numbers if n not in where]
        if missing:
            last = int(self.numbers.max()) if len(self.numbers) else -1
            raise PruneSearchError(f"no trial {missing[0]} in study '{self.name}' (it has trials 0..{last})")
        return self.codec.batch(self.X[[where[n] for n in numbers]])
