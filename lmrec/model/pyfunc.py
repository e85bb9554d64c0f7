"""The scorer as an MLflow pyfunc (what the registry stores) and the state it carries.

Contract (docs/ARCHITECTURE.md, MLflow): registered model ``lmrec-scorer``; ``predict`` takes a DataFrame with
``user_id`` and ``item_id`` and returns ``score`` (ranking score) and ``rating`` (predicted
rating on the source's scale, from the rating model: :mod:`lmrec.model.rating`, clipped to the
scale's minimum and maximum). Users and items with text but no ratings are scored from text.
"""

from __future__ import annotations

import functools
from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import scipy.sparse as sp

from lmrec.core import schema as S
from lmrec.model.rating import RatingParams
from lmrec.model.scorer import ScorerParams, histories


def save_state(path, data, ratings: pd.DataFrame, recency_weight: float) -> None:
    """What the pyfunc needs besides the parameters: ids, text vectors, users' histories."""
    H, X = histories(ratings, data.n_users, data.n_items, rating_max=data.rating_max, recency_weight=recency_weight)
    np.savez_compressed(path, user_ids=data.user_ids.astype(str), item_ids=data.item_ids.astype(str),
                        item_text=data.item_text, user_text=data.user_text,
                        H_data=H.data, H_indices=H.indices, H_indptr=H.indptr,
                        X_indices=X.indices, X_indptr=X.indptr, shape=np.array(H.shape))


# What predict imports (torch only trains): pinned to the versions that trained the model.
REQUIREMENTS = ("mlflow", "numpy", "pandas", "scipy", "pyarrow")
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")


def log_model(artifacts: dict[str, str], input_example: pd.DataFrame):
    """Log the scorer to the active run as a self-contained pyfunc.

    Models from code (:mod:`lmrec.model.pyfunc_model`, no pickle), the ``lmrec`` package as
    ``code_paths``, pinned requirements, a signature and an input example (MLflow predicts it once
    while logging, a smoke test of the logged model).

    Returns:
        mlflow.models.model.ModelInfo of the logged model.
    """
    from mlflow.models import infer_signature

    import lmrec

    signature = infer_signature(input_example, pd.DataFrame({S.COL_SCORE: [0.0], S.COL_RATING: [0.0]}))
    return mlflow.pyfunc.log_model(
        name="model", python_model=str(MODEL_CODE), artifacts=artifacts, signature=signature,
        input_example=input_example, code_paths=[str(Path(lmrec.__file__).parent)],
        pip_requirements=[f"{name}=={version(name)}" for name in REQUIREMENTS])


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
    def rating_params(self) -> RatingParams | None:
        """The rating model (versions trained before it existed rate with the scorer's head)."""
        path = self._artifacts.get("rating")
        return RatingParams.from_npz(path) if path else None

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
        S.require_columns(model_input, (S.COL_USER, S.COL_ITEM), S.MODEL_NAME)
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
            rp = self.rating_params
            if rp is not None:
                rating[ok] = rp.predict(uu, ii, st["X"], st["item_text"], st["user_text"])
            else:
                rating[ok] = np.clip(p.mu + bu + bi + dot, 0, p.rating_max)
        return pd.DataFrame({S.COL_SCORE: score, S.COL_RATING: rating})


