"""How often one answer takes over a speaker's recent recordings: where the model knows the voice, and where not.

The Predict page warns when one emotion is the answer to ``predict.SETTLED_COUNT`` or more of a user's last
``predict.SETTLED_WINDOW`` recordings (:func:`ser_core.predict.settled_answer`): "it always says X on my voice".
This measures how often that rule fires for a speaker who records ``n`` clips, from a model's answers to clips
of speakers it never heard in training: the out-of-fold predictions of its own corpus (voices like the ones it
learnt from) and its answers on other corpora (strangers). Every draw takes ``n`` clips of one speaker at random,
in random order; a speaker with fewer than ``n`` clips is left out. Also reported: the accuracy (of the model's
answer among all its emotions) of the drawn clips where the rule fires and where it does not.

    python training/answer_spread.py models/ravdess/predictions.csv \\
        training/results/candidates/strangers_default.csv.gz --out training/results/answer_spread_default.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_core.predict import SETTLED_COUNT, SETTLED_WINDOW, settled_answer  # noqa: E402


def fire_rates(table: pd.DataFrame, n: int, draws: int, rng: np.random.Generator) -> dict:
    """Per corpus: the share of ``n``-clip draws of one speaker whose answers set off the rule, and the
    accuracy of the drawn clips where it fires and where it does not."""
    out = {}
    for corpus, rows in table.groupby("corpus"):
        fired, right_fired, right_quiet, n_fired, n_quiet = 0, 0, 0, 0, 0
        total = 0
        for _, clips in rows.groupby("speaker"):
            if len(clips) < n:
                continue
            pred, true = clips["pred"].to_numpy(), clips["true"].to_numpy()
            for _ in range(draws):
                pick = rng.choice(len(clips), n, replace=False)
                hit = int((pred[pick] == true[pick]).sum())
                total += 1
                if settled_answer(list(pred[pick])) is not None:
                    fired += 1
                    right_fired, n_fired = right_fired + hit, n_fired + n
                else:
                    right_quiet, n_quiet = right_quiet + hit, n_quiet + n
        if total:
            out[str(corpus)] = {"draws": total, "fires": round(fired / total, 4),
                                "accuracy_when_fired": round(right_fired / n_fired, 4) if n_fired else None,
                                "accuracy_otherwise": round(right_quiet / n_quiet, 4) if n_quiet else None}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="+", type=Path,
                    help="prediction tables (file, speaker, true, pred[, corpus]): out-of-fold or strangers'")
    ap.add_argument("--draws", type=int, default=200, help="random draws per speaker and n")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    frames = []
    for path in args.tables:
        t = pd.read_csv(path)
        if "corpus" not in t:
            t["corpus"] = "ravdess"
        frames.append(t[["corpus", "speaker", "true", "pred"]])
    table = pd.concat(frames, ignore_index=True)
    rng = np.random.default_rng(args.seed)
    res = {"rule": f"one emotion is the answer to >= {SETTLED_COUNT} of the last {SETTLED_WINDOW} recordings",
           "tables": [str(p) for p in args.tables], "draws_per_speaker": args.draws, "seed": args.seed, "n": {}}
    for n in range(SETTLED_COUNT, SETTLED_WINDOW + 3):
        res["n"][n] = fire_rates(table, n, args.draws, rng)
        print(f"{n} recordings: " + "; ".join(
            f"{c} fires {v['fires']:.0%} (accuracy {v['accuracy_when_fired'] or 0:.0%} when it does, "
            f"{v['accuracy_otherwise'] or 0:.0%} otherwise)" for c, v in res["n"][n].items()), flush=True)
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
