"""The embedded default: a deterministic demo catalogue whose words carry real signal.

Every item belongs to one or two genres and its title, description and categories use that
genre's words; every user has a taste over genres and rates items of liked genres more often and
higher. So text alone predicts preferences (cold start works) and the ratings carry the rest.
Vectorised NumPy: MovieLens-25M size (162k users, 62k items, 25M ratings) in a few minutes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from lmrec.data.importers import write_source

GENRES = {
    "space": ["galaxy", "rocket", "orbit", "alien", "starship", "nebula", "astronaut", "comet", "planet", "warp"],
    "crime": ["detective", "heist", "gangster", "alibi", "murder", "precinct", "smuggler", "verdict", "mobster", "con"],
    "romance": ["love", "wedding", "kiss", "heart", "sweetheart", "letters", "summer", "promise", "waltz", "bride"],
    "horror": ["haunted", "zombie", "ghost", "curse", "vampire", "cellar", "scream", "ritual", "witch", "shadow"],
    "comedy": ["prank", "roommates", "clown", "mixup", "party", "road trip", "sitcom", "blunder", "jester", "fiasco"],
    "western": ["sheriff", "outlaw", "saloon", "frontier", "cattle", "gunslinger", "canyon", "ranch", "stagecoach", "bounty"],
    "war": ["battalion", "trenches", "general", "siege", "submarine", "resistance", "frontline", "medal", "platoon", "armistice"],
    "animation": ["cartoon", "talking animals", "dragon", "princess", "toy", "puppet", "fairy", "kingdom", "wizard", "robot pal"],
    "documentary": ["archive", "interview", "wildlife", "history", "expedition", "ocean", "science", "climate", "portrait", "reportage"],
    "music": ["guitar", "band", "concert", "opera", "jazz", "piano", "choir", "rock", "violin", "drummer"],
    "sports": ["boxing", "marathon", "coach", "championship", "soccer", "underdog", "baseball", "olympics", "rookie", "stadium"],
    "cooking": ["kitchen", "chef", "recipe", "bakery", "spices", "restaurant", "pastry", "barbecue", "noodles", "vineyard"],
}
ADJECTIVES = ["Last", "Silent", "Golden", "Broken", "Hidden", "Endless", "Crimson", "Lost", "Wild", "Secret",
              "Final", "Midnight", "Distant", "Burning", "Frozen", "Little"]
DEFAULT_END = dt.date(2024, 6, 30)


def generate(users: int = 300, items: int = 400, *, ratings_per_user: float = 30.0, days: int = 7,
             end_date: dt.date = DEFAULT_END, seed: int = 42, text_fraction: float = 0.3):
    """Return (ratings, items, user_text) DataFrames in the source format."""
    rng = np.random.default_rng(seed)
    names = list(GENRES)
    G = len(names)
    vocab = np.array([GENRES[g] for g in names])  # (G, W)
    W = vocab.shape[1]

    # Items: genre 1 (balanced), genre 2 with probability 0.4, a latent quality.
    g1 = rng.permutation(np.arange(items) % G)
    has2 = rng.random(items) < 0.4
    g2 = np.where(has2, (g1 + rng.integers(1, G, items)) % G, -1)
    quality = rng.normal(0, 0.4, items)
    w = rng.integers(0, W, (items, 4))
    adj = rng.integers(0, len(ADJECTIVES), items)
    item_ids = np.array([f"i{i:06d}" for i in range(items)])
    titles = [f"The {ADJECTIVES[adj[i]]} {vocab[g1[i], w[i, 0]].title()} ({i})" for i in range(items)]
    descr = [
        f"A {names[g1[i]]} story of {vocab[g1[i], w[i, 1]]} and {vocab[g1[i], w[i, 2]]}"
        + (f", with {vocab[g2[i], w[i, 3]]} from the world of {names[g2[i]]}" if g2[i] >= 0 else f" and {vocab[g1[i], w[i, 3]]}")
        + "."
        for i in range(items)
    ]
    cats = [names[g1[i]] + (f"|{names[g2[i]]}" if g2[i] >= 0 else "") for i in range(items)]
    items_df = pd.DataFrame({"item_id": item_ids, "title": titles, "description": descr, "categories": cats})

    # Users: a taste over genres; how many ratings each gives (heavy-tailed, at least 3).
    pref = rng.dirichlet(np.full(G, 0.3), users)  # (U, G)
    n = np.maximum(3, rng.lognormal(np.log(ratings_per_user) - 0.5, 1.0, users)).astype(np.int64)
    n = np.minimum(n, items // 2)
    uid = np.repeat(np.arange(users), n)
    R = len(uid)

    # Genre of each rating from the user's taste (chunked to bound memory), item by popularity.
    cum = np.cumsum(pref, axis=1)
    genre = np.empty(R, dtype=np.int64)
    for s in range(0, R, 2_000_000):
        u = rng.random(min(2_000_000, R - s))
        genre[s:s + len(u)] = np.minimum((cum[uid[s:s + len(u)]] < u[:, None]).sum(axis=1), G - 1)
    by_genre = [np.flatnonzero(g1 == g) for g in range(G)]
    sizes = np.array([len(b) for b in by_genre])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    flat = np.concatenate(by_genre)
    pos = np.floor(sizes[genre] * rng.random(R) ** 2).astype(np.int64)  # skew: popular items first
    item = flat[offsets[genre] + pos]

    aff = pref[uid, g1[item]] * G + np.where(g2[item] >= 0, 0.5 * pref[uid, np.maximum(g2[item], 0)] * G, 0)
    raw = 2.3 + 1.4 * np.tanh(aff - 1.0) + quality[item] + rng.normal(0, 0.5, R)
    rating = np.clip(np.round(raw * 2) / 2, 0.5, 5.0)
    start = int(dt.datetime.combine(end_date - dt.timedelta(days=days - 1), dt.time(0), tzinfo=dt.timezone.utc).timestamp())
    ts = start + rng.integers(0, days * 86400, R)
    ratings_df = pd.DataFrame({"user_id": np.char.add("u", np.char.zfill(uid.astype(str), 6)),
                               "item_id": item_ids[item], "rating": rating, "timestamp": ts})
    ratings_df = ratings_df.drop_duplicates(["user_id", "item_id"], keep="first").reset_index(drop=True)

    # User text: for some users, one to three short notes about their favourite genre's words.
    writers = np.flatnonzero(rng.random(users) < text_fraction)
    texts = []
    for u in writers:
        top = int(np.argmax(pref[u]))
        for k in range(int(rng.integers(1, 4))):
            a, b = rng.choice(W, 2, replace=False)
            texts.append((f"u{u:06d}", f"I always enjoy a good {names[top]} film with {vocab[top, a]} and {vocab[top, b]}.",
                          start + int(rng.integers(0, days * 86400))))
    text_df = pd.DataFrame(texts, columns=["user_id", "text", "timestamp"])
    return ratings_df, items_df, text_df


def write_demo(out: str | Path, *, users: int = 300, items: int = 400, ratings_per_user: float = 30.0,
               days: int = 7, end_date: dt.date = DEFAULT_END, seed: int = 42, fmt: str | None = None) -> dict[str, int]:
    """Generate the demo catalogue into source directory ``out``; returns rows per file."""
    ratings, items_df, text = generate(users, items, ratings_per_user=ratings_per_user, days=days,
                                       end_date=end_date, seed=seed)
    fmt = fmt or ("parquet" if len(ratings) > 2_000_000 else "csv")
    return write_source(out, ratings, items_df, text, fmt=fmt)
