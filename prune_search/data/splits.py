"""Deterministic, stratified train / val / test index splits."""

import numpy as np


def holdout(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (kept, held_out), holding out ``fraction`` of them per class.

    ``labels`` holds the class of every sample (indexed by ``indices``); the result is a
    function of (indices, labels, fraction, seed) only, and both parts are sorted.
    """
    from sklearn.model_selection import train_test_split  # imported on first use: a read command never needs it

    kept, held = train_test_split(
        indices, test_size=fraction, stratify=labels[indices], random_state=seed, shuffle=True
    )
    return np.sort(kept), np.sort(held)


def three_way(
    labels: np.ndarray,
    *,
    val_fraction: float,
    seed: int,
    test_fraction: float | None = None,
    test_indices: np.ndarray | None = None,
    train_indices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices into ``labels``.

    Either the dataset has an official test set (pass ``train_indices`` and
    ``test_indices``) or a stratified ``test_fraction`` is held out first. Validation is then
    held out of train with the same ``seed``; the three sets are disjoint.
    """
    everything = np.arange(len(labels))
    if test_indices is None:
        assert test_fraction is not None
        train_indices, test_indices = holdout(everything, labels, test_fraction, seed)
    elif train_indices is None:
        train_indices = np.setdiff1d(everything, test_indices)
    train, val = holdout(np.asarray(train_indices), labels, val_fraction, seed + 1)
    return train, val, np.sort(np.asarray(test_indices))
