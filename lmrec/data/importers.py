"""Importers: public datasets -> the source format of docs/ARCHITECTURE.md (ratings, items, user_text).

Small, single-machine conversions with pandas; the Spark ingest job validates what they write.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def write_source(out: str | Path, ratings: pd.DataFrame, items: pd.DataFrame,
                 user_text: pd.DataFrame | None = None, *, fmt: str = "csv") -> dict[str, int]:
    """Write a source directory; returns rows per file."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for stem, df in (("ratings", ratings), ("items", items), ("user_text", user_text)):
        if df is None:
            continue
        for other in ("csv", "parquet"):
            (out / f"{stem}.{other}").unlink(missing_ok=True)
        df = df.astype({c: "string" for c in df.columns if c in ("user_id", "item_id")})
        if fmt == "parquet":
            df.to_parquet(out / f"{stem}.parquet", index=False)
        else:
            df.to_csv(out / f"{stem}.csv", index=False)
        counts[stem] = len(df)
    return counts


def _need(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"expected file {path} not found")
    return path


def import_movielens(path: str | Path, out: str | Path, *, fmt: str = "csv") -> dict[str, int]:
    """MovieLens 100K (u.data/u.item), 1M (.dat) or latest/25M (.csv, tags as user text)."""
    p = Path(path)
    if (p / "u.data").exists():
        r = pd.read_csv(p / "u.data", sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"])
        cols = ["item_id", "title", "release", "video", "url"] + ML100K_GENRES
        it = pd.read_csv(_need(p / "u.item"), sep="|", header=None, names=cols, encoding="latin-1")
        flags = it[ML100K_GENRES].to_numpy().astype(bool)
        it["categories"] = ["|".join(g for g, f in zip(ML100K_GENRES, row) if f) for row in flags]
        items = it[["item_id", "title", "categories"]]
        return write_source(out, r, items, None, fmt=fmt)
    if (p / "ratings.dat").exists():
        r = pd.read_csv(p / "ratings.dat", sep="::", engine="python", header=None,
                        names=["user_id", "item_id", "rating", "timestamp"])
        it = pd.read_csv(_need(p / "movies.dat"), sep="::", engine="python", header=None,
                         names=["item_id", "title", "categories"], encoding="latin-1")
        return write_source(out, r, it, None, fmt=fmt)
    if (p / "ratings.csv").exists():
        r = pd.read_csv(p / "ratings.csv", dtype={"userId": str, "movieId": str, "timestamp": "int64"})
        r = r.rename(columns={"userId": "user_id", "movieId": "item_id"})
        it = pd.read_csv(_need(p / "movies.csv"), dtype={"movieId": str})
        it = it.rename(columns={"movieId": "item_id", "genres": "categories"})
        it["categories"] = it["categories"].replace("(no genres listed)", "")
        tags = None
        if (p / "tags.csv").exists():
            t = pd.read_csv(p / "tags.csv", dtype={"userId": str, "movieId": str})
            tags = t.rename(columns={"userId": "user_id", "movieId": "item_id", "tag": "text"})[
                ["user_id", "item_id", "text", "timestamp"]]
        return write_source(out, r, it, tags, fmt=fmt)
    raise FileNotFoundError(f"{p}: no MovieLens files found (expected u.data, ratings.dat or ratings.csv)")


def import_amazon_reviews(path: str | Path, out: str | Path, *, fmt: str = "csv") -> dict[str, int]:
    """Amazon reviews (5-core JSON lines, gzipped or not): ratings, reviews as user text, item ids.

    Items get no text here: the embedding job builds it from what was known of the item by D.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} not found")
    opener = gzip.open if p.suffix == ".gz" else open
    rows = []
    with opener(p, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
    df = pd.DataFrame(rows)
    ratings = pd.DataFrame({"user_id": df["reviewerID"], "item_id": df["asin"],
                            "rating": df["overall"], "timestamp": df["unixReviewTime"]})
    text = pd.DataFrame({"user_id": df["reviewerID"], "item_id": df["asin"],
                         "text": df.get("reviewText", "").fillna(""), "summary": df.get("summary", "").fillna(""),
                         "timestamp": df["unixReviewTime"]})
    text = text[(text["text"].str.len() > 0) | (text["summary"].str.len() > 0)]
    items = pd.DataFrame({"item_id": sorted(df["asin"].unique()), "title": ""})
    return write_source(out, ratings, items, text, fmt=fmt)
