"""Every trial of a study as arrays, kept up to date by reading only new rows."""

import hashlib
import json

import numpy as np
from sqlalchemy.engine import Engine

from prune_search.storage.bulk import read_candidates


def encode_genes(levels: np.ndarray, strategies: np.ndarray) -> str:
    """``"l0,l1,…|s0,s1,…"``: the compact text form of one individual."""
    return ",".join(map(str, levels.tolist())) + "|" + ",".join(map(str, strategies.tolist()))


def decode_genes(text: str) -> np.ndarray:
    levels, strategies = text.split("|")
    return np.array([int(v) for v in levels.split(",")] + [int(v) for v in strategies.split(",")], dtype=np.int64)


def digest(keep: np.ndarray, strategies: np.ndarray) -> str:
    """Identity of the pruned model a candidate describes (keep counts + effective strategies)."""
    return hashlib.sha1(keep.astype(np.int64).tobytes() + strategies.astype(np.int64).tobytes()).hexdigest()


class Archive:
    """Genes ``X [N, 2G]``, objectives ``F [N, M]``, violations ``[N]`` of all stored trials,
    with their trial numbers, Optuna trial ids and digests (``keys``) in storage order."""

    def __init__(self, engine: Engine, study_id: int, genes: int, objectives: int) -> None:
        self.engine = engine
        self.study_id = study_id
        self.X = np.zeros((0, genes), dtype=np.int64)
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
