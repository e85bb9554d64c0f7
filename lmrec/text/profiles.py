"""Profile texts for an evaluation split (pandas, no Spark): the item and user texts a model may see
when it is fit on some (user, item) pairs and judged on others.

The nightly texts (:mod:`lmrec.text.builders`) hold everything written by the end of D, the
held-out ratings' reviews and tags included; a model selected or judged on a part of D's ratings
must not read what was written about those ratings. Here a user text (a review, a tag) is used only
when its (user, item) pair is among the ``known`` pairs (the parts the model is fit on); texts about
no item are kept. The templates are the builders': an item is known by its own text, else by
``Reviewed as: ...`` (its known reviews' summaries, most recent first); a user by their own known
texts, most recent first, joined with `` | ``.
"""

from __future__ import annotations

import pandas as pd

from lmrec.core import schema as S
from lmrec.text.builders import MAX_REVIEWS_PER_ITEM, MAX_TEXTS_PER_USER


def known_texts(user_text: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``user_text`` (user_id, item_id, text, ...) about a pair in ``known``
    (user_id, item_id), or about no item."""
    if user_text is None or user_text.empty:
        return pd.DataFrame(columns=[S.COL_USER, S.COL_ITEM, S.COL_TEXT, S.COL_SUMMARY, S.COL_EVENT_TS])
    pairs = known[[S.COL_USER, S.COL_ITEM]].drop_duplicates().assign(_known=True)
    m = user_text.merge(pairs, on=[S.COL_USER, S.COL_ITEM], how="left")
    return m[m["_known"].eq(True) | m[S.COL_ITEM].isna()].drop(columns="_known")


def item_texts(items: pd.DataFrame, texts: pd.DataFrame) -> pd.Series:
    """item_id -> text: title, description and categories, else what the known reviews said."""
    own = items.set_index(S.COL_ITEM)
    parts = []
    for col, fmt in ((S.COL_TITLE, "{}"), (S.COL_DESCRIPTION, "{}"), (S.COL_CATEGORIES, "Categories: {}")):
        if col in own:
            v = own[col].fillna("").astype(str).str.strip()
            if col == S.COL_CATEGORIES:
                v = v.str.replace("|", ", ", regex=False)
            parts.append(v.where(v.str.len() == 0, v.map(fmt.format)))
    text = pd.Series("", index=own.index, dtype=object)
    for p in parts:
        text = text.where(p.str.len() == 0, text.where(text.str.len() == 0, text + ". ") + p)
    if len(texts) and S.COL_ITEM in texts:
        said = texts[S.COL_SUMMARY].fillna("").astype(str).str.strip() if S.COL_SUMMARY in texts else pd.Series("", index=texts.index)
        said = said.where(said.str.len() > 0, texts[S.COL_TEXT].fillna("").astype(str).str.strip().str[:200])
        rev = (texts.assign(_s=said).sort_values(S.COL_EVENT_TS, ascending=False, kind="stable")
               .groupby(S.COL_ITEM).head(MAX_REVIEWS_PER_ITEM).groupby(S.COL_ITEM, sort=False)["_s"].agg("; ".join))
        bare = text.str.len() == 0
        text[bare] = ("Reviewed as: " + rev.reindex(text.index[bare])).fillna("")
    return text[text.str.len() > 0]


def user_texts(texts: pd.DataFrame) -> pd.Series:
    """user_id -> the user's own known texts, most recent first, joined with `` | ``."""
    if texts.empty:
        return pd.Series(dtype=object)
    t = texts.assign(_t=texts[S.COL_TEXT].fillna("").astype(str).str.strip())
    t = t[t["_t"].str.len() > 0].sort_values([S.COL_EVENT_TS, "_t"], ascending=[False, True], kind="stable")
    return t.groupby(S.COL_USER).head(MAX_TEXTS_PER_USER).groupby(S.COL_USER, sort=False)["_t"].agg(" | ".join)


def split_profiles(items: pd.DataFrame, user_text: pd.DataFrame | None, known: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(item texts, user texts) built only from what is known of the ``known`` (user_id, item_id)
    pairs: what a model fit on them may read."""
    texts = known_texts(user_text, known)
    return item_texts(items, texts), user_texts(texts)
