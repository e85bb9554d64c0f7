"""The rating model's training cost at MovieLens-25M size (issue #14/#15: a 25M train must fit a
night): one fit of ``--epochs`` epochs with early-stopping validation, on a seeded synthetic
rating table of that shape (162,000 users, 62,000 items with power-law popularity, ~21M fit and
~2.4M validation pairs, random unit 384-wide text vectors as MiniLM's are unit vectors). Ratings
are random: this measures cost, not quality (quality is benchmarks/ratings.py on real data).

Each ``--code`` checkout (default: this one) is timed in its own process, in turn, in the same
run: pass an older checkout (``git worktree add /tmp/old <commit>``) to compare code versions.

    .venv/bin/python benchmarks/rating_fit.py --code /tmp/old --code .   # writes benchmarks/results/rating-fit.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, write_result  # noqa: E402

USERS, ITEMS, DRAWS, DIM_TEXT = 162_000, 62_000, 27_500_000, 384


def measure(code: str, epochs: int, epoch_samples: int) -> dict:
    """In the child process: fit once with ``code``'s lmrec; seconds to the first epoch and per
    epoch, peak RSS."""
    import resource

    sys.path.insert(0, code)
    import lmrec

    assert Path(lmrec.__file__).resolve().is_relative_to(Path(code).resolve()), lmrec.__file__

    import numpy as np
    import pandas as pd

    from lmrec.core import schema as S
    from lmrec.model.rating import RatingConfig, fit_rating_model

    rng = np.random.default_rng(0)
    p = 1 / np.arange(1, ITEMS + 1) ** 0.9
    key = np.unique(rng.integers(0, USERS, DRAWS).astype(np.int64) * ITEMS + rng.choice(ITEMS, DRAWS, p=p / p.sum()))
    df = pd.DataFrame({S.COL_USER_IDX: key // ITEMS, S.COL_ITEM_IDX: key % ITEMS,
                       S.COL_RATING: rng.integers(1, 11, len(key)) / 2.0})
    T, U = (rng.standard_normal((n, DIM_TEXT)).astype(np.float32) for n in (ITEMS, USERS))
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    val = df.sample(frac=0.1, random_state=0)
    fit = df.drop(val.index)
    marks = []
    t0 = time.perf_counter()
    _, hist = fit_rating_model(fit, n_users=USERS, n_items=ITEMS, item_text=T, user_text=U, r_min=0.5, r_max=5.0,
                               cfg=RatingConfig(epoch_samples=epoch_samples, patience=epochs), val=val, epochs=epochs,
                               progress=lambda e, h: marks.append(time.perf_counter() - t0))
    total = time.perf_counter() - t0
    return {"fit_pairs": len(fit), "val_pairs": len(val), "first_epoch_done_s": marks[0],
            "per_epoch_s": (marks[-1] - marks[0]) / max(len(marks) - 1, 1), "total_s": total,
            "val_rmse": hist["val_rmse"], "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", action="append", help="a checkout whose lmrec is timed (repeatable; default: this one)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--epoch-samples", type=int, default=1_000_000, help="ratings an epoch visits (the scale run's budget)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.epochs, args.epoch_samples)))
        return
    rows = []
    for code in args.code or [str(REPO)]:
        path = Path(code).resolve()
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--", "lmrec"], capture_output=True,
                               text=True).stdout.strip()
        print(f"timing {path} ({commit})", flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", str(path), "--epochs", str(args.epochs),
                              "--epoch-samples", str(args.epoch_samples)], capture_output=True, text=True, check=True)
        rows.append((f"{commit}{' (modified)' if dirty else ''}", json.loads(out.stdout.strip().splitlines()[-1])))
    r0 = rows[0][1]
    lines = ["# The rating model's fit at MovieLens-25M size (cost, synthetic ratings)", "",
             f"{USERS:,} users x {ITEMS:,} items, {r0['fit_pairs']:,} fit pairs, {r0['val_pairs']:,} validation pairs, "
             f"{args.epochs} epochs of {args.epoch_samples:,} ratings, each epoch followed by the validation RMSE over "
             "every validation pair; one process per code version, in turn, 1 torch thread (RatingConfig.threads).", "",
             "| code | seconds to the first epoch's end | seconds per later epoch | total s | peak GiB | validation RMSE per epoch |",
             "|---|--:|--:|--:|--:|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['first_epoch_done_s']:.1f} | {r['per_epoch_s']:.1f} | {r['total_s']:.1f} | "
                     f"{r['peak_gib']:.1f} | {', '.join(f'{v:.4f}' for v in r['val_rmse'])} |")
    if len(rows) > 1:
        a, b = rows[0][1], rows[-1][1]
        lines += ["", f"Per epoch {a['per_epoch_s'] / b['per_epoch_s']:.2f}x, whole fit {a['total_s'] / b['total_s']:.2f}x "
                  f"({rows[0][0]} over {rows[-1][0]})."]
    write_result("rating-fit", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
