"""WU2A-SP: the probe adapted to one speaker from 20 of their unlabelled clips (session 40,
docs/preregistration-session40.md, addendum 2).

    python training/speaker_probe.py measure --work runs/whisper-wu2s \
        --out training/results/candidates/adapted_WU2A-SP.json

One speaker's clips move Whisper's vectors about as much as a corpus's (WU2A-R and WU2A-RS could not tell a new
speaker of a known corpus from a new corpus). The speaker probe learns from every training speaker with 20+ clips
standardised by their own clips (a corpus's other speakers together by theirs; every channel copy by its group and
copy number), through ``adapt_probe.train(..., by=SETUP)``; a test speaker's clips are standardised by 20 of their
own clips. C comes from :data:`GRID` by the inner own-emotion accuracy (each training corpus left out, each of its
speakers with 20+ clips adapted from 20 of their clips), the temperature from those inner rows, corpora weighing
alike. Measured: the speaker folds (RAVDESS accuracy, UAR, gender gap), each corpus left out, the RAVDESS folds'
channel shifts (each shifted speaker adapted from 20 of their shifted clips), and beside them WU2S's single-clip
answers of the same clips (leaving a corpus out, calibrated as shipped; under the speaker folds, the
temperature cross-fitted by fold, as the default's ECE is read).

``--recipe H`` (addendum 3, reported) measures the shipped adapted mode, WU2A-H's recorded folds, given one
speaker's 20 clips as the reference instead of the setup's; ``--recipe SPH`` (registered) is the speaker probe and
the single-clip probe of WU2S's recipe answering together, as WU2A-H joins WU2A-CN's.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import adapt_probe as ap  # noqa: E402
import encoder_probe as ep  # noqa: E402
import route_probe  # noqa: E402
from ser_core import adapt, evaluation, splits  # noqa: E402

RESULTS = HERE / "results" / "candidates"
GRID = (0.0001, 0.0003, 0.001, 0.003)
COPIES = route_probe.COPIES
#: WU2A-SP (the speaker probe), the shipped adapted mode WU2A-H given one speaker's clips (addendum 3, reported),
#: WU2A-SPH (the speaker probe and the single-clip probe together, addendum 3).
RECIPES = ("SP", "H", "SPH")
SETUP = "setup"             # the column adapt_probe.train standardises by: a speaker, or a corpus's other speakers


def setups(df: pd.DataFrame) -> np.ndarray:
    """Each clip's standardisation group: its speaker when the speaker has at least ``REFERENCE_CLIPS`` clips,
    else its corpus's other speakers together."""
    n = df.groupby("speaker")["speaker"].transform("size").to_numpy()
    return np.where(n >= adapt.REFERENCE_CLIPS, df["speaker"].to_numpy(str),
                    df["corpus"].to_numpy(str) + "/others")


def speakers(df: pd.DataFrame, rows: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The speakers of ``rows`` a reference can be drawn for (20+ clips), each with their rows."""
    part = df[rows]
    return [(spk, rows & (df["speaker"] == spk).to_numpy())
            for spk in sorted(part.loc[part[SETUP] == part["speaker"], "speaker"].unique())]


def labels_of(df: pd.DataFrame, rows: np.ndarray, labels: list[str]) -> np.ndarray:
    return np.array([labels.index(t) if t in labels else -1 for t in df.loc[rows, "emotion"]])


def inner_rows(x: np.ndarray, df: pd.DataFrame, rows: np.ndarray, c: float, aug: np.ndarray | None,
               what: str, single_c: float | None = None) -> list[tuple]:
    """Each corpus of ``rows`` left out in turn, the speaker probe trained on the others, each of its speakers
    with 20+ clips adapted from ``DRAWS`` references of 20 of their clips: (scores, label index, corpus). With
    ``single_c`` (WU2A-SPH) the probe is a hybrid with the single-clip probe of that C."""
    out = []
    for corpus in splits.corpora(df[rows]):
        held = rows & (df["corpus"] == corpus).to_numpy()
        spk = speakers(df, held)
        if not spk:
            continue
        probe, labels = ap.train(x, df, rows & ~held, c, aug, single_c=single_c, by=SETUP)
        for name, srows in spk:
            y = labels_of(df, srows, labels)
            for seed in range(ap.DRAWS):
                s = ap.scores(x, probe, srows, ap.draw(np.flatnonzero(srows), adapt.REFERENCE_CLIPS, seed, name))
                out.append((s[y >= 0], y[y >= 0], corpus))
        print(f"{what}, C={c:g}: {corpus} left out inside, {len(spk)} speakers", flush=True)
    return out


def fit_fold(x: np.ndarray, df: pd.DataFrame, train_rows: np.ndarray, aug: np.ndarray | None, what: str,
             recipe: str = "SP", fixed: dict | None = None):
    """A fold's probe and its record. WU2A-SP (``recipe`` "SP") and WU2A-SPH ("SPH": ``fixed`` gives the
    single-clip half's C): C chosen from :data:`GRID` inside ``train_rows``, the temperature on its inner rows.
    The shipped adapted mode ("H"): ``fixed`` is WU2A-H's record of the fold (C, single-clip C, temperature)."""
    if recipe == "H":
        probe, labels = ap.train(x, df, train_rows, fixed["C"], aug, single_c=fixed["single_clip_C"])
        return probe, labels, {k: fixed[k] for k in ("C", "single_clip_C", "temperature")}
    single_c = fixed["single_clip_C"] if recipe == "SPH" else None
    inner = {c: inner_rows(x, df, train_rows, c, aug, what, single_c) for c in GRID}
    accuracy = {c: ap.own_accuracy(r) for c, r in inner.items()}
    c = max(GRID, key=lambda k: (accuracy[k], -k))
    t = ap.fit_temperature(inner[c], "corpora")
    probe, labels = ap.train(x, df, train_rows, c, aug, single_c=single_c, by=SETUP)
    return probe, labels, {"C": c, "temperature": round(t, 4), **({"single_clip_C": single_c} if single_c else {}),
                           "inner_own_accuracy": {f"{k:g}": round(v, 4) for k, v in accuracy.items()}}


def fold_records(recipe: str, results: Path) -> dict[str, dict]:
    """What each fold of a recipe takes as given, by "loco:<corpus>" and "emobox6:<fold>": WU2A-H's recorded
    fold (H), WU2S's single-clip C (SPH), nothing (SP)."""
    if recipe == "H":
        h = json.loads((results / "adapted_WU2A-H.json").read_text())
        return {**{f"loco:{k}": v for k, v in h["loco"].items()},
                **{f"emobox6:{k}": v for k, v in h["emobox6"]["folds"].items()}}
    if recipe == "SPH":
        loco = json.loads((results / "loco_WU2S_predictions_choices.json").read_text())
        folds = json.loads((results / "emobox6_WU2S_probe_predictions_choices.json").read_text())
        return {**{f"loco:{k}": {"single_clip_C": float(v["C"])} for k, v in loco.items()},
                **{f"emobox6:{k}": {"single_clip_C": float(v["C"])} for k, v in folds.items()}}
    return {}


def answered(x: np.ndarray, df: pd.DataFrame, rows: np.ndarray, probe: dict, labels: list[str], t: float,
             fold: int, salt: str) -> dict[int, list[pd.DataFrame]]:
    """Every speaker of ``rows`` with 20+ clips answered adapted from 20 of their clips, per draw."""
    out: dict[int, list[pd.DataFrame]] = {}
    for name, srows in speakers(df, rows):
        for seed in range(ap.DRAWS):
            ref = ap.draw(np.flatnonzero(srows), adapt.REFERENCE_CLIPS, seed, f"{salt}{name}")
            out.setdefault(seed, []).append(ap.fold_table(df, srows, ap.scores(x, probe, srows, ref), labels, t,
                                                          fold, f"20 clips of the speaker, draw {seed}"))
    return out


def uar(t: pd.DataFrame) -> float:
    """Unweighted mean of the per-emotion recalls (``ser_core.evaluation.summary``'s, over the emotions held)."""
    return evaluation.summary(t["true"], t["pred"], sorted(set(t["true"]) | set(t["pred"])))["uar"]


def single_clip_figures(rows: pd.DataFrame, files: set) -> dict:
    """WU2S's single-clip figures on the same clips (``adapt_probe.figures``)."""
    part = rows[rows["file"].isin(files)]
    return {**ap.figures(part), "uar": round(uar(part), 4)}


def shifted_right(work: Path, df: pd.DataFrame, test: np.ndarray, fold: int, probe: dict,
                  labels: list[str]) -> dict[str, np.ndarray]:
    """Per condition, (draws x clips) right answers on the fold's RAVDESS test clips, each speaker's shifted
    clips adapted from 20 of them."""
    from ser_core import channel, robustness

    cache = work / f"shifted_ravdess_fold{fold}_seed0.npz"
    if not cache.exists():
        raise SystemExit(f"{cache} is missing: python training/whisper_probe.py shifts ... makes it")
    rows = df[test & (df["corpus"] == "ravdess").to_numpy()].reset_index(drop=True)
    conditions = [robustness.CLEAN, *channel.SHIFTS]
    vecs, truth = ep.load_shifted(cache, rows["path"].tolist(), conditions), rows["emotion"].to_numpy()
    out = {}
    for j, cond in enumerate(conditions):
        v = vecs[:, j].astype(np.float64)
        right = np.zeros((ap.DRAWS, len(v)), bool)
        for name in sorted(rows["speaker"].unique()):
            idx = np.flatnonzero(rows["speaker"].to_numpy() == name)
            for d in range(ap.DRAWS):
                ref = ap.draw(idx, adapt.REFERENCE_CLIPS, d, f"{fold}{cond}{name}")
                pred = np.asarray(labels)[ap.read(v[idx], adapt.reference_stats(v[ref]), probe).argmax(axis=1)]
                right[d, idx] = pred == truth[idx]
        out[cond] = right
    return out


def measure(work: Path, out: Path, results: Path = RESULTS,
            parts: tuple[str, ...] = ("loco", "emobox6", "shifts"), recipe: str = "SP") -> dict:
    """A recipe's registered figures with one speaker's references (module docstring, :data:`RECIPES`); writes
    ``out`` and its held-out rows beside it."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, not {recipe!r}")
    ap._SINGLE.clear()
    records = fold_records(recipe, results)
    df, x = ep.load_vectors(work)
    df = df.reset_index(drop=True)
    df[SETUP] = setups(df)
    df["file"] = df["path"].map(lambda v: Path(v).name)
    aug = ep.load_channel_vectors(work, df, COPIES)
    res: dict = {"made_by": f"python training/speaker_probe.py measure --work {work} --recipe {recipe} "
                            f"--parts {','.join(parts)} --out {out}", "recipe": recipe,
                 "reference_clips": adapt.REFERENCE_CLIPS, "draws": ap.DRAWS, "c_grid": GRID, "channel_copies": COPIES}
    kept = []
    if "loco" in parts:
        single = pd.read_csv(results / "loco_calibration_WU2S_predictions.csv.gz", dtype={"speaker": str})
        single = single[(single["calibration"] == "shipped") & (single["protocol"] == "loco")]
        res["loco"] = {}
        for fold, held in enumerate(splits.corpora(df), 1):
            train_rows = (df["corpus"] != held).to_numpy()
            probe, labels, info = fit_fold(x, df, train_rows, aug, f"{held} out", recipe,
                                           records.get(f"loco:{held}"))
            per_seed = answered(x, df, ~train_rows, probe, labels, info["temperature"], fold, held)
            tables = [pd.concat(v, ignore_index=True) for _, v in sorted(per_seed.items())]
            files = set(tables[0]["file"])
            res["loco"][held] = {**info, "speakers": len(speakers(df, ~train_rows)), "clips": len(files),
                                 "reference_20": ap.summary(tables),
                                 "single_clip_same_clips": single_clip_figures(single[single["corpus"] == held],
                                                                               files)}
            kept += [t.assign(protocol="loco") for t in tables]
            m = res["loco"][held]["reference_20"]["mean"]
            print(f"{held} out: {info}; own {m['own_accuracy']:.3f}, ECE {m['ece']:.3f} (single clip "
                  f"{res['loco'][held]['single_clip_same_clips']['own_accuracy']:.3f})", flush=True)
    if "emobox6" in parts:
        pooled: dict[int, list] = {}
        folds, shifted = {}, {}
        for fold, train_rows, test, _ in ep.emobox6_folds(df):
            probe, labels, info = fit_fold(x, df, train_rows, aug, f"emobox6 fold {fold}", recipe,
                                           records.get(f"emobox6:{fold}"))
            folds[str(fold)] = info
            for seed, v in answered(x, df, test, probe, labels, info["temperature"], fold, str(fold)).items():
                pooled.setdefault(seed, []).extend(v)
            if "shifts" in parts:
                for cond, right in shifted_right(work, df, test, fold, probe, labels).items():
                    shifted.setdefault(cond, []).append(right)
            print(f"emobox6 fold {fold}: {info}", flush=True)
        tables = [pd.concat(v, ignore_index=True) for _, v in sorted(pooled.items())]
        single = route_probe.branch_rows(results)["emobox6"]      # temperature cross-fitted by fold
        res["emobox6"] = {}
        for c in splits.corpora(df):
            mine = [t[t["corpus"] == c] for t in tables]
            res["emobox6"][c] = {**ap.summary(mine), "uar": round(float(np.mean([uar(t) for t in mine])), 4),
                                 "single_clip_same_clips": single_clip_figures(single[single["corpus"] == c],
                                                                               set(mine[0]["file"]))}
        res["emobox6"]["folds"] = folds
        gaps = [evaluation.gender_gap(t[t["corpus"] == "ravdess"]) for t in tables]
        res["emobox6"]["ravdess_gender_gap"] = round(float(np.mean([g["gap"] for g in gaps])), 4)
        res["emobox6"]["ravdess_gender_gap_ci95_draw0"] = gaps[0]["ci95"]
        kept += [t.assign(protocol="emobox6") for t in tables]
        if shifted:
            res["shifts"] = ap.shift_figures(shifted)
            print("shifts: " + ", ".join(f"{k} {v['drop']}" for k, v in res["shifts"].items() if k != "max_drop"),
                  flush=True)
    ap.save(out, res, kept)
    return res


def main(argv: list[str] | None = None) -> int:
    top, step = route_probe.parser(__doc__, "a recipe's registered figures with one speaker's references")
    step.add_argument("--recipe", choices=RECIPES, default="SP",
                      help="WU2A-SP, the shipped WU2A-H given one speaker's clips, or WU2A-SPH (addendum 3)")
    args = top.parse_args(argv)
    measure(args.work, args.out, parts=tuple(args.parts.split(",")), recipe=args.recipe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
