"""The training data of a date as NumPy arrays: ratings as of D with stable indices, and the text
vectors aligned to those indices (what train, gate and score read)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from lmrec.core import schema as S

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Ratings as of D with stable indices, and text vectors aligned to those indices."""

    ratings: pd.DataFrame  # user_idx, item_idx, rating, event_ts
    user_ids: np.ndarray  # (n_users,) id of each user index ('' where unknown by D)
    item_ids: np.ndarray  # (n_items,)
    item_text: np.ndarray  # (n_items, d_t) zero where no text
    user_text: np.ndarray  # (n_users, d_t)
    has_item_text: np.ndarray  # (n_items,) bool
    rating_max: float
    versions: dict  # Delta table versions read

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def _ids(pdf: pd.DataFrame, col_id: str, col_idx: str) -> np.ndarray:
    n = int(pdf[col_idx].max()) + 1 if len(pdf) else 0
    out = np.full(n, "", dtype=object)
    out[pdf[col_idx].to_numpy()] = pdf[col_id].to_numpy()
    return out


def _vectors(emb, index: pd.DataFrame, col_id: str, col_idx: str, n: int, dim: int):
    """(n, dim) float32 vectors at their indices (zero where none) and which indices have one,
    from an Arrow table (id, vector)."""
    out = np.zeros((n, dim), dtype=np.float32)
    has = np.zeros(n, dtype=bool)
    if emb.num_rows:
        at = pd.Series(index[col_idx].to_numpy(), index=index[col_id].to_numpy())
        idx = at.reindex(emb.column(col_id).to_numpy(zero_copy_only=False)).to_numpy()
        vec = emb.column(S.COL_VECTOR).combine_chunks()
        flat = np.asarray(vec.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        rows = flat.reshape(len(vec), dim) if len(flat) == len(vec) * dim else np.stack(vec.to_numpy(zero_copy_only=False))
        keep = ~np.isnan(idx)
        out[idx[keep].astype(np.int64)] = rows[keep]
        has[idx[keep].astype(np.int64)] = True
    return out, has


def load_training_data(spark, cfg, run_date: dt.date) -> TrainingData:
    """Read the rating matrix, indices and embeddings of ``run_date`` into NumPy, through Arrow
    (:func:`lmrec.core.io.read_arrow`: delta-rs, no JVM round trip); ratings sorted by (user
    index, item index), so what trains on them does not depend on the files' layout.

    The indices are append-only and shared by all dates: they are read restricted to the ids D
    knows (those of :func:`lmrec.core.pit.known_ids`: rated or wrote by the end of D, listed in
    D's catalogue), so D's shapes and ids are the same whether later dates ran before it (a
    backfill) or not."""
    import pyarrow.compute as pc

    from lmrec.core.io import read_arrow
    from lmrec.core.pit import wrote_by

    def read(table, day, columns):
        arrow, versions[table] = read_arrow(spark, cfg, table, day, columns)
        return arrow

    versions = {}
    rm = read(S.RATING_MATRIX, run_date, [S.COL_USER_IDX, S.COL_ITEM_IDX, S.COL_RATING, S.COL_EVENT_TS])
    if rm.num_rows == 0:
        raise RuntimeError(f"{S.RATING_MATRIX} has no ratings for {run_date}: run ingest and rating_matrix first")
    writers = wrote_by(read(S.USER_TEXT_RAW, run_date, [S.COL_USER, S.COL_EVENT_TS]), run_date)
    catalogue = pc.unique(read(S.ITEMS_RAW, run_date, [S.COL_ITEM]).column(S.COL_ITEM))
    uidx = read(S.USER_INDEX, None, [S.COL_USER, S.COL_USER_IDX])
    iidx = read(S.ITEM_INDEX, None, [S.COL_ITEM, S.COL_ITEM_IDX])
    uidx = uidx.filter(pc.or_(pc.is_in(uidx.column(S.COL_USER_IDX), pc.unique(rm.column(S.COL_USER_IDX))),
                              pc.is_in(uidx.column(S.COL_USER), writers))).to_pandas()
    iidx = iidx.filter(pc.or_(pc.is_in(iidx.column(S.COL_ITEM_IDX), pc.unique(rm.column(S.COL_ITEM_IDX))),
                              pc.is_in(iidx.column(S.COL_ITEM), catalogue))).to_pandas()
    item_emb = read(S.ITEM_EMBEDDINGS, run_date, [S.COL_ITEM, S.COL_VECTOR])
    user_emb = read(S.USER_EMBEDDINGS, run_date, [S.COL_USER, S.COL_VECTOR])
    dim = len(item_emb.column(S.COL_VECTOR)[0]) if item_emb.num_rows else 384
    rm = rm.to_pandas(coerce_temporal_nanoseconds=True)
    if getattr(rm[S.COL_EVENT_TS].dt, "tz", None) is not None:
        rm[S.COL_EVENT_TS] = rm[S.COL_EVENT_TS].dt.tz_convert(None)  # naive UTC, as Spark's session gives it
    order = np.lexsort((rm[S.COL_ITEM_IDX].to_numpy(), rm[S.COL_USER_IDX].to_numpy()))
    rm = rm.iloc[order].reset_index(drop=True)
    user_ids, item_ids = _ids(uidx, S.COL_USER, S.COL_USER_IDX), _ids(iidx, S.COL_ITEM, S.COL_ITEM_IDX)
    item_text, has_item = _vectors(item_emb, iidx, S.COL_ITEM, S.COL_ITEM_IDX, len(item_ids), dim)
    user_text, _ = _vectors(user_emb, uidx, S.COL_USER, S.COL_USER_IDX, len(user_ids), dim)
    versions = {t: versions[t] for t in (S.RATING_MATRIX, S.ITEM_EMBEDDINGS, S.USER_EMBEDDINGS, S.USER_TEXT_RAW, S.ITEMS_RAW,
                                         S.USER_INDEX, S.ITEM_INDEX)}
    return TrainingData(rm, user_ids, item_ids, item_text, user_text, has_item, max(cfg.rating_max, float(rm[S.COL_RATING].max())), versions)


def without_held_out_texts(spark, cfg, run_date: dt.date, data: TrainingData, held_out: pd.DataFrame) -> TrainingData:
    """``data`` with item and user vectors built without what was written about
    the (user_idx, item_idx) pairs in ``held_out`` (the validation and test parts): the nightly
    texts (``lmrec.text.builders``) over the user texts about any other pair or about no item, and
    the other pairs' ratings. D's stored vectors hold every text written by D, the reviews and tags
    of held-out ratings included: what selects and judges a model fit on the rest must not read
    them. Texts equal to D's stored ones reuse their vectors; the rest are encoded as the
    embedding jobs encode them. Nothing of the texts is logged."""
    from lmrec.core.io import read_table
    from lmrec.core.pit import as_of
    from lmrec.text.builders import build_item_text, build_user_text
    from lmrec.text.embedding import embed_texts

    pairs = spark.createDataFrame(pd.DataFrame({
        S.COL_USER: data.user_ids[held_out[S.COL_USER_IDX].to_numpy()].astype(str),
        S.COL_ITEM: data.item_ids[held_out[S.COL_ITEM_IDX].to_numpy()].astype(str)}).drop_duplicates(),
        f"{S.COL_USER} string, {S.COL_ITEM} string")
    keys = [S.COL_USER, S.COL_ITEM]
    said = as_of(read_table(spark, cfg, S.USER_TEXT_RAW, run_date), run_date).join(pairs, keys, "left_anti")
    items = read_table(spark, cfg, S.ITEMS_RAW, run_date)
    ratings = read_table(spark, cfg, S.RATING_MATRIX, run_date).join(pairs, keys, "left_anti")
    texts = {S.ITEM_EMBEDDINGS: (S.COL_ITEM, build_item_text(items, said, run_date), data.item_ids),
             S.USER_EMBEDDINGS: (S.COL_USER, build_user_text(said, ratings, items, run_date, top_titles=cfg.user_text_titles),
                                 data.user_ids)}
    out = []
    for table, (col_id, text, ids) in texts.items():
        e = embed_texts(spark, cfg, text, previous=read_table(spark, cfg, table, run_date), col_id=col_id)
        arrow = e.vectors.select(col_id, S.COL_VECTOR).toArrow()
        e.joined.unpersist()
        index = pd.DataFrame({col_id: ids, "_idx": np.arange(len(ids))})
        out.append(_vectors(arrow, index[index[col_id] != ""], col_id, "_idx", len(ids), data.item_text.shape[1])[0])
        log.info("%s %s without the held-out pairs' texts: %d texts, %d differ from D's and were encoded",
                 table, run_date, e.total, e.todo)
    return replace(data, item_text=out[0], user_text=out[1])


HELD_OUT_FREE_TEXTS = "held_out_free_texts.npz"  # train's run artifact: the vectors below, for the gate


def held_out_free_key(cfg, run_date: dt.date, data: TrainingData, held_out: pd.DataFrame, spark=None) -> str:
    """Everything :func:`without_held_out_texts` reads, as one string: the files of D's partitions
    of the tables it reads, in the versions ``data`` was read from (a rerun of a job for D writes
    new files; another date's run, a backfill beside this one, changes nothing here), the ids D
    knows, a digest of the held-out pairs, the user-text setting and the encoder. Equal keys mean
    equal vectors, so the gate can take train's instead of encoding them again (at 25M ratings
    about 150 s)."""
    import hashlib
    import json

    from lmrec.core.io import partition_files
    from lmrec.text.embedding import current_model_id, encoder_options

    def digest(values) -> str:
        return hashlib.sha256("\0".join(map(str, values)).encode()).hexdigest()

    tables = {}
    for t in (S.RATING_MATRIX, S.ITEM_EMBEDDINGS, S.USER_EMBEDDINGS, S.USER_TEXT_RAW, S.ITEMS_RAW):
        files = partition_files(cfg, t, run_date, data.versions[t])
        tables[t] = data.versions[t] if files is None else digest(files)
    pairs = np.unique(held_out[S.COL_USER_IDX].to_numpy().astype(np.int64) * max(1, data.n_items)
                      + held_out[S.COL_ITEM_IDX].to_numpy())
    key = {"tables": tables,
           "ids": [digest(data.user_ids), digest(data.item_ids)],
           "held_out": hashlib.sha256(pairs.tobytes()).hexdigest(), "shape": [data.n_users, data.n_items],
           "user_text_titles": cfg.user_text_titles, "model": current_model_id(encoder_options(cfg, spark))}
    return json.dumps(key, sort_keys=True, default=str)


def save_held_out_free(path, known: TrainingData, key: str) -> None:
    np.savez(path, item_text=known.item_text, user_text=known.user_text, key=np.array(key))


def load_held_out_free(path, data: TrainingData, key: str) -> TrainingData | None:
    """``data`` with the vectors saved at ``path`` when they were built under ``key``, else None."""
    z = np.load(path, allow_pickle=False)
    if str(z["key"]) != key:
        return None
    return replace(data, item_text=z["item_text"], user_text=z["user_text"])
