"""Text builders (point in time for D): the text a user or item is known by on date D.

Item template (empty parts are left out)::

    {title}. {description}. Categories: {c1}, {c2}. {attr}: {value}; ...

Items without a title or description (Amazon reviews) are described by the summaries of their
reviews written by the end of D, most recent first: ``Reviewed as: {s1}; {s2}; ...``.

User template: the user's own texts (reviews, tags) by the end of D, most recent first, joined
with `` | ``, then ``Liked: {title1}; {title2}`` for the user's highest-rated items by D
(``LMREC_USER_TEXT_TITLES``, default 0: off; train and gate rebuild it without the held-out ratings, see ``lmrec.model.training_data.without_held_out_texts``). The encoder truncates by tokens at the model's limit.
"""

from __future__ import annotations

import datetime as dt

from lmrec.core import schema as S
from lmrec.core.pit import as_of

MAX_REVIEWS_PER_ITEM = 5
MAX_TEXTS_PER_USER = 20


def build_item_text(items, user_text, run_date: dt.date):
    """(item_id, text) for every catalogue item; empty texts are dropped."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    S.require_columns(items, [S.COL_ITEM, S.COL_TITLE, S.COL_DESCRIPTION, S.COL_CATEGORIES, S.COL_ATTRIBUTES], "item text")
    S.require_columns(user_text, [S.COL_ITEM, S.COL_TEXT, S.COL_SUMMARY, S.COL_EVENT_TS], "item text")
    attrs = F.from_json(F.col(S.COL_ATTRIBUTES), "map<string,string>")
    attr_text = F.array_join(F.transform(F.map_entries(attrs), lambda e: F.concat_ws(": ", e["key"], e["value"])), "; ")
    cats = F.array_join(F.split(F.coalesce(F.col(S.COL_CATEGORIES), F.lit("")), r"\|"), ", ")
    own = F.concat_ws(". ", *[F.when(F.length(F.trim(c)) > 0, F.trim(c)) for c in (
        F.col(S.COL_TITLE), F.col(S.COL_DESCRIPTION),
        F.when(F.length(cats) > 0, F.concat(F.lit("Categories: "), cats)), attr_text)])

    # What reviews said about the item by D (summary, else the start of the text).
    w = Window.partitionBy(S.COL_ITEM).orderBy(F.col(S.COL_EVENT_TS).desc())
    said = F.coalesce(F.when(F.length(F.trim(S.COL_SUMMARY)) > 0, F.trim(S.COL_SUMMARY)),
                      F.substring(F.trim(S.COL_TEXT), 1, 200))
    reviews = (as_of(user_text.where(F.col(S.COL_ITEM).isNotNull()), run_date)
               .withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= MAX_REVIEWS_PER_ITEM)
               .groupBy(S.COL_ITEM).agg(F.array_join(F.transform(
                   F.array_sort(F.collect_list(F.struct("_rn", said.alias("s")))), lambda x: x["s"]), "; ").alias("_said")))
    has_own = (F.length(F.trim(F.coalesce(S.COL_TITLE, F.lit("")))) > 0) | (F.length(F.trim(F.coalesce(S.COL_DESCRIPTION, F.lit("")))) > 0)
    text = F.when(has_own, own).otherwise(F.concat_ws(". ", F.when(F.length(own) > 0, own),
                                                      F.concat(F.lit("Reviewed as: "), F.col("_said"))))
    return (items.join(reviews, S.COL_ITEM, "left")
            .select(S.COL_ITEM, text.alias(S.COL_TEXT))
            .where(F.col(S.COL_TEXT).isNotNull() & (F.length(S.COL_TEXT) > 0)))


def build_user_text(user_text, ratings, item_text, run_date: dt.date, *, top_titles: int = 5):
    """(user_id, text) for every user with a text by D: their own words, or (``top_titles`` > 0) the
    titles of their highest-rated items. ``ratings`` is read only for those titles.

    Args:
        user_text: bronze user texts (user_id, text, event_ts).
        ratings: the rating matrix for D (user_id, item_id, rating, event_ts).
        item_text: items with titles (item_id, title).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    S.require_columns(user_text, [S.COL_USER, S.COL_TEXT, S.COL_EVENT_TS], "user text")
    S.require_columns(ratings, [S.COL_USER, S.COL_ITEM, S.COL_RATING, S.COL_EVENT_TS], "user text")
    w = Window.partitionBy(S.COL_USER).orderBy(F.col(S.COL_EVENT_TS).desc(), F.col(S.COL_TEXT))
    own = (as_of(user_text, run_date).where(F.length(F.trim(S.COL_TEXT)) > 0)
           .withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= MAX_TEXTS_PER_USER)
           .groupBy(S.COL_USER).agg(F.array_join(F.transform(
               F.array_sort(F.collect_list(F.struct("_rn", F.trim(S.COL_TEXT).alias("t")))), lambda x: x["t"]), " | ").alias("_own")))
    liked = None
    if top_titles > 0:
        wr = Window.partitionBy(S.COL_USER).orderBy(F.col(S.COL_RATING).desc(), F.col(S.COL_EVENT_TS).desc(), F.col(S.COL_ITEM))
        liked = (as_of(ratings, run_date).join(item_text.select(S.COL_ITEM, S.COL_TITLE), S.COL_ITEM)
                 .where(F.length(F.trim(S.COL_TITLE)) > 0)
                 .withColumn("_rn", F.row_number().over(wr)).where(F.col("_rn") <= top_titles)
                 .groupBy(S.COL_USER).agg(F.array_join(F.transform(
                     F.array_sort(F.collect_list(F.struct("_rn", F.col(S.COL_TITLE).alias("t")))), lambda x: x["t"]), "; ").alias("_liked")))
    # A user's text is their own words and/or the titles they liked: the users with either (a user
    # with ratings only and no liked titles has no text), without a distinct over every rating.
    df, parts = own, [F.col("_own")]
    if liked is not None:
        df = own.join(liked, S.COL_USER, "full_outer")
        parts.append(F.when(F.col("_liked").isNotNull(), F.concat(F.lit("Liked: "), F.col("_liked"))))
    text = F.concat_ws(". ", *parts)
    return df.select(S.COL_USER, text.alias(S.COL_TEXT)).where(F.length(S.COL_TEXT) > 0)
