"""Baselines in the same harness: popularity, item-kNN (cosine), EASE, text-only.
(Spark MLlib ALS lives in the train job, which has the Spark session.)

Each ``fit_*`` returns ``score(users) -> (B, n_items)`` scores; higher is better.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from jobs import schema as S


def interactions(train: pd.DataFrame, n_users: int, n_items: int, *, values=None) -> sp.csr_matrix:
    """(n_users, n_items) CSR of the training pairs (1.0, or ``values``)."""
    v = np.ones(len(train), dtype=np.float32) if values is None else np.asarray(values, dtype=np.float32)
    return sp.csr_matrix((v, (train[S.COL_USER_IDX].to_numpy(), train[S.COL_ITEM_IDX].to_numpy())),
                         shape=(n_users, n_items), dtype=np.float32)


def fit_popularity(train, n_users, n_items):
    counts = np.bincount(train[S.COL_ITEM_IDX], minlength=n_items).astype(np.float32)
    return lambda users: np.broadcast_to(counts, (len(users), n_items))


def popular_items(X: sp.csr_matrix, max_items: int) -> np.ndarray:
    """Sorted indices of the items with any interaction, at most ``max_items`` of the most popular."""
    counts = np.asarray(X.sum(0)).ravel()
    active = np.flatnonzero(counts > 0)
    if len(active) > max_items:
        active = np.sort(active[np.argsort(-counts[active], kind="stable")[:max_items]])
    return active


def fit_item_knn(train, n_users, n_items, *, max_items: int = 20_000):
    """Item-kNN with cosine similarity over the binary interaction matrix (all neighbours), over
    at most ``max_items`` (most popular) items, like EASE: the dense similarity is O(n²) memory."""
    X = interactions(train, n_users, n_items)
    active = popular_items(X, max_items)
    Xa = X[:, active]
    norms = np.sqrt(np.asarray(Xa.multiply(Xa).sum(0))).ravel()
    Xn = Xa @ sp.diags(1.0 / np.clip(norms, 1e-9, None))
    sim = (Xn.T @ Xn).toarray().astype(np.float32)
    np.fill_diagonal(sim, 0.0)

    def score(users):
        out = np.zeros((len(users), n_items), dtype=np.float32)
        out[:, active] = np.asarray(Xa[users] @ sim)
        return out

    return score


def ease_matrix(X: sp.csr_matrix, lam: float = 500.0, max_items: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """EASE (Steck, 2019): B = I - P diag(1/diag P), P = (XᵀX + λI)⁻¹, zero diagonal.

    Returns (B over the active items, those item indices). Above ``max_items`` active items only
    the most popular ones are kept (the dense inverse is O(n³)).
    """
    active = popular_items(X, max_items)
    Xa = X[:, active]
    G = (Xa.T @ Xa).toarray().astype(np.float64)
    G[np.diag_indices_from(G)] += lam
    P = np.linalg.inv(G)
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0.0)
    return B.astype(np.float32), active


def fit_ease(train, n_users, n_items, *, lam: float = 300.0):
    """EASE with the same λ as the scorer's EASE component (ScorerConfig.ease_lambda), so the
    comparison isolates what the rest of the scorer adds."""
    X = interactions(train, n_users, n_items)
    B, active = ease_matrix(X, lam)

    def score(users):
        out = np.zeros((len(users), n_items), dtype=np.float32)
        out[:, active] = np.asarray(X[users][:, active] @ B)
        return out

    return score


def fit_text_only(user_vectors: np.ndarray, item_vectors: np.ndarray):
    """Cosine between the user's and the item's text vectors (unit vectors: a dot product)."""
    return lambda users: user_vectors[users] @ item_vectors.T
