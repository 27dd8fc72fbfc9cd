"""Leave-one-corpus-out predictions side by side: accuracy (own emotions and all eight), ECE after transfer
calibration, "not sure" where wrong and where right, and how much of the answers two emotions take.

    python training/loco_report.py NAME=PREDICTIONS.csv [NAME=PREDICTIONS.csv ...] [--out FILE.json]

Each table is the out-of-fold ``predictions.csv`` of a ``--protocol loco`` cross-validation (or a model's
``loco_predictions.csv``). The temperature of each held-out corpus is fitted on the other corpora's rows of
the same table: predictions of models that never heard those corpora either, and none of the corpus scored
(``ser_core.calibration.transfer_summary``), so every table is calibrated the same way.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_core import calibration, evaluation  # noqa: E402
from tables import named_tables  # noqa: E402


def summary(table: pd.DataFrame) -> dict[str, dict]:
    """Per held-out corpus: the figures the pre-registrations compare."""
    labels = [c[2:] for c in table.columns if c.startswith("p_")]
    per = evaluation.per_corpus(table, labels)
    transfer = calibration.transfer_summary(table, table)
    out = {}
    for corpus, t in transfer.items():
        shares = sorted(t["answers"].values(), reverse=True)
        out[corpus] = {"n": t["n"], "own_accuracy": per[corpus]["own"]["accuracy"],
                       "accuracy": per[corpus]["accuracy"], "ece_before": t["ece_before"],
                       "ece_after": t["ece_after"], "not_sure": t["not_sure"],
                       "not_sure_when_wrong": t["not_sure_when_wrong"],
                       "not_sure_when_right": t["not_sure_when_right"],
                       "top_two_share": round(sum(shares[:2]), 4), "answers": t["answers"]}
    return out


def main(argv: list[str] | None = None) -> int:
    tables, out = named_tables(__doc__.split("\n\n")[0], argv)
    results = {name: summary(table) for name, table in tables.items()}
    corpora = sorted({c for r in results.values() for c in r})
    print(f"{'':24}" + "".join(f"{c:>26}" for c in corpora))
    rows = [("own-emotion accuracy", "own_accuracy", 100), ("all-eight accuracy", "accuracy", 100),
            ("ECE after transfer", "ece_after", 1), ("not sure when wrong", "not_sure_when_wrong", 100),
            ("not sure when right", "not_sure_when_right", 100), ("two commonest answers", "top_two_share", 100)]
    for name, res in results.items():
        print(name)
        for title, key, scale in rows:
            cells = [res.get(c, {}).get(key) for c in corpora]
            print(f"  {title:22}" + "".join(f"{'-' if v is None else round(v * scale, 3 if scale == 1 else 1):>26}"
                                             for v in cells))
        own = [res[c]["own_accuracy"] for c in corpora if c != "ravdess" and c in res]
        if own:
            print(f"  mean own-emotion accuracy without RAVDESS: {100 * sum(own) / len(own):.1f} %")
    if out:
        out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
