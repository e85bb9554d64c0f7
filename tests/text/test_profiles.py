"""Profile texts for an evaluation split: nothing written about a held-out pair reaches a profile,
so changing held-out texts changes no text vector and no prediction (the real MiniLM encoder)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmrec.core import schema as S
from lmrec.text.profiles import split_profiles

ITEMS = pd.DataFrame({S.COL_ITEM: ["a", "b", "c"], S.COL_TITLE: ["", "Bass amp", ""], S.COL_CATEGORIES: ["", "Amps", ""]})


def _texts(held_out_text: str) -> pd.DataFrame:
    ts = pd.to_datetime([1, 2, 3, 4, 5], unit="D")
    return pd.DataFrame({S.COL_USER: ["u1", "u1", "u2", "u2", "u2"], S.COL_ITEM: ["a", "c", "a", "b", None],
                         S.COL_TEXT: ["warm tone", held_out_text, "cheap strings", "loud", "I play jazz"],
                         S.COL_SUMMARY: ["warm", held_out_text[:10], "cheap", "", ""], S.COL_EVENT_TS: ts})


KNOWN = pd.DataFrame({S.COL_USER: ["u1", "u2", "u2"], S.COL_ITEM: ["a", "a", "b"]})  # (u1, c) is held out


def test_held_out_texts_reach_no_profile():
    items1, users1 = split_profiles(ITEMS, _texts("terrible, broke in a week"), KNOWN)
    items2, users2 = split_profiles(ITEMS, _texts("the best pedal I ever owned"), KNOWN)
    pd.testing.assert_series_equal(items1, items2)
    pd.testing.assert_series_equal(users1, users2)
    assert "c" not in items1.index  # known only through the held-out review
    assert items1["b"] == "Bass amp. Categories: Amps"  # own text first
    assert items1["a"].startswith("Reviewed as: ")
    assert users2["u2"].split(" | ")[0] == "I play jazz"  # most recent first; texts about no item kept
    assert "broke" not in users1["u1"]


def test_changing_held_out_text_changes_no_vector():
    from lmrec.text.encoder import TextEncoder

    enc = TextEncoder(device="cpu")
    a = [enc.encode(s.tolist()) for s in split_profiles(ITEMS, _texts("terrible, broke in a week"), KNOWN)]
    b = [enc.encode(s.tolist()) for s in split_profiles(ITEMS, _texts("the best pedal I ever owned"), KNOWN)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
