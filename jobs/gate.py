"""gate: move alias ``champion`` to the candidate only if it is at least as good.

Protocol (fair: neither model is judged on ratings it was trained on). Both are evaluated on the
validation split of the candidate's date D (per-user random split of D's rating matrix, the
train job's seed and ratio), ranking all items not in the user's training part, NDCG@10:

- the candidate by its validation-trained model (fit on the training part of that split);
- the champion, if it was trained for the same date, by its validation-trained model (same split);
  otherwise by its refit model, on the held-out ratings made after the champion's data cutoff
  (which it cannot have seen), and the candidate is scored on that same subset;
- popularity on the same rows.

The candidate is promoted when NDCG@10 >= champion - tolerance (``LMREC_GATE_TOLERANCE``, default
0.005) and > popularity; the first version only has to beat popularity. A candidate trained on
data older than the champion's (a backfill) is never promoted. The decision, both numbers and
the reason are logged and set as tags on the candidate's model version. A candidate is judged
once: on a night when train kept the champion (LMREC_RETRAIN=auto) the candidate alias still
names a version judged before, and the gate changes nothing (``decision: unchanged``).
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np

from lmrec.core import schema as S
from lmrec.core.settings import Settings

log = logging.getLogger(__name__)
MIN_USERS = 5  # fewer post-cutoff validation users than this: compare on the whole split


def _ndcg(params, data, train, rows):
    from lmrec.model.evaluation import ranking_metrics
    from lmrec.model.scorer import histories, make_score_fn

    H, X = histories(train, data.n_users, data.n_items, rating_max=data.rating_max, recency_weight=params.recency_weight)
    fn = make_score_fn(params, H, X, data.item_text, data.user_text, data.n_items)
    return ranking_metrics(fn, train, rows, data.n_items, k=10)["ndcg_at_10"]


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.6f}"


def decide(candidate: float, champion: float | None, popularity: float, tolerance: float) -> tuple[bool, str]:
    """(promote?, reason) from the three NDCG@10 values."""
    if candidate <= popularity:
        return False, f"candidate NDCG@10 {candidate:.4f} does not beat popularity {popularity:.4f}"
    if champion is None:
        return True, f"first version: NDCG@10 {candidate:.4f} beats popularity {popularity:.4f}"
    if candidate >= champion - tolerance:
        return True, f"candidate NDCG@10 {candidate:.4f} >= champion {champion:.4f} - tolerance {tolerance}"
    return False, f"candidate NDCG@10 {candidate:.4f} < champion {champion:.4f} - tolerance {tolerance}"


def run(run_date: dt.date, *, cfg: Settings, spark, source: str | None = None) -> dict:
    """Compare candidate and champion; returns the decision with both numbers and the reason."""
    import mlflow.pyfunc

    from lmrec.model.baselines import fit_popularity
    from lmrec.model.evaluation import random_split, ranking_metrics, sample_users
    from lmrec.model.harness import scorer_config
    from lmrec.model.registry import load_params, setup_mlflow, version_by_alias
    from lmrec.model.training_data import load_training_data

    mlflow = setup_mlflow(cfg)
    client = mlflow.MlflowClient()
    cand = version_by_alias(client, S.ALIAS_CANDIDATE)
    if cand is None:
        raise RuntimeError(f"no {S.MODEL_NAME}@{S.ALIAS_CANDIDATE}: run the train job first")
    champ = version_by_alias(client, S.ALIAS_CHAMPION)
    if champ is not None and champ.version == cand.version:
        return {"decision": "unchanged", "champion_version": str(champ.version), "reason": "candidate is the champion"}
    if "gate.decision" in cand.tags:  # judged before (train kept the champion tonight, or a rerun)
        return {"decision": "unchanged", "champion_version": str(champ.version) if champ is not None else None,
                "reason": f"candidate version {cand.version} was judged on {cand.tags.get('gate.date')} "
                          f"({cand.tags['gate.decision']}); no new candidate"}
    cand_date = dt.date.fromisoformat(cand.tags["run_date"])
    champ_date = dt.date.fromisoformat(champ.tags["run_date"]) if champ is not None else None

    data = load_training_data(spark, cfg, cand_date)
    sc = scorer_config(cfg)
    train, val = random_split(data.ratings, sc.val_ratio, seed=sc.seed)
    val = sample_users(val[val[S.COL_USER_IDX].isin(train[S.COL_USER_IDX])])
    rows, champ_ndcg, protocol = val, None, "first version"
    if champ_date is not None and cand_date < champ_date:
        promote, reason = False, f"candidate data date {cand_date} is older than the champion's {champ_date}"
        cand_ndcg = pop_ndcg = None
    else:
        if champ is not None:
            cutoff = np.datetime64(champ_date + dt.timedelta(days=1))
            after = val[val[S.COL_EVENT_TS].to_numpy() >= cutoff]
            if champ_date == cand_date:
                protocol, champ_params = "same date: validation-trained models on one split", load_params(champ.version, "val_params")
            elif after[S.COL_USER_IDX].nunique() >= MIN_USERS:
                protocol, champ_params, rows = "champion refit model on ratings after its cutoff", load_params(champ.version), after
            else:
                protocol, champ_params = "too few ratings after the champion's cutoff: validation-trained models", load_params(champ.version, "val_params")
            champ_ndcg = _ndcg(champ_params, data, train, rows)
        cand_ndcg = _ndcg(load_params(cand.version, "val_params"), data, train, rows)
        pop_ndcg = ranking_metrics(fit_popularity(train, data.n_users, data.n_items), train, rows, data.n_items, k=10)["ndcg_at_10"]
        promote, reason = decide(cand_ndcg, champ_ndcg, pop_ndcg, cfg.gate_tolerance)
    decision = "promoted" if promote else "kept_champion"
    tags = {"gate.decision": decision, "gate.reason": reason, "gate.protocol": protocol, "gate.date": str(run_date),
            "gate.candidate_ndcg_at_10": _fmt(cand_ndcg), "gate.popularity_ndcg_at_10": _fmt(pop_ndcg),
            "gate.champion_version": champ.version if champ is not None else "",
            "gate.champion_ndcg_at_10": _fmt(champ_ndcg)}
    if promote:  # the alias first: a version carrying gate.decision counts as judged
        client.set_registered_model_alias(S.MODEL_NAME, S.ALIAS_CHAMPION, cand.version)
    for k, v in tags.items():
        client.set_model_version_tag(S.MODEL_NAME, cand.version, k, v)
    log.info("gate: %s version %s (%s); protocol: %s", decision, cand.version, reason, protocol)
    return {"decision": decision, "candidate_version": str(cand.version), "reason": reason,
            "champion_version": str(cand.version) if promote else (str(champ.version) if champ else None),
            "candidate_ndcg_at_10": cand_ndcg, "champion_ndcg_at_10": champ_ndcg, "popularity_ndcg_at_10": pop_ndcg}


def main(argv: list[str] | None = None) -> None:
    from lmrec.pipeline import job_entry

    job_entry("gate", argv)


if __name__ == "__main__":
    main()
