"""Baselines in the same harness: popularity, item-kNN (cosine), EASE, text-only.
(Spark MLlib ALS lives in the train job, which has the Spark session.)

Each ``fit_*`` returns ``score(users) -> (B, n_items)`` scores; higher is better.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lmrec.core import schema as S


EASE_LAMBDA = 300.0  # the one default EASE L2 λ (the scorer's component and the EASE baseline)
# EASE inverts in float32 while a bound on the condition number of XᵀX + λI stays below this:
# float32's relative error is about κ·6e-8, so at most ~1e-3 here; above it, float64.
EASE_FLOAT32_MAX_COND = 1.5e4

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


def gram(Xa: sp.spmatrix, dtype=np.float64, block: int = 2048) -> np.ndarray:
    """Dense XᵀX, filled a block of columns at a time (a near-dense sparse product of 20k items
    would take about three times the dense matrix's memory), the blocks on torch's thread count
    (SciPy's sparse product releases the GIL; each block is the same product as in one thread).
    Measured on 2 cores, 162,000 users x 20,000 items, 15M ratings: one thread 38.9 s, two 20.5 s,
    equal to the last bit."""
    import torch

    Xc = sp.csc_matrix(Xa, dtype=np.float32)
    XT = Xc.T.tocsr()
    n = Xc.shape[1]
    G = np.empty((n, n), dtype=dtype)

    def part(s: int) -> None:
        G[:, s:s + block] = (XT @ Xc[:, s:s + block]).toarray()

    starts = range(0, n, block)
    workers = max(1, min(torch.get_num_threads(), os.cpu_count() or 1, len(starts)))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(part, starts))
    return G


def item_cosine(Xa: sp.spmatrix, shrink: float = 0.0) -> np.ndarray:
    """Dense (n, n) float32 cosine similarity of the binary columns of ``Xa``, zero diagonal: for
    binary X, cos(i, j) = G_ij / (sqrt(G_ii G_jj) + shrink) with G = XᵀX."""
    sim = gram(Xa, np.float32)
    norm = np.sqrt(np.clip(np.diag(sim), 1e-9, None))
    if shrink:
        sim /= norm[:, None] * norm[None, :] + np.float32(shrink)
    else:  # in place: no second n x n matrix (1.6 GB at 20k items)
        sim /= norm[:, None]
        sim /= norm[None, :]
    np.fill_diagonal(sim, 0.0)
    return sim


def fit_item_knn(train, n_users, n_items, *, max_items: int = 20_000, k: int | None = None, shrink: float = 0.0):
    """Item-kNN with cosine similarity over the binary interaction matrix (:func:`item_cosine`),
    over at most ``max_items`` (most popular) items, like EASE: the dense similarity is O(n²)
    memory. ``k``: each item keeps only its k most similar items as neighbours (None: all)."""
    X = interactions(train, n_users, n_items)
    active = popular_items(X, max_items)
    Xa = X[:, active]
    sim = item_cosine(Xa, shrink)
    if k is not None and k < len(active) - 1:  # column j scores item j: keep its k largest entries,
        thr = -np.partition(-sim, k - 1, axis=0)[k - 1]  # ties at the k-th value to the lower item index
        keep = sim > thr
        tied = sim == thr
        keep |= tied & (np.cumsum(tied, axis=0, dtype=np.int32) <= k - keep.sum(0, dtype=np.int32))
        sim[~keep] = 0.0

    def score(users):
        out = np.zeros((len(users), n_items), dtype=np.float32)
        out[:, active] = np.asarray(Xa[users] @ sim)
        return out

    return score


def knn_scale(B: np.ndarray, sim: np.ndarray, weight: float = 1.0) -> float:
    """c = weight · ‖B‖/‖sim‖ (Frobenius norms): the coefficient of an item-kNN similarity folded
    into an EASE matrix with a weight relative to their sizes (:func:`add_knn`)."""
    return float(weight) * float(np.linalg.norm(B)) / max(float(np.linalg.norm(sim)), 1e-30)


def add_knn(B: np.ndarray, sim: np.ndarray, weight: float) -> float:
    """``B`` += c · ``sim`` with c = :func:`knn_scale`, in place; returns c. An item-kNN similarity
    folded into an EASE matrix with a weight relative to their sizes, so one grid of weights fits
    every catalogue; X·B then scores EASE plus item-kNN in one product."""
    if not weight:
        return 0.0
    c = knn_scale(B, sim, weight)
    sim *= np.float32(c)  # in place: no third n x n matrix
    B += sim
    return c


def spd_inverse(G: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix (float32 or float64, the result in the
    same type), overwriting ``G``: a Cholesky factor in place and its inverse (torch's LAPACK, the
    task's threads), half the flops of the general LU inverse. ``benchmarks/ease_inverse.py``
    measures it against ``numpy.linalg.inv``. (Not scipy's in-place ``inv(..., overwrite_a=True)``:
    in scipy 1.17 it crashed in OpenBLAS on a 20,000² matrix in the 25M benchmark.)

    Raises:
        numpy.linalg.LinAlgError: ``G`` is not positive definite (in its precision).
    """
    import torch

    g = torch.from_numpy(G)
    L, info = torch.linalg.cholesky_ex(g, out=(g, torch.empty((), dtype=torch.int32)))
    if int(info):
        raise np.linalg.LinAlgError(f"matrix not positive definite (leading minor {int(info)})")
    return torch.cholesky_inverse(L).numpy()


def _abs_row_sum_max(G: np.ndarray, block: int = 2048) -> float:
    """max_i Σ_j |G_ij| (Gershgorin's bound on the largest eigenvalue), a block of rows at a time:
    no n×n temporary (1.6 GB at 20,000 items in float32); 0 for an empty matrix."""
    return max((float(np.abs(G[s:s + block]).sum(1).max()) for s in range(0, len(G), block)), default=0.0)


def ease_matrix(X: sp.csr_matrix, lam: float = EASE_LAMBDA, max_items: int = 20_000, *,
                side: np.ndarray | None = None, side_weight: float = 0.0,
                dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """EASE (Steck, 2019): B = I - P diag(1/diag P), P = (XᵀX + λI)⁻¹, zero diagonal. With
    ``side`` (n_items, d), collective EASE (Jeunen et al., RecSys 2020): the side information
    enters as extra rows of X weighted by sqrt(``side_weight``), i.e. XᵀX + side_weight · S Sᵀ.

    Returns (B over the active items, those item indices). Above ``max_items`` active items only
    the most popular ones are kept (the dense inverse is O(n³)).

    Precision (``dtype`` None): float32 when Gershgorin's bound on the condition number,
    (max_i Σ_j |G_ij| + λ) / λ, is at most ``EASE_FLOAT32_MAX_COND`` (float32's error then at most
    ~1e-3 of P), else float64; a float32 factorisation that fails falls back to float64. The Gram
    matrix of 0/1 counts is exact in float32 up to 16.7M co-occurrences. Peak: two n×n matrices
    (the Gram matrix, overwritten by its Cholesky factor, and the inverse): 3.2 GB at 20k items in
    float32 (6.4 GB in float64), where float32 also inverts about 1.6x faster.
    """
    active = popular_items(X, max_items)
    G = gram(X[:, active], np.float32 if dtype is None else dtype)
    if side is not None and side_weight:
        import torch

        Sa = torch.from_numpy(np.asarray(side[active], G.dtype))
        torch.from_numpy(G).addmm_(Sa, Sa.T, alpha=side_weight)  # in place: no third n×n matrix
    if dtype is None and (_abs_row_sum_max(G) + lam) / lam > EASE_FLOAT32_MAX_COND:
        G = G.astype(np.float64)
    G[np.diag_indices_from(G)] += lam
    try:
        P = spd_inverse(G)
    except np.linalg.LinAlgError:
        if dtype is not None or G.dtype == np.float64:
            raise
        del G
        return ease_matrix(X, lam, max_items, side=side, side_weight=side_weight, dtype=np.float64)
    del G
    P /= -np.diag(P).copy()[None, :]
    np.fill_diagonal(P, 0.0)
    return np.ascontiguousarray(P, dtype=np.float32), active


def fit_ease(train, n_users, n_items, *, lam: float = EASE_LAMBDA, side: np.ndarray | None = None,
             side_weight: float = 0.0, knn_weight: float = 0.0):
    """EASE (``side``: collective EASE with item side information, see :func:`ease_matrix`;
    ``knn_weight``: item-kNN folded in, :func:`add_knn`)."""
    X = interactions(train, n_users, n_items)
    B, active = ease_matrix(X, lam, side=side, side_weight=side_weight)
    if knn_weight:
        add_knn(B, item_cosine(X[:, active]), knn_weight)
    return ease_score_fn(X, B, active, n_items)


def sparse_dense(X, dense: np.ndarray) -> np.ndarray:
    """``X @ dense`` (X: SciPy CSR, float32; ``dense``: (n, m) float32) as torch's ``embedding_bag``:
    each row of X a bag of ``dense``'s rows, summed with X's values as weights (FBGEMM's kernel,
    torch's threads over X's rows). Each output row is summed in X's index order, as SciPy does:
    with all values 1 (interactions, every EASE and item-kNN product here) the result is SciPy's to
    the last bit; other weights differ by float32 rounding (fused multiply-add). Measured on 2 cores
    (20,000 items, 155 history items a user, same run): 512 users SciPy on row slices per thread
    0.35 s, ``embedding_bag`` 0.19 s; 1,024 users 0.56 -> 0.37 s; 3,000 users 1.60 -> 1.12 s
    (earlier: torch's CSR ``sparse.mm`` about 2x SciPy's time, column tiles no better than rows)."""
    import torch

    if X.shape[1] != dense.shape[0]:
        raise ValueError(f"sparse_dense: X has {X.shape[1]} columns, dense {dense.shape[0]} rows")
    X = X.tocsr()
    if not X.nnz:
        return np.zeros((X.shape[0], dense.shape[1]), np.float32)
    data = np.asarray(X.data, dtype=np.float32)
    weights = None if (data == 1).all() else torch.from_numpy(data)
    idx = torch.from_numpy(X.indices.astype(np.int64, copy=False))
    offsets = torch.from_numpy(X.indptr[:-1].astype(np.int64))
    table = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))
    out = torch.nn.functional.embedding_bag(idx, table, offsets, mode="sum", per_sample_weights=weights)
    return out.numpy()


def ease_dense(X: sp.csr_matrix, B: np.ndarray, active: np.ndarray, n_items: int) -> np.ndarray:
    """(X.shape[0], n_items) EASE scores X @ B over the ``active`` items B covers (zero elsewhere)."""
    out = np.zeros((X.shape[0], n_items), dtype=np.float32)
    out[:, active] = sparse_dense(X[:, active].tocsr().astype(np.float32, copy=False), B)
    return out


def ease_score_fn(X: sp.csr_matrix, B: np.ndarray, active: np.ndarray, n_items: int):
    """users -> (len(users), n_items) EASE scores of those users (:func:`ease_dense`)."""
    return lambda users: ease_dense(X[users], B, active, n_items)


def fit_text_only(user_vectors: np.ndarray, item_vectors: np.ndarray):
    """Cosine between the user's and the item's text vectors (unit vectors: a dot product)."""
    return lambda users: user_vectors[users] @ item_vectors.T


def regularised_biases(train: pd.DataFrame, n_users: int, n_items: int, *, reg_user: float = 15.0,
                       reg_item: float = 10.0, iterations: int = 10) -> tuple[float, np.ndarray, np.ndarray]:
    """(μ, b_u, b_i): Koren's regularised biases by alternating closed-form updates
    (b_i = Σ(r - μ - b_u) / (reg_item + n_i), then b_u likewise); 0 for users or items without ratings."""
    u, i = train[S.COL_USER_IDX].to_numpy(), train[S.COL_ITEM_IDX].to_numpy()
    r = train[S.COL_RATING].to_numpy(dtype=np.float64)
    mu = float(r.mean())
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    nu = np.bincount(u, minlength=n_users)
    ni = np.bincount(i, minlength=n_items)
    for _ in range(iterations):
        bi = np.bincount(i, r - mu - bu[u], minlength=n_items) / (reg_item + ni)
        bu = np.bincount(u, r - mu - bi[i], minlength=n_users) / (reg_user + nu)
    return mu, bu, bi


def fit_biases(train: pd.DataFrame, n_users: int, n_items: int, *, reg_user: float = 15.0, reg_item: float = 10.0,
               iterations: int = 10):
    """The rating baseline μ + b_u + b_i (:func:`regularised_biases`). Returns
    ``predict(users, items) -> ratings``; unseen users or items get 0 bias: the fallback of rating
    models for pairs they cannot score."""
    mu, bu, bi = regularised_biases(train, n_users, n_items, reg_user=reg_user, reg_item=reg_item, iterations=iterations)

    def predict(users, items):
        users, items = np.asarray(users), np.asarray(items)
        pu = np.where(users < n_users, bu[np.minimum(users, n_users - 1)], 0.0)
        pi = np.where(items < n_items, bi[np.minimum(items, n_items - 1)], 0.0)
        return mu + pu + pi

    return predict
