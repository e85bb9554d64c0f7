"""The gate's decision rule and train's retraining rule (pure): tolerance, popularity, first
version; champion age, new ratings, text model, backfills."""

from __future__ import annotations

import pytest

import datetime as dt

from jobs.gate import decide
from lmrec.model.policy import retrain_decision


@pytest.mark.parametrize("cand,champ,pop,promote", [
    (0.30, None, 0.10, True),     # first version beats popularity
    (0.09, None, 0.10, False),    # first version must beat popularity
    (0.300, 0.300, 0.10, True),   # equal
    (0.296, 0.300, 0.10, True),   # worse, but within the tolerance (0.005)
    (0.294, 0.300, 0.10, False),  # worse than the tolerance allows
    (0.31, 0.30, 0.32, False),    # better than the champion but not than popularity
])
def test_decide(cand, champ, pop, promote):
    ok, reason = decide(cand, champ, pop, 0.005)
    assert ok is promote and f"{cand:.4f}" in reason


D = dt.date(2024, 6, 30)
FRESH = dict(policy="auto", champion_date=D - dt.timedelta(days=1), champion_text_model="m", text_model="m",
             seen=1000, new=10, max_age_days=7, min_new=0.05)


@pytest.mark.parametrize("change,train,words", [
    ({}, False, "1.00% of the 1000"),                             # 1 day old, 1% new: keep the champion
    ({"policy": "always"}, True, "LMREC_RETRAIN=always"),
    ({"champion_date": None}, True, "no champion"),
    ({"new": 50}, True, "5.0% of the 1000"),                      # at the threshold: retrain
    ({"new": 49}, False, "4.90%"),
    ({"champion_date": D - dt.timedelta(days=7)}, True, "7 days old"),
    ({"champion_date": D - dt.timedelta(days=6)}, False, "6 day(s) old"),
    ({"champion_text_model": "other"}, True, "text model changed"),
    ({"champion_text_model": None}, True, "champion unknown"),     # versions from before the tag
])
def test_retrain_decision(change, train, words):
    go, reason = retrain_decision(D, **{**FRESH, **change})
    assert go is train and words in reason


def test_retrain_is_relative_to_the_champion_as_of_d():
    """A backfill of D compares with the champion as of D, never one trained on later data."""
    with pytest.raises(ValueError, match="cannot be trained for a later date"):
        retrain_decision(D, **{**FRESH, "champion_date": D + dt.timedelta(days=1)})


def test_retrain_policy_must_be_known():
    with pytest.raises(ValueError, match="LMREC_RETRAIN must be one of auto, always, got 'sometimes'"):
        retrain_decision(D, **{**FRESH, "policy": "sometimes"})
