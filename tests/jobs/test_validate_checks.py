"""validate's checks, one broken list at a time (pandas and Arrow in the driver; no Spark)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from jobs.validate import check_recommendations
from lmrec.core import schema as S


def _recs(rows):
    return pd.DataFrame(rows, columns=[S.COL_USER, S.COL_RANK, S.COL_ITEM, S.COL_SCORE])


GOOD = [("u1", 1, "a", 0.9), ("u1", 2, "b", 0.5), ("u1", 3, "c", 0.5),
        ("u2", 1, "c", 2.0), ("u2", 2, "a", 1.0)]
SEEN = pa.table({S.COL_USER: ["u1", "u2", "u3"], S.COL_ITEM: ["d", "b", "a"]})
ACTIVE = {"u1", "u2"}


def test_good_lists_pass_every_check():
    assert set(check_recommendations(_recs(GOOD), SEEN, ACTIVE, top_k=3).values()) == {0}


@pytest.mark.parametrize("change, check", [
    (lambda r: r[:1] + r[2:], "ranks_not_contiguous"),  # u1: ranks 1, 3
    (lambda r: [("u1", 2, "a", 0.5) if x[:2] == ("u1", 2) else x for x in r], "duplicate_items"),
    (lambda r: r + [("u1", 4, "e", 0.1)], "more_than_top_k"),
    (lambda r: [("u2", 2, "a", 3.0) if x[:2] == ("u2", 2) else x for x in r], "scores_increase_with_rank"),
    (lambda r: [("u2", 2, "b", 1.0) if x[:2] == ("u2", 2) else x for x in r], "seen_items_recommended"),
    (lambda r: [x for x in r if x[0] != "u2"], "active_users_missing"),
])
def test_each_check_counts_the_users_that_break_it(change, check):
    failures = check_recommendations(_recs(change(list(GOOD))), SEEN, ACTIVE, top_k=3)
    assert failures[check] == 1
    assert {k for k, v in failures.items() if v} == {check}
