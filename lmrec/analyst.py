"""What analysts ask of the tables and the registry: a user's recommendations with titles and
reasons, the champion's metrics against the baselines. The ``lmrec`` command prints them."""

from __future__ import annotations

import datetime as dt

from lmrec.core import schema as S
from lmrec.core.settings import Settings


def user_recommendations(spark, cfg: Settings, user_id: str, run_date: dt.date | None = None):
    """(run_date, rows) of a user's recommendations with item titles and the explaining title;
    the latest date when ``run_date`` is None."""
    from pyspark.sql import functions as F

    from lmrec.core.io import read_table

    recs = read_table(spark, cfg, S.RECOMMENDATIONS).where(F.col(S.COL_USER) == user_id)
    if run_date is None:
        run_date = recs.agg(F.max(S.COL_RUN_DATE)).first()[0]
        if run_date is None:
            return None, []
    recs = recs.where(F.col(S.COL_RUN_DATE) == F.lit(run_date))
    titles = read_table(spark, cfg, S.ITEMS_RAW, run_date).select(S.COL_ITEM, S.COL_TITLE)
    because = titles.select(F.col(S.COL_ITEM).alias(S.COL_BECAUSE), F.col(S.COL_TITLE).alias("because_title"))
    rows = (recs.join(titles, S.COL_ITEM, "left").join(because, S.COL_BECAUSE, "left")
            .select(S.COL_RANK, S.COL_ITEM, S.COL_TITLE, F.round(S.COL_SCORE, 4).alias(S.COL_SCORE),
                    S.COL_MODEL_VERSION, "because_title").orderBy(S.COL_RANK).collect())
    return run_date, rows


def champion_summary(cfg: Settings) -> tuple[str | None, list[tuple]]:
    """(champion version, [(model, NDCG@10, precision@10, recall@10, MAP@10)]) from its MLflow run."""
    from mlflow.exceptions import MlflowException

    from lmrec.model.registry import setup_mlflow

    mlflow = setup_mlflow(cfg)
    client = mlflow.MlflowClient()
    try:
        mv = client.get_model_version_by_alias(S.MODEL_NAME, S.ALIAS_CHAMPION)
    except MlflowException:
        return None, []
    metrics = client.get_run(mv.run_id).data.metrics
    names = sorted({k.split(".", 1)[0] for k in metrics if k.endswith(".ndcg_at_10")})
    rows = [(n, *(round(metrics.get(f"{n}.{m}", float("nan")), 4) for m in ("ndcg_at_10", "precision_at_10", "recall_at_10", "map_at_10")))
            for n in names]
    return str(mv.version), sorted(rows, key=lambda r: -r[1])
