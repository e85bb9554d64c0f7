"""gate: judge D's candidate against the champion as of D, record in ``model_ledger`` which model
scores D and why, and move the global ``champion`` alias forward.

Point in time: D's candidate is the version trained for D (found by its ``run_date`` tag, never by
a global alias, so concurrent runs judge only their own); the champion as of D is the most recent
promoted version whose data ends by the end of D. A backfill of an old date is judged against the
champion of that date, and the model it promotes scores that date only: the global alias points
at the newest promoted version and never moves back in time.

Protocol (fair: neither model is judged on ratings it was trained on or selected on). Both are
evaluated on the test part of D (``harness.protocol_split``: train's per-user fit / validation /
test parts, its seed and shares), ranking all items not in the user's fit or validation part,
NDCG@10:

- the candidate by its fit-part model (fit on the fit part, epochs and blend chosen on validation);
- the champion, if it was trained for the same date, by its fit-part model (same parts);
  otherwise by its refit model, on the held-out ratings made after the champion's data cutoff
  (which it cannot have seen), and the candidate is scored on that same subset;
- popularity on the same rows.

The candidate is promoted when NDCG@10 >= champion - tolerance (``LMREC_GATE_TOLERANCE``, default
0.005) and > popularity; the first version of a date range only has to beat popularity. The
decision, the numbers and the reason are tags of the candidate's version and a row of the ledger.
A candidate is judged once: on a night when train kept the champion (LMREC_RETRAIN=auto), or on a
rerun, the gate records ``decision: unchanged`` with the champion as of D.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd

from lmrec.core import schema as S
from lmrec.core.settings import Settings

log = logging.getLogger(__name__)
MIN_USERS = 5  # fewer post-cutoff test users than this: compare on the whole test part


def _ndcg(params, data, fit, seen, rows):
    """NDCG@10 on ``rows`` of a model given the ``fit`` part as history; ``seen`` pairs excluded."""
    from lmrec.model.evaluation import ranking_metrics
    from lmrec.model.scorer import histories, make_score_fn

    H, X = histories(fit, data.n_users, data.n_items, rating_max=data.rating_max, recency_weight=params.recency_weight)
    fn = make_score_fn(params, H, X, data.item_text, data.user_text, data.n_items)
    return ranking_metrics(fn, seen, rows, data.n_items, k=10)["ndcg_at_10"]


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.6f}"


def _num(text: str | None) -> float | None:
    """A ``gate.*`` NDCG tag back as a number (None where it is empty)."""
    return float(text) if text else None


def decide(candidate: float, champion: float | None, popularity: float, tolerance: float) -> tuple[bool, str]:
    """(promote?, reason) from the three NDCG@10 values."""
    if candidate <= popularity:
        return False, f"candidate NDCG@10 {candidate:.4f} does not beat popularity {popularity:.4f}"
    if champion is None:
        return True, f"first version: NDCG@10 {candidate:.4f} beats popularity {popularity:.4f}"
    if candidate >= champion - tolerance:
        return True, f"candidate NDCG@10 {candidate:.4f} >= champion {champion:.4f} - tolerance {tolerance}"
    return False, f"candidate NDCG@10 {candidate:.4f} < champion {champion:.4f} - tolerance {tolerance}"


def build_ledger_row(decision: dict, version, *, reason: str) -> dict:
    """The ``model_ledger`` row of D from the gate's ``decision`` and the version that scores D."""
    from lmrec.model import registry as R

    row = {c: None for c, _ in S.LEDGER_COLUMNS}
    row.update({k: decision.get(k) for k in ("candidate_ndcg_at_10", "champion_ndcg_at_10", "popularity_ndcg_at_10")})
    row.update({S.COL_MODEL_VERSION: str(version.version) if version is not None else None,
                S.COL_DATA_CUTOFF: version.tags.get(R.TAG_DATA_CUTOFF) if version is not None else None,
                S.COL_DECISION: decision["decision"], S.COL_CANDIDATE_VERSION: decision.get("candidate_version"),
                S.COL_REASON: reason, S.COL_ALIAS_MOVED: bool(decision.get("champion_alias_moved"))})
    return row


def write_ledger(spark, cfg: Settings, run_date: dt.date, row: dict) -> None:
    """Replace D's row of ``model_ledger`` (one commit: a rerun of D rewrites it)."""
    from lmrec.core.io import write_partition
    from lmrec.core.maintenance import ensure_constraints

    schema = ", ".join(f"{c} {t}" for c, t in S.LEDGER_COLUMNS)
    write_partition(spark.createDataFrame([tuple(row[c] for c, _ in S.LEDGER_COLUMNS)], schema), cfg,
                    S.MODEL_LEDGER, run_date)
    ensure_constraints(spark, cfg, S.MODEL_LEDGER)


def _held_out_free(spark, cfg: Settings, run_date: dt.date, data, held_out: pd.DataFrame, cand):
    """(``data`` with vectors built without the held-out pairs' texts, where they came from): the
    candidate's train run saved them with the key of what they were built from; when D's tables,
    the parts or the encoder differ from train's (a rerun of a job in between, another split) they
    are built again."""
    import tempfile

    from lmrec.model import registry as R
    from lmrec.model.training_data import (HELD_OUT_FREE_TEXTS, held_out_free_key, load_held_out_free,
                                           without_held_out_texts)

    key = held_out_free_key(cfg, run_date, data, held_out, spark)
    with tempfile.TemporaryDirectory(prefix="lmrec-gate-") as tmp:
        path = R.run_artifact(cand, HELD_OUT_FREE_TEXTS, tmp)
        known = load_held_out_free(path, data, key) if path else None
    if known is not None:
        log.info("gate %s: vectors without the held-out pairs' texts from version %s's train run", run_date, cand.version)
        return known, "train's"
    log.info("gate %s: vectors without the held-out pairs' texts built again (%s)", run_date,
             "train saved none" if path is None else "D's tables or parts changed since train")
    return without_held_out_texts(spark, cfg, run_date, data, held_out), "rebuilt"


def judge(client, cfg: Settings, spark, run_date: dt.date, cand, champ) -> dict:
    """Compare D's candidate with the champion as of D (fair protocol above); tag the candidate
    with the decision. Returns the decision, the three NDCG@10 values and the reason."""
    from lmrec.model import registry as R
    from lmrec.model.baselines import fit_popularity
    from lmrec.model.evaluation import ranking_metrics, sample_users
    from lmrec.model.harness import protocol_split, scorer_config
    from lmrec.model.training_data import load_training_data

    champ_date = R.run_date_of(champ)
    data = load_training_data(spark, cfg, run_date)
    sc = scorer_config(cfg)
    fit, val, test = protocol_split(data.ratings, sc)  # train's parts: the test part no selection saw
    # As train's report: no text about the validation and test pairs reaches a profile.
    data, texts = _held_out_free(spark, cfg, run_date, data, pd.concat([val, test]), cand)
    seen = pd.concat([fit, val])
    test = sample_users(test)
    rows, champ_ndcg, protocol = test, None, "first version"
    if champ is not None:
        after = test[test[S.COL_EVENT_TS].to_numpy() >= np.datetime64(champ_date + dt.timedelta(days=1))]
        if champ_date == run_date:
            protocol, champ_params = "same date: fit-part models on one test part", R.load_params(champ.version, "val_params")
        elif after[S.COL_USER_IDX].nunique() >= MIN_USERS:
            protocol, champ_params, rows = "champion refit model on test ratings after its cutoff", R.load_params(champ.version), after
        else:
            protocol, champ_params = "too few test ratings after the champion's cutoff: fit-part models", R.load_params(champ.version, "val_params")
        champ_ndcg = _ndcg(champ_params, data, fit, seen, rows)
    cand_ndcg = _ndcg(R.load_params(cand.version, "val_params"), data, fit, seen, rows)
    pop_ndcg = ranking_metrics(fit_popularity(fit, data.n_users, data.n_items), seen, rows, data.n_items, k=10)["ndcg_at_10"]
    promote, reason = decide(cand_ndcg, champ_ndcg, pop_ndcg, cfg.gate_tolerance)
    decision = "promoted" if promote else "kept_champion"
    tags = {"gate.protocol": protocol, R.TAG_GATE_DATE: str(run_date), "gate.reason": reason,
            "gate.candidate_ndcg_at_10": _fmt(cand_ndcg), "gate.popularity_ndcg_at_10": _fmt(pop_ndcg),
            "gate.champion_version": str(champ.version) if champ is not None else "",
            "gate.champion_ndcg_at_10": _fmt(champ_ndcg)}
    for k, v in tags.items():
        client.set_model_version_tag(S.MODEL_NAME, cand.version, k, v)
    # The decision last: a version carrying it counts as judged (and, when promoted, as a champion).
    client.set_model_version_tag(S.MODEL_NAME, cand.version, R.TAG_GATE_DECISION, decision)
    log.info("gate %s: %s version %s (%s); protocol: %s", run_date, decision, cand.version, reason, protocol)
    return {"decision": decision, "candidate_version": str(cand.version), "reason": reason, "texts": texts,
            "candidate_ndcg_at_10": cand_ndcg, "champion_ndcg_at_10": champ_ndcg, "popularity_ndcg_at_10": pop_ndcg}


def run(run_date: dt.date, *, cfg: Settings, spark, source: str | None = None) -> dict:
    """Judge D's candidate against the champion as of D, record which model scores D in
    ``model_ledger``, and move the global ``champion`` alias forward when a newer date wins.
    Returns the decision, the version that scores D, the numbers and the reason."""
    from lmrec.model import registry as R

    client = R.setup_mlflow(cfg).MlflowClient()
    cand = R.candidate_of(client, run_date)
    if cand is not None and R.TAG_GATE_DECISION not in cand.tags:
        out = judge(client, cfg, spark, run_date, cand, R.champion_as_of(client, run_date, exclude=str(cand.version)))
    else:  # train kept the champion as of D (or this is a rerun of a judged date)
        why = ("no version trained for D" if cand is None else
               f"version {cand.version} for {run_date} was judged on {cand.tags.get(R.TAG_GATE_DATE)} "
               f"({cand.tags[R.TAG_GATE_DECISION]}); no new candidate")
        out = {"decision": "unchanged", "reason": why, "candidate_version": None}
    ledger = dict(out)
    if out["decision"] == "unchanged" and cand is not None:
        # A rerun of D (or a gate killed after judging): the ledger keeps D's recorded judgement.
        ledger.update(decision=cand.tags[R.TAG_GATE_DECISION], candidate_version=str(cand.version),
                      reason=cand.tags.get("gate.reason", why),
                      **{k: _num(cand.tags.get(f"gate.{k}")) for k in
                         ("candidate_ndcg_at_10", "champion_ndcg_at_10", "popularity_ndcg_at_10")})
    alias_before = R.version_by_alias(client, S.ALIAS_CHAMPION)
    newest = R.move_champion_forward(client)
    out["champion_alias_moved"] = newest != (str(alias_before.version) if alias_before is not None else None)
    used = R.champion_as_of(client, run_date)  # what score uses for D
    out["champion_version"] = str(used.version) if used is not None else None
    ledger["champion_alias_moved"] = out["champion_alias_moved"]
    reason = ledger["reason"] + (f"; champion alias now version {newest}" if out["champion_alias_moved"] else "")
    write_ledger(spark, cfg, run_date, build_ledger_row(ledger, used, reason=reason))
    log.info("gate %s: D is scored by version %s; global champion version %s", run_date, out["champion_version"], newest)
    return out


def main(argv: list[str] | None = None) -> None:
    from lmrec.pipeline import job_entry

    job_entry("gate", argv)


if __name__ == "__main__":
    main()
