"""The scorer as an MLflow pyfunc, and the training data of a date as NumPy arrays.

Contract (DESIGN.md): registered model ``lmrec-scorer``; ``predict`` takes a DataFrame with
``user_id`` and ``item_id`` and returns ``score`` (ranking score) and ``rating`` (predicted
rating on the source's scale). Users and items with text but no ratings are scored from text.
"""

from __future__ import annotations

import datetime as dt
import functools
import tempfile
from dataclasses import dataclass

import mlflow.pyfunc
import numpy as np
import pandas as pd
import scipy.sparse as sp

from jobs import schema as S
from jobs.baselines import interactions
from jobs.scorer import ScorerParams, history_weights


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


def _vectors(emb: pd.DataFrame, index: pd.DataFrame, col_id: str, col_idx: str, n: int, dim: int):
    out = np.zeros((n, dim), dtype=np.float32)
    has = np.zeros(n, dtype=bool)
    if len(emb):
        m = emb.merge(index, on=col_id)
        idx = m[col_idx].to_numpy()
        out[idx] = np.stack(m[S.COL_VECTOR].to_numpy()).astype(np.float32)
        has[idx] = True
    return out, has


def load_training_data(spark, cfg, run_date: dt.date) -> TrainingData:
    """Read the rating matrix, indices and embeddings of ``run_date`` into NumPy."""
    from jobs.io import read_table, table_version

    rm = read_table(spark, cfg, S.RATING_MATRIX, run_date).select(
        S.COL_USER_IDX, S.COL_ITEM_IDX, S.COL_RATING, S.COL_EVENT_TS).toPandas()
    if rm.empty:
        raise RuntimeError(f"{S.RATING_MATRIX} has no ratings for {run_date}: run ingest and rating_matrix first")
    uidx = read_table(spark, cfg, S.USER_INDEX).toPandas()
    iidx = read_table(spark, cfg, S.ITEM_INDEX).toPandas()
    item_emb = read_table(spark, cfg, S.ITEM_EMBEDDINGS, run_date).select(S.COL_ITEM, S.COL_VECTOR).toPandas()
    user_emb = read_table(spark, cfg, S.USER_EMBEDDINGS, run_date).select(S.COL_USER, S.COL_VECTOR).toPandas()
    dim = len(item_emb[S.COL_VECTOR].iloc[0]) if len(item_emb) else 384
    user_ids, item_ids = _ids(uidx, S.COL_USER, S.COL_USER_IDX), _ids(iidx, S.COL_ITEM, S.COL_ITEM_IDX)
    item_text, has_item = _vectors(item_emb, iidx, S.COL_ITEM, S.COL_ITEM_IDX, len(item_ids), dim)
    user_text, _ = _vectors(user_emb, uidx, S.COL_USER, S.COL_USER_IDX, len(user_ids), dim)
    versions = {t: table_version(spark, cfg, t) for t in (S.RATING_MATRIX, S.ITEM_EMBEDDINGS, S.USER_EMBEDDINGS, S.USER_INDEX, S.ITEM_INDEX)}
    return TrainingData(rm, user_ids, item_ids, item_text, user_text, has_item, max(cfg.rating_max, float(rm[S.COL_RATING].max())), versions)


def save_state(path, data: TrainingData, ratings: pd.DataFrame, recency_weight: float) -> None:
    """What the pyfunc needs besides the parameters: ids, text vectors, users' histories."""
    H = history_weights(ratings, data.n_users, data.n_items, rating_max=data.rating_max, recency_weight=recency_weight)
    X = interactions(ratings, data.n_users, data.n_items)
    np.savez_compressed(path, user_ids=data.user_ids.astype(str), item_ids=data.item_ids.astype(str),
                        item_text=data.item_text, user_text=data.user_text,
                        H_data=H.data, H_indices=H.indices, H_indptr=H.indptr,
                        X_indices=X.indices, X_indptr=X.indptr, shape=np.array(H.shape))


class LmrecScorer(mlflow.pyfunc.PythonModel):
    """pyfunc: DataFrame(user_id, item_id) -> DataFrame(score, rating)."""

    def load_context(self, context):
        # Each part is read on first use: scoring needs only ``params``, the gate only the
        # validation-trained parameters (each holds a 1.6 GB EASE matrix at 20k items).
        self._artifacts = dict(context.artifacts)

    @functools.cached_property
    def params(self) -> ScorerParams:
        return ScorerParams.from_npz(self._artifacts["params"])

    @functools.cached_property
    def val_params(self) -> ScorerParams:
        return ScorerParams.from_npz(self._artifacts["val_params"])

    @functools.cached_property
    def _state(self) -> dict:
        z = np.load(self._artifacts["state"], allow_pickle=False)
        shape = tuple(z["shape"])
        return {"H": sp.csr_matrix((z["H_data"], z["H_indices"], z["H_indptr"]), shape=shape),
                "X": sp.csr_matrix((np.ones(len(z["X_indices"]), np.float32), z["X_indices"], z["X_indptr"]), shape=shape),
                "item_text": z["item_text"], "user_text": z["user_text"],
                "user_pos": {u: i for i, u in enumerate(z["user_ids"]) if u},
                "item_pos": {t: i for i, t in enumerate(z["item_ids"]) if t}}

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        missing = [c for c in (S.COL_USER, S.COL_ITEM) if c not in model_input.columns]
        if missing:
            raise ValueError(f"lmrec-scorer: input is missing column(s) {', '.join(missing)}")
        st = self._state
        u = model_input[S.COL_USER].astype(str).map(st["user_pos"])
        i = model_input[S.COL_ITEM].astype(str).map(st["item_pos"])
        ok = (u.notna() & i.notna()).to_numpy()
        score = np.full(len(model_input), np.nan)
        rating = np.full(len(model_input), np.nan)
        if ok.any():
            uu, ii = u[ok].astype(int).to_numpy(), i[ok].astype(int).to_numpy()
            p = self.params
            U, bu = p.user_factors(uu, st["H"][uu], st["item_text"], st["user_text"][uu])
            I, beta, bi = p.item_factors(ii, st["item_text"][ii])
            dot = (U * I).sum(1)
            ease = p.ease_scores(st["X"][uu], st["X"].shape[1])[np.arange(len(ii)), ii]
            score[ok] = p.alpha * (dot + beta) + ease
            rating[ok] = np.clip(p.mu + bu + bi + dot, 0, p.rating_max)
        return pd.DataFrame({S.COL_SCORE: score, S.COL_RATING: rating})


def version_by_alias(client, alias: str):
    """The model version of ``lmrec-scorer`` behind ``alias``, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(S.MODEL_NAME, alias)
    except MlflowException:
        return None


def load_params(version, part: str = "params") -> ScorerParams:
    """One parameter set of model ``version`` (``params``: the refit; ``val_params``: the fit on the
    validation split's training part), read from a temporary copy of its artifacts that is deleted
    once read (at 20k EASE items each set is 1.6 GB). The tracking URI must be set (setup_mlflow)."""
    with tempfile.TemporaryDirectory(prefix=f"lmrec-v{version}-") as tmp:
        model = mlflow.pyfunc.load_model(f"models:/{S.MODEL_NAME}/{version}", dst_path=tmp).unwrap_python_model()
        return getattr(model, part)
