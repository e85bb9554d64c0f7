"""train: fit the scorer (ranking) and the rating model on the rating matrix and text vectors of
D, one protocol (``harness.protocol_split``): per-user fit / validation / test parts; every knob
(epochs, blend, L2) is chosen on validation, the scorer and the baselines are reported on the test
part with paired bootstrap intervals (MLflow); then both are refit on all data up to D and
registered as a new version of ``lmrec-scorer`` with alias ``candidate``."""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lmrec.core import schema as S
from lmrec.core.pit import cutoff, cutoff_iso
from lmrec.core.settings import Settings
from lmrec.model import registry as R
from lmrec.model.evaluation import scalars
from lmrec.model.harness import evaluate_all, plots, scorer_config
from lmrec.model.policy import retrain_decision

log = logging.getLogger(__name__)


def _release_driver_heap(spark) -> None:
    """Ask the driver JVM to collect and give back the heap that collecting the rating matrix
    grew (G1 shrinks the heap after a full collection): training needs that memory in Python."""
    try:
        spark.sparkContext._jvm.java.lang.System.gc()
    except Exception:  # Spark Connect has no JVM gateway here; nothing to release
        pass


def text_model_of(spark, cfg: Settings, run_date: dt.date) -> str:
    """The text model id(s) of D's item vectors (what the scorer's text projections were fit to)."""
    from lmrec.core.io import read_table

    rows = read_table(spark, cfg, S.ITEM_EMBEDDINGS, run_date).select(S.COL_MODEL_ID).distinct().collect()
    return ",".join(sorted(r[0] for r in rows))


def _should_train(spark, cfg: Settings, run_date: dt.date, policy: str, text_model: str) -> tuple[bool, str, str | None]:
    """(train?, reason, champion version) under ``policy``, relative to D and the champion as of D;
    reads the registry's tags and one count over D's rating matrix. ``text_model``: the model id of D's item vectors."""
    from pyspark.sql import functions as F

    from lmrec.core.io import read_table

    limits = dict(max_age_days=cfg.retrain_max_age_days, min_new=cfg.retrain_min_new)
    if policy != "auto":  # 'always' needs nothing more; an unknown policy is refused by name
        return (*retrain_decision(run_date, policy=policy, **limits), None)
    champ = R.champion_as_of(R.setup_mlflow(cfg).MlflowClient(), run_date)  # point in time: never a later model
    champ_date = R.run_date_of(champ)
    seen = new = 0
    if champ_date is not None:
        after = F.col(S.COL_EVENT_TS) >= F.lit(cutoff(champ_date))
        row = read_table(spark, cfg, S.RATING_MATRIX, run_date).agg(
            F.count(F.when(after, 1)).alias("new"), F.count(F.when(~after, 1)).alias("seen")).first()
        seen, new = int(row["seen"]), int(row["new"])
    go, reason = retrain_decision(run_date, policy=policy, champion_date=champ_date,
                                  champion_text_model=champ.tags.get(R.TAG_TEXT_MODEL) if champ is not None else None,
                                  text_model=text_model, seen=seen, new=new, **limits)
    return go, reason, str(champ.version) if champ is not None else None


def run(run_date: dt.date, *, cfg: Settings, spark, source: str | None = None, shuffle_ratings: bool = False,
        with_als: bool | None = None, retrain: str | None = None) -> dict:
    """Train, evaluate and register a candidate for ``run_date``; returns the run id, version
    and validation metrics. Under the ``auto`` policy (``retrain`` or LMREC_RETRAIN) a fresh
    champion is kept instead and the result says ``decision: skipped`` and why.
    ``shuffle_ratings`` trains a broken model, for testing the gate: on shuffled ratings (items and
    values) and with each item's text vector given to another item. (With the texts in place, a
    model of shuffled ratings is a content-based recommender through its collective EASE part: on
    the demo catalogue, where the text decides what users like, it beat the champion.)"""

    from lmrec.model.evaluation import sample_users
    from lmrec.model.harness import protocol_split, rating_config
    from lmrec.model.pyfunc import log_model, save_state
    from lmrec.model.rating import fit_rating_model, select_rating_model
    from lmrec.model.training_data import (HELD_OUT_FREE_TEXTS, held_out_free_key, load_training_data,
                                           save_held_out_free, without_held_out_texts)
    from lmrec.model.baselines import interactions
    from lmrec.model.scorer import fit_scorer

    policy = "always" if shuffle_ratings else (retrain or cfg.retrain)
    text_model = text_model_of(spark, cfg, run_date)
    go, why, champ_version = _should_train(spark, cfg, run_date, policy, text_model)
    if not go:
        log.info("train %s: skipped, champion version %s kept: %s", run_date, champ_version, why)
        return {"decision": "skipped", "reason": why, "version": None, "champion_version": champ_version}
    log.info("train %s: training (%s)", run_date, why)
    mlflow = R.setup_mlflow(cfg)
    sc = scorer_config(cfg)
    with_als = cfg.train_als if with_als is None else with_als
    data = load_training_data(spark, cfg, run_date)
    _release_driver_heap(spark)
    ratings = data.ratings
    if shuffle_ratings:
        rng = np.random.default_rng(sc.seed)
        ratings = ratings.assign(**{S.COL_ITEM_IDX: rng.permutation(ratings[S.COL_ITEM_IDX].to_numpy()),
                                    S.COL_RATING: rng.permutation(ratings[S.COL_RATING].to_numpy())})
        ratings = ratings.drop_duplicates([S.COL_USER_IDX, S.COL_ITEM_IDX])
    # One protocol: fit part fits, validation selects (epochs, blend, L2), the test part only
    # reports (MLflow, `lmrec summary`) and gates; then a refit on every rating up to D.
    fit, val, test = protocol_split(ratings, sc)
    # Selection and the test report read no text about the validation and test pairs (their
    # reviews and tags are re-embedded without them); the refit reads every text of D.
    held_out = pd.concat([val, test])
    known = without_held_out_texts(spark, cfg, run_date, data, held_out)
    fit_kw = dict(n_users=data.n_users, n_items=data.n_items, item_text=data.item_text, user_text=data.user_text,
                  rating_max=data.rating_max, cfg=sc)
    known_kw = fit_kw | dict(item_text=known.item_text, user_text=known.user_text)
    rc = rating_config(cfg)
    rating_kw = dict(n_users=data.n_users, n_items=data.n_items, item_text=data.item_text, user_text=data.user_text,
                     r_min=float(ratings[S.COL_RATING].min()), r_max=data.rating_max)
    known_rating_kw = rating_kw | dict(item_text=known.item_text, user_text=known.user_text)
    if shuffle_ratings:
        texts = np.random.default_rng(sc.seed + 1).permutation(data.n_items)
        for kw in (fit_kw, known_kw, rating_kw, known_rating_kw):
            kw["item_text"] = kw["item_text"][texts]
    with mlflow.start_run(run_name=f"train-{run_date}") as run, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mlflow.log_params(sc.params() | rc.params() | {"shuffle_ratings": shuffle_ratings})
        mlflow.set_tags({R.TAG_RUN_DATE: str(run_date), R.TAG_DATA_CUTOFF: cutoff_iso(run_date),
                         **{f"delta_version.{t}": str(v) for t, v in data.versions.items()}})
        val_params, history = fit_scorer(fit, val=val, **known_kw)
        rc, rating_tried, rating_fit = select_rating_model(fit, val, cfg=rc, **known_rating_kw)
        X_fit = interactions(fit, data.n_users, data.n_items)
        rating_fn = lambda u, i: rating_fit.predict(u, i, X_fit, known.item_text, known.user_text)  # noqa: E731
        results = evaluate_all(spark, known, fit, sample_users(test), val_params, seen=pd.concat([fit, val]),
                               rating=rating_fn, with_als=with_als, sc=sc)
        for name, m in results.items():
            mlflow.log_metrics({f"{name}.{k}": v for k, v in scalars(m).items()})
        for e, loss, ndcg in zip(history["epoch"], history["loss"], history["val_ndcg_at_10"]):
            mlflow.log_metrics({"train.loss": loss, "train.val_ndcg_at_10": ndcg}, step=e)
        mlflow.log_params({"scorer.chosen_ease_lambda": history["ease_lambda"],
                           "scorer.chosen_ease_side_weight": history["ease_side_weight"],
                           "scorer.chosen_ease_knn_weight": history["ease_knn_weight"],
                           "scorer.chosen_text_decay": history["text_decay"], "scorer.chosen_batch_size": history["batch_size"]})
        mlflow.log_metrics({f"scorer.val_ndcg_at_10.text_decay_{d:g}": v for d, v in history["text_decay_tried"].items()})
        mlflow.log_metrics({f"scorer.val_ndcg_at_10.ease_lambda_{lam:.2f}": v for lam, v in history["ease_lambda_tried"].items()})
        mlflow.log_metrics({f"scorer.val_ndcg_at_10.ease_side_weight_{w:.2f}": v
                            for w, v in history["ease_side_weight_tried"].items()})
        mlflow.log_metrics({f"scorer.val_ndcg_at_10.blended.ease_side_weight_{w:.2f}": v
                            for w, v in history["ease_side_weight_blended"].items()})
        mlflow.log_metrics({f"scorer.val_ndcg_at_10.ease_knn_weight_{w:g}": v
                            for w, v in history["ease_knn_weight_tried"].items()})
        mlflow.log_params({"rating.chosen_reg": rc.reg, "rating.chosen_text_reg": rc.text_reg, "rating.chosen_epochs": rc.epochs,
                           "rating.chosen_init_std": rc.init_std, "rating.chosen_bias_regs": str(rc.bias_regs)})
        mlflow.log_metrics({f"rating.val_rmse.reg_{reg:g}.text_reg_{t:g}.init_std_{s:g}": v[0]
                            for (reg, t, s), v in rating_tried.items()})
        table = pd.DataFrame({n: scalars(m) for n, m in results.items()}).T
        table.to_csv(tmp / "metrics.csv")
        mlflow.log_artifact(str(tmp / "metrics.csv"))
        for p in plots(results, history, tmp):
            mlflow.log_artifact(str(p))
        # The gate judges on the same parts with the same vectors: it takes these (the key says
        # what they were built from) instead of encoding the held-out-free texts again.
        save_held_out_free(tmp / HELD_OUT_FREE_TEXTS, known, held_out_free_key(cfg, run_date, data, held_out, spark))
        mlflow.log_artifact(str(tmp / HELD_OUT_FREE_TEXTS))
        (tmp / HELD_OUT_FREE_TEXTS).unlink()

        val_params.to_npz(tmp / "val_params.npz")
        # Free what selection and the report held before the refit's EASE inverse: val_params' EASE
        # matrix is 1.6 GB at 20k items, the three parts and the held-out-free vectors about 1.5 GB
        # at 25M ratings (the 25M night's train was killed for memory in the refit with them alive).
        del val_params, known, held_out, fit, val, test, X_fit, rating_fn, rating_fit
        _release_driver_heap(spark)
        # Refit on every rating up to D with the chosen epochs, blend, λ, side weight, kNN weight,
        # text decay and batch size (documented in README).
        chosen = dict(epochs=history["best_epoch"], blend=history["blend"], ease_lambda=history["ease_lambda"],
                      ease_side_weight=history["ease_side_weight"], ease_knn_weight=history["ease_knn_weight"],
                      text_decay=history["text_decay"], batch_size=history["batch_size"])
        if cfg.train_processes > 1:
            from lmrec.model.scorer import fit_scorer_distributed

            params = fit_scorer_distributed(ratings, num_processes=cfg.train_processes, use_gpu=cfg.task_gpus > 0,
                                            **chosen, **fit_kw)
        else:
            params, _ = fit_scorer(ratings, **chosen, **fit_kw)
        params.to_npz(tmp / "params.npz")
        rating_params, _ = fit_rating_model(ratings, cfg=rc, epochs=rc.epochs, **rating_kw)
        rating_params.to_npz(tmp / "rating.npz")
        save_state(tmp / "state.npz", data, ratings, sc.recency_weight)
        example = pd.DataFrame({S.COL_USER: data.user_ids[ratings[S.COL_USER_IDX].iloc[:3]].astype(str),
                                S.COL_ITEM: data.item_ids[ratings[S.COL_ITEM_IDX].iloc[:3]].astype(str)})
        info = log_model({"params": str(tmp / "params.npz"), "val_params": str(tmp / "val_params.npz"),
                          "rating": str(tmp / "rating.npz"), "state": str(tmp / "state.npz")}, example)
        mv = mlflow.register_model(info.model_uri, S.MODEL_NAME)
        client = mlflow.MlflowClient()
        val_ndcg = results["scorer"]["ndcg_at_10"]  # on the test part (the tag keeps its contract name)
        for key, value in {R.TAG_RUN_DATE: str(run_date), R.TAG_DATA_CUTOFF: cutoff_iso(run_date),
                           R.TAG_VAL_NDCG: f"{val_ndcg:.6f}", R.TAG_TRAIN_REASON: why, R.TAG_TEXT_MODEL: text_model,
                           "popularity_ndcg_at_10": f"{results['popularity']['ndcg_at_10']:.6f}",
                           "best_epoch": str(history["best_epoch"]), "blend": json.dumps(history["blend"]),
                           "ease_lambda": f"{history['ease_lambda']:.6g}",
                           "ease_side_weight": f"{history['ease_side_weight']:.6g}",
                           "ease_knn_weight": f"{history['ease_knn_weight']:.6g}",
                           "text_decay": f"{history['text_decay']:g}"}.items():
            client.set_model_version_tag(S.MODEL_NAME, mv.version, key, value)
        client.set_registered_model_alias(S.MODEL_NAME, S.ALIAS_CANDIDATE, mv.version)
        log.info("registered %s version %s (alias %s), validation NDCG@10 %.4f", S.MODEL_NAME, mv.version,
                 S.ALIAS_CANDIDATE, val_ndcg)
        return {"decision": "trained", "reason": why, "run_id": run.info.run_id, "version": str(mv.version),
                "val_ndcg_at_10": val_ndcg,
                "metrics": {n: scalars(m) for n, m in results.items()}}


def main(argv: list[str] | None = None) -> None:
    from lmrec.pipeline import job_entry

    job_entry("train", argv)


if __name__ == "__main__":
    main()
