"""The scoring kernel: top-k items for blocks of users from the scorer's factors and its EASE
component, in torch (one matrix multiply and one sparse-by-dense product per block, seen and
non-candidate items masked by index, ``torch.topk``), ties broken exactly by item index, each
recommendation explained by the history item most similar to it (batched). Runs inside Spark
tasks (``mapInArrow``) with as many torch threads as the task has cores, or, when Spark runs in
local mode (the driver has the same cores as its tasks), in the driver process with all of them:
the model is not shipped to Python workers and no rows go through them (:func:`recommend`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lmrec.core import schema as S
from lmrec.core.errors import ParameterError
from lmrec.core.io import is_connect
from lmrec.core.spark import master, parallelism
from lmrec.model.baselines import sparse_dense

BLOCK = 1024  # users per matrix multiply inside a Spark task
_DRIVER_BLOCK_ELEMS = 1 << 26  # users x items scores per block in the driver (256 MB of float32)
_BECAUSE_ELEMS = 1 << 23  # users x k x history (and x d) elements per batched similarity step


def top_k(scores, k: int, item_order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns per row of ``scores`` (B, n; NumPy or torch), best first, ties broken by
    lower ``item_order`` (default: column index), exactly. One ``torch.topk`` of k+1 per block: a
    row whose k-th and (k+1)-th values differ has its top-k set decided; the rare rows where they
    are equal and finite (a tie across the cut) are redone exactly; ties inside the k are ordered
    by ``item_order``. -inf entries sort last in any order.

    Returns:
        (columns (B, k), their scores (B, k)) as NumPy arrays.
    """
    import torch

    t = torch.as_tensor(scores)
    n = t.shape[1]
    k = min(k, n)
    vals, cols = torch.topk(t, min(k + 1, n), dim=1)
    cols, vals, s = cols.numpy()[:, :k].copy(), vals.numpy(), t.numpy()
    crowded = np.flatnonzero((vals[:, k - 1] == vals[:, k]) & np.isfinite(vals[:, k - 1])) if n > k else []
    vals = vals[:, :k].copy()
    order = np.arange(n) if item_order is None else np.asarray(item_order)
    for r in crowded:
        c = np.flatnonzero(s[r] >= vals[r, -1])
        cols[r] = c[np.lexsort((order[c], -s[r, c]))[:k]]
        vals[r] = s[r, cols[r]]
    idx = np.lexsort((order[cols], -vals), axis=1)
    return np.take_along_axis(cols, idx, 1), np.take_along_axis(vals, idx, 1)


def top_k_block(scores, k: int, item_order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k` with -inf entries never returned (rows may get fewer than k): (columns (B, k)
    with -1 padding, scores)."""
    cols, vals = top_k(scores, k, item_order)
    cols[~np.isfinite(vals)] = -1
    return cols, vals


def because(cols: np.ndarray, indptr: np.ndarray, indices: np.ndarray, Inorm) -> np.ndarray:
    """For each recommended column (B, k; -1 = none), the history item (``indices[indptr[r]:
    indptr[r+1]]`` for row r) most similar to it by cosine; -1 without history. Similarities are
    rounded to 5 decimals first and ties go to the first history item, so BLAS rounding (which
    varies with threads and block shapes) never changes the explanation of a rerun.

    Users go in order of history length, in chunks padded to their own longest history and sized
    to about ``_BECAUSE_ELEMS`` elements: one long history in a block no longer pads every user
    of the block to its length (histories are heavy-tailed in real data)."""
    import torch

    Inorm = torch.as_tensor(Inorm)
    B, k = cols.shape
    lengths = np.diff(indptr)
    out = np.full((B, k), -1, dtype=np.int64)
    if B == 0 or k == 0 or int(lengths.max()) == 0:
        return out
    width = max(k, Inorm.shape[1])
    order = np.argsort(lengths, kind="stable")
    order = order[lengths[order] > 0]
    sl = lengths[order]
    s = 0
    while s < len(order):
        # the longest chunk from s whose rows, padded to its last (longest) history, fit the budget
        cost = np.arange(1, len(order) - s + 1) * sl[s:] * width
        e = s + max(1, int(np.searchsorted(cost, _BECAUSE_ELEMS, side="right")))
        rows = order[s:e]
        L = int(sl[e - 1])
        n = sl[s:e]
        pad = np.full((len(rows), L), -1, dtype=np.int64)  # each row's history, padded with -1
        within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        pad[np.repeat(np.arange(len(rows)), n), within] = indices[np.repeat(indptr[rows], n) + within]
        c = torch.from_numpy(np.maximum(cols[rows], 0))
        h = torch.from_numpy(pad)
        sim = torch.bmm(Inorm[c], Inorm[h.clamp(min=0)].transpose(1, 2))  # (b, k, L)
        sim = torch.round(sim, decimals=5).masked_fill_((h < 0)[:, None, :], -torch.inf)
        out[rows] = torch.gather(h, 1, sim.argmax(2)).numpy()
        s = e
    out[cols < 0] = -1
    return out


def block_scores(m: dict, U: np.ndarray, indptr: np.ndarray, indices: np.ndarray, cols: np.ndarray | None = None):
    """(B, n_items) torch scores of one block of users: α·(U Iᵀ + β) + γ·(X_block B_ease), with
    non-candidate items and each user's own history items (``indices[indptr[r]:indptr[r+1]]``,
    rated by D) at -inf. ``m`` holds torch tensors (:func:`as_tensors`). ``cols``: only these item
    positions (B, len(cols)), the same values the full block has in those columns."""
    import torch

    I, beta, mask, ease_row = m["I"], m["beta"], m["mask"], m["ease_row"]
    if cols is not None:
        ct = torch.from_numpy(np.asarray(cols, dtype=np.int64))
        I, beta, mask = I[ct], beta[ct], (None if mask is None else mask[ct])
    B, n = len(U), I.shape[0]
    if m["alpha"]:
        scores = torch.addmm(beta, torch.from_numpy(U), I.T, alpha=m["alpha"], beta=m["alpha"])
    else:
        scores = torch.zeros(B, n)
    rows = np.repeat(np.arange(B), np.diff(indptr))
    if m["gamma"] and len(m["ease_pos"]):
        er = ease_row[indices]
        keep = er >= 0
        if keep.any():
            X = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], er[keep])), shape=(B, len(m["ease_pos"])))
            if cols is None:
                scores.index_add_(1, m["ease_pos"], torch.from_numpy(sparse_dense(X, m["ease_B"].numpy())), alpha=m["gamma"])
            else:
                ec = ease_row[cols]
                on = np.flatnonzero(ec >= 0)
                if len(on):
                    part = sparse_dense(X, m["ease_B"].numpy()[:, ec[on]])
                    scores.index_add_(1, torch.from_numpy(on), torch.from_numpy(part), alpha=m["gamma"])
    if mask is not None:
        scores += mask
    if cols is None:
        scores[torch.from_numpy(rows), torch.from_numpy(indices)] = -torch.inf
    else:
        where = np.full(len(ease_row), -1, dtype=np.int64)
        where[cols] = np.arange(len(cols))
        hit = where[indices] >= 0
        scores[torch.from_numpy(rows[hit]), torch.from_numpy(where[indices][hit])] = -torch.inf
    return scores


def merge_block(m: dict, users: np.ndarray, U: np.ndarray, indptr: np.ndarray, indices: np.ndarray, k: int,
                changed: np.ndarray, prev_cols: np.ndarray, prev_vals: np.ndarray, prev_because: np.ndarray):
    """Recommendation rows (an Arrow table) for users whose top-k is known from the night before and still valid
    (same model, history, text and history items' texts, and none of their k items changed):
    their previous items (``prev_cols`` (B, k') item positions, -1 padding; ``prev_vals`` their
    float32 scores; ``prev_because`` positions, -1 none) merged with their scores of the changed
    items (``changed``: positions of new, re-embedded or (un)listed items). Exactly the full top-k:
    every other item scores as it did and stayed below the k-th; ties by item position as
    :func:`top_k`."""
    B, c = len(users), len(changed)
    new = block_scores(m, U, indptr, indices, cols=changed).numpy() if c else np.zeros((B, 0), np.float32)
    cols = np.hstack([prev_cols, np.broadcast_to(np.asarray(changed, np.int64), (B, c))])
    vals = np.hstack([np.where(prev_cols >= 0, prev_vals, -np.inf).astype(np.float32), new])
    idx = np.lexsort((cols, -vals), axis=1)[:, :k]
    cols, vals = np.take_along_axis(cols, idx, 1), np.take_along_axis(vals, idx, 1)
    cols[~np.isfinite(vals)] = -1
    fresh = idx >= prev_cols.shape[1]  # the changed items that made the list
    why = np.take_along_axis(prev_because, np.minimum(idx, prev_cols.shape[1] - 1), 1) if prev_cols.shape[1] else \
        np.full(idx.shape, -1, np.int64)
    if fresh.any():
        why = np.where(fresh, because(np.where(fresh, cols, -1), indptr, indices, m["I_norm"]), why)
    why[cols < 0] = -1
    return _rows(users, cols, vals, why, m["item_ids_arrow"])


def as_tensors(m: dict) -> dict:
    """The broadcast model as torch tensors (no copies of the float32 arrays) plus the 0/-inf
    candidate mask (None when every item is a candidate) and the item ids as one Arrow array."""
    import torch

    t = dict(m)
    t["item_ids_arrow"] = string_array(m["item_ids"])
    for key in ("I", "beta", "I_norm", "ease_B"):
        t[key] = torch.from_numpy(np.ascontiguousarray(m[key], dtype=np.float32))
    t["ease_pos"] = torch.from_numpy(np.asarray(m["ease_pos"], dtype=np.int64))
    t["mask"] = (None if np.all(m["candidate"]) else
                 torch.from_numpy(np.where(m["candidate"], 0.0, -np.inf).astype(np.float32)))
    return t


def string_array(ids):
    """Ids (any array-like) as one Arrow string array: converted once, then sliced and taken from."""
    import pyarrow as pa

    return pa.array(np.asarray(ids).astype(str).astype(object), pa.string())


def _rows(users, cols: np.ndarray, vals: np.ndarray, because_: np.ndarray, ids):
    """One block's output rows (an Arrow table of :data:`ROWS`): the valid (``cols >= 0``, a prefix
    of each row) top-k entries, ranked from 1, with ``because_item_id`` (null without history).
    ``users``: the block's ids, ``ids``: every item id (indexed by position), both Arrow string
    arrays (:func:`string_array`). Built with Arrow's ``take``: no Python string objects."""
    import pyarrow as pa

    valid = cols >= 0
    b = because_[valid]
    return pa.table({S.COL_USER: users.take(np.repeat(np.arange(len(cols)), valid.sum(1))),
                     S.COL_RANK: np.broadcast_to(np.arange(1, cols.shape[1] + 1, dtype=np.int32), cols.shape)[valid],
                     S.COL_ITEM: ids.take(cols[valid]), S.COL_SCORE: vals[valid].astype(np.float64),
                     S.COL_BECAUSE: ids.take(pa.array(np.maximum(b, 0), mask=b < 0))})


def set_task_threads() -> None:
    """torch threads = the cores of the Spark task running this (``spark.task.cpus``), so the
    tasks of an executor share its cores instead of oversubscribing them."""
    import torch
    from pyspark import TaskContext

    tc = TaskContext.get()
    if tc is not None:
        torch.set_num_threads(max(1, int(tc.cpus())))


def score_block(m: dict, users: np.ndarray, U: np.ndarray, indptr: np.ndarray, indices: np.ndarray,
                k: int):
    """Recommendation rows (an Arrow table) for one block: users, their factors (B, d) and histories
    (the item positions each rated by D, ``indices[indptr[r]:indptr[r+1]]`` for user r)."""
    cols, vals = top_k_block(block_scores(m, U, indptr, indices), k)
    return _rows(users, cols, vals, because(cols, indptr, indices, m["I_norm"]), m["item_ids_arrow"])


def _blocks(ptr: np.ndarray, idx: np.ndarray, start: int, end: int, block: int):
    """(s, e, indptr, indices) for the users start..end-1, ``block`` at a time, of a CSR history
    (``ptr``, ``idx``): each block's own indptr (from 0) and item positions (int64)."""
    for s in range(start, end, block):
        e = min(s + block, end)
        yield s, e, ptr[s:e + 1] - ptr[s], idx[ptr[s]:ptr[e]].astype(np.int64)


def score_partitions(bc, k: int, users_per_partition: int, block: int = BLOCK):
    """A ``mapInArrow`` function over partition numbers (``id``): partition p scores the users
    p·n .. (p+1)·n-1 of the broadcast (their ids, factors and histories), ``block`` at a time."""

    def fn(batches):
        set_task_threads()
        m = as_tensors(bc.value)
        ptr, idx = m["seen_indptr"], m["seen_indices"]
        for batch in batches:
            for p in batch.column("id").to_pylist():
                end = min((p + 1) * users_per_partition, len(m["users"]))
                for s, e, bptr, bidx in _blocks(ptr, idx, p * users_per_partition, end, block):
                    yield from score_block(m, m["users"].slice(s, e - s), m["U"][s:e], bptr, bidx, k).to_batches()

    return fn


ROWS = (f"{S.COL_USER} string, {S.COL_RANK} int, {S.COL_ITEM} string, {S.COL_SCORE} double, "
        f"{S.COL_BECAUSE} string")  # the kernel's output rows (Spark DDL)


def kernel_model(I: np.ndarray, beta: np.ndarray, item_ids: np.ndarray, candidate: np.ndarray, *, alpha: float,
                 gamma: float, ease_B: np.ndarray, ease_pos: np.ndarray) -> dict:
    """What the tasks need (broadcast once): item factors I (n, d) and bias β (n,), item ids,
    candidate mask, blend (α, γ), and the EASE matrix over the item positions ``ease_pos``."""
    ease_row = np.full(len(I), -1, dtype=np.int64)
    ease_row[ease_pos] = np.arange(len(ease_pos))
    return {"I": np.asarray(I, np.float32), "beta": np.asarray(beta, np.float32),
            "I_norm": (I / np.clip(np.linalg.norm(I, axis=1, keepdims=True), 1e-9, None)).astype(np.float32),
            "item_ids": np.asarray(item_ids).astype(str).astype(object),
            "candidate": np.asarray(candidate, bool), "alpha": float(alpha), "gamma": float(gamma),
            "ease_B": np.asarray(ease_B, np.float32), "ease_pos": np.asarray(ease_pos, np.int64), "ease_row": ease_row}


SCORE_PLACES = ("auto", "driver", "tasks")  # LMREC_SCORE_WHERE


def check_score_where(where: str) -> None:
    if where not in SCORE_PLACES:
        raise ParameterError(f"LMREC_SCORE_WHERE must be one of {', '.join(SCORE_PLACES)}, got {where!r}")


def on_driver(spark, where: str = "auto") -> bool:
    """Whether :func:`recommend` scores in the driver process: ``where`` is ``driver``, ``tasks``
    or ``auto`` (the driver when the master is ``local[...]``: its tasks would share the same
    cores, after a broadcast of the model to each Python worker and an Arrow trip of every row).
    On a Spark Connect session the driver is the job's own process: there is no broadcast to ship
    the model to tasks, so ``auto`` scores there and ``tasks`` is refused."""
    check_score_where(where)
    if is_connect(spark):
        if where == "tasks":
            raise ParameterError("LMREC_SCORE_WHERE=tasks needs a Spark session of the job's own (the model is "
                                 "broadcast to the tasks); with LMREC_SPARK_REMOTE set use auto or driver")
        return True
    if where == "auto":
        return master(spark).startswith("local")
    return where == "driver"


def driver_block(n_items: int) -> int:
    """Users per matrix multiply in one process: as many as keep a block's scores near
    ``_DRIVER_BLOCK_ELEMS`` (256 MB), 256 to 4,096. Larger blocks than a task's: fewer passes of
    the per-block work (masks, top-k bookkeeping, explanations) for the same arithmetic."""
    return int(min(4096, max(256, _DRIVER_BLOCK_ELEMS // max(1, n_items))))


def score_rows(model: dict, users: np.ndarray, U: np.ndarray, seen, k: int, *, block: int | None = None,
               threads: int | None = None):
    """Top-k rows (an Arrow table of :data:`ROWS`) for ``users`` in this process, ``block`` users
    per matrix multiply (default :func:`driver_block`) on ``threads`` torch threads (default:
    torch's setting)."""
    import pyarrow as pa
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        m, seen = as_tensors(model), seen.tocsr()
        ptr, idx = seen.indptr.astype(np.int64), seen.indices.astype(np.int64)
        users = string_array(users)
        block = block or driver_block(len(m["item_ids"]))
        tables = [score_block(m, users.slice(s, e - s), np.asarray(U[s:e], np.float32), bptr, bidx, k)
                  for s, e, bptr, bidx in _blocks(ptr, idx, 0, len(users), block)]
    finally:
        torch.set_num_threads(before)
    none = np.zeros((0, k), np.int64)
    return pa.concat_tables(tables) if tables else _rows(users, none, none.astype(np.float32), none, m["item_ids_arrow"])


def recommend(spark, model: dict, users: np.ndarray, U: np.ndarray, seen, k: int, *,
              users_per_partition: int = 2048, block: int | None = None, where: str = "auto"):
    """Top-k rows (:data:`ROWS`) for ``users`` (ids), their factors U (n, d) and what each rated
    (``seen``: CSR (n, n_items), row r = user r) as a Spark DataFrame. In the driver
    (:func:`on_driver`: local mode by default) with all its cores; otherwise by Spark tasks: the
    model, the factors and the histories broadcast once (no shuffle of user rows), partition p
    scoring users p·n .. (p+1)·n-1 for n = ``users_per_partition``, ``block`` users per matrix
    multiply (default: :func:`driver_block` in the driver, :data:`BLOCK` in a task). The rows reach
    Spark as Arrow (``createDataFrame`` of an Arrow table, ``mapInArrow``): 1M rows took 3.4 s
    against 5.1 s as pandas."""
    if on_driver(spark, where):
        rows = score_rows(model, users, U, seen, k, block=block, threads=parallelism(spark))
        return spark.createDataFrame(rows, ROWS)
    seen = seen.tocsr()
    payload = dict(model, users=string_array(users), U=np.asarray(U, np.float32),
                   seen_indptr=seen.indptr.astype(np.int64), seen_indices=seen.indices.astype(np.int32))
    bc = spark.sparkContext.broadcast(payload)
    n_parts = max(1, -(-len(users) // users_per_partition))
    return (spark.range(n_parts, numPartitions=n_parts)
            .mapInArrow(score_partitions(bc, k, users_per_partition, block or BLOCK), ROWS))


def lists_as_positions(prev: pd.DataFrame, users: np.ndarray, item_pos: dict, k: int):
    """Last night's rows (``user_id``, ``rank``, ``item_id``, ``score``, ``because_item_id``) as the
    arrays :func:`merge_rows` takes, one row per user of ``users``: item positions (n, k; -1 no
    row, -2 an item ``item_pos`` does not know), float32 scores, explanation positions (-1 none)."""
    row = {u: i for i, u in enumerate(users)}
    prev = prev[prev[S.COL_USER].isin(row)]
    r, c = prev[S.COL_USER].map(row).to_numpy(), prev[S.COL_RANK].to_numpy() - 1
    cols = np.full((len(users), k), -1, dtype=np.int64)
    vals = np.zeros((len(users), k), dtype=np.float32)
    why = np.full((len(users), k), -1, dtype=np.int64)
    cols[r, c] = prev[S.COL_ITEM].map(item_pos).fillna(-2).astype(np.int64).to_numpy()
    vals[r, c] = prev[S.COL_SCORE].to_numpy(np.float32)
    why[r, c] = prev[S.COL_BECAUSE].map(item_pos).fillna(-1).astype(np.int64).to_numpy()
    return cols, vals, why


def merge_rows(model: dict, users: np.ndarray, U: np.ndarray, seen, k: int, changed: np.ndarray,
               prev_cols: np.ndarray, prev_vals: np.ndarray, prev_because: np.ndarray, *, block: int = 4096):
    """:func:`merge_block` over all ``users`` (their factors U, histories ``seen`` (CSR, row r =
    user r) and yesterday's lists), ``block`` users at a time, on the driver: each block is one
    (B, len(changed)) product, small next to a full scoring. An Arrow table of :data:`ROWS`."""
    import pyarrow as pa

    m = as_tensors(model)
    seen = seen.tocsr()
    ptr, idx = seen.indptr.astype(np.int64), seen.indices.astype(np.int64)
    users = string_array(users)
    frames = [merge_block(m, users.slice(s, e - s), np.asarray(U[s:e], np.float32),
                          bptr, bidx, k, changed, prev_cols[s:e], prev_vals[s:e], prev_because[s:e])
              for s, e, bptr, bidx in _blocks(ptr, idx, 0, len(users), block)]
    return pa.concat_tables(frames)


def popular_rows(users: np.ndarray, seen, popular: np.ndarray, item_ids: np.ndarray, k: int, block: int = 4096):
    """The popularity fallback, an Arrow table of :data:`ROWS`: each user's ``k`` most popular
    candidate items (``popular``, -inf for non-candidates) that the user has not rated (``seen``:
    their rows of the interaction matrix); ``because_item_id`` null."""
    import pyarrow as pa

    order = np.argsort(-popular, kind="stable")
    order = order[np.isfinite(popular[order])]
    most_seen = int(seen.getnnz(axis=1).max()) if seen.shape[0] else 0
    cand = order[: k + most_seen]  # enough for everyone after removing what they rated
    users, ids = string_array(users), string_array(np.asarray(item_ids)[cand])
    tables = []
    for s in range(0, len(users), block):
        unseen = ~(seen[s:s + block][:, cand].toarray() > 0)  # (B, len(cand))
        rank = np.cumsum(unseen, axis=1)
        r, c = np.nonzero(unseen & (rank <= k))
        tables.append(pa.table({S.COL_USER: users.take(s + r), S.COL_RANK: rank[r, c].astype(np.int32),
                                S.COL_ITEM: ids.take(c), S.COL_SCORE: popular[cand[c]].astype(np.float64),
                                S.COL_BECAUSE: pa.nulls(len(r), pa.string())}))
    none = np.zeros(0, np.int64)
    return pa.concat_tables(tables) if tables else _rows(users, none.reshape(0, k), none.reshape(0, k).astype(np.float32),
                                                         none.reshape(0, k), ids)
