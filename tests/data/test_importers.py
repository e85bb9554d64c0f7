"""Importers: real files in ../shared/data when present, small files written here always."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from lmrec.data.demo import generate
from lmrec.data.importers import import_amazon_reviews, import_movielens


def _read(out, stem):
    return pd.read_csv(out / f"{stem}.csv", dtype=str)


@pytest.mark.data
def test_movielens_latest_small(shared_data, tmp_path):
    counts = import_movielens(shared_data / "ml-latest-small", tmp_path)
    assert counts == {"ratings": 100_836, "items": 9_742, "user_text": 3_683}
    r = _read(tmp_path, "ratings")
    assert r["user_id"].nunique() == 610
    items = _read(tmp_path, "items")
    assert items.set_index("item_id").loc["1", "categories"] == "Adventure|Animation|Children|Comedy|Fantasy"


@pytest.mark.data
def test_amazon_reviews(shared_data, tmp_path):
    counts = import_amazon_reviews(shared_data / "amazon-musical-instruments-5core" / "reviews_Musical_Instruments_5.json.gz", tmp_path)
    assert counts["ratings"] == 10_261 and counts["items"] == 900
    r = _read(tmp_path, "ratings")
    assert r["user_id"].nunique() == 1_429 and r["item_id"].nunique() == 900


def test_movielens_100k_format(tmp_path):
    src = tmp_path / "ml-100k"
    src.mkdir()
    (src / "u.data").write_text("1\t10\t4\t881250949\n2\t20\t3\t891717742\n")
    flags = ["0"] * 19
    flags[1] = flags[5] = "1"
    (src / "u.item").write_bytes(("10|Caf\xe9 (1995)|01-Jan-1995||http://x|" + "|".join(flags) + "\n"
                                  "20|Other (1996)|01-Jan-1996||http://y|" + "|".join(["1"] + ["0"] * 18) + "\n").encode("latin-1"))
    out = tmp_path / "out"
    assert import_movielens(src, out) == {"ratings": 2, "items": 2}
    items = _read(out, "items").set_index("item_id")
    assert items.loc["10", "title"] == "Café (1995)"
    assert items.loc["10", "categories"] == "Action|Comedy"


def test_movielens_1m_format(tmp_path):
    src = tmp_path / "ml-1m"
    src.mkdir()
    (src / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    (src / "movies.dat").write_text("1193::One Flew (1975)::Drama\n661::James (1996)::Animation|Children's\n")
    out = tmp_path / "out"
    assert import_movielens(src, out) == {"ratings": 2, "items": 2}
    assert _read(out, "ratings").iloc[0].to_dict() == {"user_id": "1", "item_id": "1193", "rating": "5", "timestamp": "978300760"}


def test_amazon_plain_json_lines(tmp_path):
    rows = [{"reviewerID": "A", "asin": "X", "overall": 5.0, "unixReviewTime": 1, "reviewText": "good", "summary": "Five"},
            {"reviewerID": "B", "asin": "Y", "overall": 1.0, "unixReviewTime": 2, "reviewText": "", "summary": ""}]
    path = tmp_path / "r.json"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    counts = import_amazon_reviews(path, out)
    assert counts == {"ratings": 2, "items": 2, "user_text": 1}
    gz = tmp_path / "r.json.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(path.read_text())
    assert import_amazon_reviews(gz, tmp_path / "out2") == counts


def test_missing_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MovieLens files"):
        import_movielens(tmp_path, tmp_path / "o")


def test_demo_is_deterministic_and_carries_signal():
    r1, i1, t1 = generate(200, 240, seed=7)
    r2, i2, t2 = generate(200, 240, seed=7)
    pd.testing.assert_frame_equal(r1, r2)
    pd.testing.assert_frame_equal(i1, i2)
    assert len(t1) > 0 and r1["rating"].between(0.5, 5).all()
    # Signal: a user's ratings are higher on their most-rated genre than on others.
    df = r1.merge(i1, on="item_id")
    df["genre"] = df["categories"].str.split("|").str[0]
    top = df.groupby("user_id")["genre"].agg(lambda s: s.value_counts().index[0])
    df["is_top"] = df["genre"] == df["user_id"].map(top)
    assert df[df.is_top]["rating"].mean() > df[~df.is_top]["rating"].mean() + 0.3
