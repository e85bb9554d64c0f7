"""The retraining policy: whether a night trains a new candidate or keeps the champion."""

from __future__ import annotations

import datetime as dt

from lmrec.core.errors import ParameterError

RETRAIN_POLICIES = ("auto", "always")


def retrain_decision(run_date: dt.date, *, policy: str, max_age_days: int, min_new: float,
                     champion_date: dt.date | None = None, champion_text_model: str | None = None,
                     text_model: str = "", seen: int = 0, new: int = 0) -> tuple[bool, str]:
    """(train?, reason), relative to D and the champion as of D (``champion_date`` <= D). ``auto``
    trains when there is no champion as of D (a backfill before any model), the text model changed,
    the champion is ``max_age_days`` old, or the ratings after its data cutoff (``new``) reach
    ``min_new`` of those it was trained on (``seen``)."""
    if policy not in RETRAIN_POLICIES:
        raise ParameterError(f"LMREC_RETRAIN must be one of {', '.join(RETRAIN_POLICIES)}, got {policy!r}")
    if policy == "always":
        return True, "LMREC_RETRAIN=always"
    if champion_date is None:
        return True, f"no champion as of {run_date}"
    if champion_date > run_date:
        raise ValueError(f"the champion as of {run_date} cannot be trained for a later date ({champion_date})")
    if champion_text_model != text_model:
        return True, f"text model changed: champion {champion_text_model or 'unknown'}, now {text_model}"
    age = (run_date - champion_date).days
    frac = new / max(seen, 1)
    if age >= max_age_days:
        return True, f"the champion is {age} days old (LMREC_RETRAIN_MAX_AGE_DAYS={max_age_days})"
    if frac >= min_new:
        return True, (f"{new} ratings after the champion's cutoff, {frac:.1%} of the {seen} it was trained on "
                      f"(LMREC_RETRAIN_MIN_NEW={min_new:g})")
    return False, (f"the champion is {age} day(s) old and {new} new ratings are {frac:.2%} of the {seen} it was "
                   f"trained on (< LMREC_RETRAIN_MIN_NEW={min_new:g}): score uses it on D's histories")
