"""Candidate U of docs/preregistration-session30.md: "not sure" when fewer than K of the RAVDESS ensemble's five
networks agree with its answer (models/ravdess, the default until session 36), K chosen on RAVDESS out-of-fold
tables, judged on the corpora the ensemble never heard.

    python training/unanimity.py models/ravdess training/results/teachers/ravdess_five \
        training/results/candidates/strangers_default.csv.gz training/results/candidates/unanimity_U.json

RAVDESS: each network's fold tables (``fold-N/member-M.test.csv.gz``, trained on that fold's training actors only),
their equal-weight mean calibrated with the default's stored temperature. Strangers: the shipped networks
(``MODEL/members/*``) on every ASED, EMOVO and URDU clip through ``ser predict``'s path, counted against the
default's own answers in the strangers table.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ser_core import calibration, datasets  # noqa: E402
from ser_core.config import ModelSpec  # noqa: E402
from ser_core.jsonio import write_json  # noqa: E402
from ser_core.modeldir import network_dirs  # noqa: E402

KS = (2, 3, 4, 5)
MAX_EXTRA_RIGHT = 0.10      # K may cover at most this much more of RAVDESS's right answers than today's rule
BAR_WRONG, BAR_GAP = 0.80, 0.20


def shares(right: np.ndarray, flagged: np.ndarray) -> dict:
    """The shares of right and of wrong answers that are flagged "not sure"."""
    return {"right_flagged": round(float(flagged[right].mean()), 4) if right.any() else None,
            "wrong_flagged": round(float(flagged[~right].mean()), 4) if (~right).any() else None,
            "n_right": int(right.sum()), "n_wrong": int((~right).sum())}


def ravdess_oof(teachers: Path, labels: list[str], temperature: float, threshold: float) -> pd.DataFrame:
    """One row per RAVDESS clip: truth, the five networks' answers, the calibrated ensemble's answer and confidence."""
    cols = [f"p_{k}" for k in labels]
    rows = []
    for fold in sorted(teachers.glob("fold-[0-9]*")):
        tables = [pd.read_csv(f).set_index("file") for f in sorted(fold.glob("member-*.test.csv.gz"))]
        if len(tables) != 5:
            raise SystemExit(f"{fold}: {len(tables)} network tables, not 5")
        files = tables[0].index
        probs = np.stack([t.loc[files, cols].to_numpy(float) for t in tables])       # (5, clips, 8)
        cal = calibration.apply_temperature(probs.mean(axis=0), temperature)
        pred = cal.argmax(axis=1)
        rows.append(pd.DataFrame({"file": files, "true": tables[0].loc[files, "true"].to_numpy(),
                                  "pred": [labels[i] for i in pred], "confidence": cal.max(axis=1),
                                  "agree": (probs.argmax(axis=2) == pred[None]).sum(axis=0)}))
    table = pd.concat(rows, ignore_index=True)
    table["not_sure"] = table["confidence"] < threshold
    return table


def stranger_votes(model_dir: Path, strangers: pd.DataFrame, runtime: str = "auto") -> pd.DataFrame:
    """How many of the shipped networks answer as the default did, for every clip of the strangers table."""
    from strangers import predictions

    df = datasets.load_dataset("ased+emovo+urdu")
    df = df[df["path"].map(lambda p: Path(p).name).isin(set(strangers["file"]))]
    key = ["corpus", "file"]
    out = strangers.set_index(key)
    out["agree"] = 0
    out["members_answered"] = 0
    for d in network_dirs(model_dir):
        table, _ = predictions(str(d), df, runtime)
        member = table.set_index(key)["pred"].reindex(out.index)
        out["agree"] += (member == out["pred"]).to_numpy().astype(int)
        out["members_answered"] += member.notna().to_numpy().astype(int)
        print(f"{d.name}: {member.notna().sum()} clips answered", flush=True)
    return out.reset_index()


def figures(table: pd.DataFrame, k: int) -> dict:
    right = (table["true"] == table["pred"]).to_numpy()
    today = table["not_sure"].to_numpy(bool)
    u = today | (table["agree"].to_numpy() < k)
    return {"today": shares(right, today), f"U_{k}": shares(right, u),
            "agree_right": np.bincount(table["agree"][right], minlength=6).tolist(),
            "agree_wrong": np.bincount(table["agree"][~right], minlength=6).tolist()}


def main() -> int:
    model, teachers, strangers_csv, out = (Path(a) for a in sys.argv[1:5])
    spec = ModelSpec.load(model / "spec.json")
    labels, cal = list(spec.labels), spec.extra[calibration.SPEC_KEY]
    rav = ravdess_oof(teachers, labels, cal["temperature"], cal["threshold"])
    right = (rav["true"] == rav["pred"]).to_numpy()
    today = shares(right, rav["not_sure"].to_numpy(bool))
    by_k = {k: shares(right, rav["not_sure"].to_numpy(bool) | (rav["agree"].to_numpy() < k)) for k in KS}
    allowed = [k for k in KS if by_k[k]["right_flagged"] <= today["right_flagged"] + MAX_EXTRA_RIGHT]
    k = max(allowed) if allowed else None
    res = {"protocol": "docs/preregistration-session30.md", "ravdess": {"accuracy": round(float(right.mean()), 4),
           "today": today, **{f"U_{kk}": v for kk, v in by_k.items()}}, "K": k}
    print(json.dumps(res, indent=1), flush=True)
    if k is None:
        res["verdict"] = "no K keeps RAVDESS's right answers within the allowance"
    else:
        votes = stranger_votes(model, pd.read_csv(strangers_csv))
        res["strangers"] = {c: figures(g, k) for c, g in votes.groupby("corpus")}
        res["members_missing"] = int((votes["members_answered"] < 5).sum())
        ok = {c: f[f"U_{k}"]["wrong_flagged"] >= BAR_WRONG
              and f[f"U_{k}"]["wrong_flagged"] - f[f"U_{k}"]["right_flagged"] >= BAR_GAP
              for c, f in res["strangers"].items()}
        res["passes"] = {**ok, "all": all(ok.values())}
    write_json(out, res)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
