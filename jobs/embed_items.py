"""embed_items: BERT vectors of every catalogue item's text as of D -> ``item_embeddings``
(item_id, model_id, text_sha256, vector, partition D); unchanged texts reuse stored vectors."""

from __future__ import annotations

import datetime as dt

from lmrec.core import schema as S
from lmrec.text.embedding import run_embedding
from lmrec.core.io import read_table
from lmrec.core.settings import Settings
from lmrec.text.builders import build_item_text


def texts(spark, cfg: Settings, run_date: dt.date):
    """The item texts this job embeds for ``run_date`` (item_id, text): what the tables held by D."""
    return build_item_text(read_table(spark, cfg, S.ITEMS_RAW, run_date),
                           read_table(spark, cfg, S.USER_TEXT_RAW, run_date), run_date)


def run(run_date: dt.date, *, cfg: Settings, spark, source: str | None = None, full_refresh: bool = False) -> dict:
    """Embed the item texts for ``run_date``; returns reused/computed counts."""
    return run_embedding(spark, cfg, run_date, texts(spark, cfg, run_date), table=S.ITEM_EMBEDDINGS, col_id=S.COL_ITEM,
                         full_refresh=full_refresh)


def main(argv: list[str] | None = None) -> None:
    from lmrec.pipeline import job_entry

    job_entry("embed_items", argv)


if __name__ == "__main__":
    main()
