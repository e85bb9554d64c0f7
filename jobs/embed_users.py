"""embed_users: BERT vectors of every user's text as of D (own reviews and tags, most recent
first, plus titles of their highest-rated items) -> ``user_embeddings`` (partition D)."""

from __future__ import annotations

import datetime as dt

from lmrec.core import schema as S
from lmrec.text.embedding import run_embedding
from lmrec.core.io import read_table
from lmrec.core.settings import Settings
from lmrec.text.builders import build_user_text


def texts(spark, cfg: Settings, run_date: dt.date):
    """The user texts this job embeds for ``run_date`` (user_id, text): what the tables held by D."""
    return build_user_text(read_table(spark, cfg, S.USER_TEXT_RAW, run_date),
                           read_table(spark, cfg, S.RATING_MATRIX, run_date),
                           read_table(spark, cfg, S.ITEMS_RAW, run_date), run_date,
                           top_titles=cfg.user_text_titles)


def run(run_date: dt.date, *, cfg: Settings, spark, source: str | None = None, full_refresh: bool = False) -> dict:
    """Embed the user texts for ``run_date``; returns reused/computed counts."""
    return run_embedding(spark, cfg, run_date, texts(spark, cfg, run_date), table=S.USER_EMBEDDINGS, col_id=S.COL_USER,
                         full_refresh=full_refresh)


def main(argv: list[str] | None = None) -> None:
    from lmrec.pipeline import job_entry

    job_entry("embed_users", argv)


if __name__ == "__main__":
    main()
