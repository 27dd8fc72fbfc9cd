"""WU2A-R: the adapted mode routed by how new the setup is (session 40, docs/preregistration-session40.md).

    python training/route_probe.py measure --work runs/whisper-wu2s \
        --out training/results/candidates/adapted_WU2A-R.json

A folder of 20 clips says what one clip cannot: whether its setup is one the model has heard. Its **novelty**
(:func:`novelty`: how far the reference's mean vector is from the nearest training corpus's) at most
a threshold chosen inside the training data (:func:`choose_threshold` over :func:`inner_novelties`) sends every
clip to the single-clip probe, as the single-clip default answers it; above it, to WU2A-CN's adapted probe
(session 39). The outer references are the draws sessions 38-39 measured, so each answer is the committed one of
its branch: WU2A-CN's held-out rows for a new reference; WU2S's single-clip rows for a familiar one (leaving a
corpus out, calibrated as shipped; under the speaker folds, the temperature cross-fitted by fold, as the
default's ECE is read). The channel shifts route each condition of each fold's RAVDESS test clips from 20 of
them: WU2S's single-clip answers when familiar, WU2A-CN's fold probe (its recorded C) adapted from that
reference when new.
"""
from __future__ import annotations

import argparse
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
from ser_core import adapt, calibration, evaluation, splits  # noqa: E402
from ser_core.config import EMOTIONS  # noqa: E402

RESULTS = HERE / "results" / "candidates"
GROUPS = 5                  # speaker groups of each training corpus for the familiar examples
#: WU2S's channel copies, which WU2A-CN's probes learnt with (its recipe's)
COPIES = json.loads((HERE / "recipes" / "whisper_wu2s.json").read_text())["probe"]["channel_copies"]
SCALES = ("clips", "speakers")     # WU2A-R, WU2A-RS (addendum 1)
COLUMNS = ["fold", "file", "corpus", "speaker", "gender", "true", "pred", "confidence",
           *(f"p_{lab}" for lab in EMOTIONS)]


def setup_profile(vectors: np.ndarray, corpus: np.ndarray,
                  speaker: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What :func:`novelty` measures a reference against: each training corpus's mean vector and a spread around
    it: of the training clips (session 40's WU2A-R) or, given ``speaker``, of the training speakers' mean vectors
    (WU2A-RS: what a new speaker of a known corpus moves the mean by).

    Parameters
    ----------
    vectors : np.ndarray, shape (n, values)
        The training clips' encoder vectors (no channel copies).
    corpus : np.ndarray, shape (n,)
        Each clip's corpus.
    speaker : np.ndarray, shape (n,), optional
        Each clip's speaker (names unique across corpora).

    Returns
    -------
    dict
        ``corpora`` (names, sorted), ``means`` (corpora x values) and ``scale`` (values;
        ``ser_core.adapt.SD_FLOOR`` added).
    """
    v = np.asarray(vectors, dtype=np.float64)
    corpus = np.asarray(corpus).astype(str)
    names = np.array(sorted(set(corpus)))
    means = np.stack([v[corpus == c].mean(axis=0) for c in names])
    within = v - means[np.searchsorted(names, corpus)]
    if speaker is not None:
        speaker = np.asarray(speaker).astype(str)
        within = np.stack([within[speaker == s].mean(axis=0) for s in np.unique(speaker)])
    return {"corpora": names, "means": means, "scale": within.std(axis=0) + adapt.SD_FLOOR}


def novelty(reference: np.ndarray, profile: dict[str, np.ndarray]) -> float:
    """How far a reference's setup is from the nearest training corpus: the mean over values of the squared
    difference between the reference's mean vector and that corpus's, in units of :func:`setup_profile`'s
    ``scale``. A reference of a corpus the model learnt from (other speakers) is near; a new setup is far.

    Parameters
    ----------
    reference : np.ndarray, shape (n, values)
        The reference's vectors (the clips of one setup).
    profile : dict
        :func:`setup_profile` of the training clips.

    Returns
    -------
    float
    """
    m = np.asarray(reference, dtype=np.float64).mean(axis=0)
    return float((((m - profile["means"]) / profile["scale"]) ** 2).mean(axis=1).min())


def profile_of(x: np.ndarray, df: pd.DataFrame, rows: np.ndarray, scale: str) -> dict:
    """:func:`setup_profile` of the ``rows``, its spread of clips (WU2A-R) or of speakers (WU2A-RS)."""
    return setup_profile(x[rows], df.loc[rows, "corpus"].to_numpy(str),
                         df.loc[rows, "speaker"].to_numpy(str) if scale == "speakers" else None)


def inner_novelties(x: np.ndarray, df: pd.DataFrame, rows: np.ndarray,
                    scale: str = "clips") -> tuple[np.ndarray, np.ndarray]:
    """Novelty values of references made inside the ``rows`` alone: familiar ones (20 clips of one of
    :data:`GROUPS` speaker groups of a corpus, measured against the rows without that group) and new ones (20
    clips of a corpus, measured against the other corpora), five draws each."""
    corpus = df["corpus"].to_numpy(str)
    groups = splits.speaker_groups(df[rows], GROUPS)
    familiar, new = [], []
    for c in splits.corpora(df[rows]):
        in_c = rows & (corpus == c)
        others = rows & ~in_c
        profile = profile_of(x, df, others, scale)
        new += [novelty(x[ap.draw(np.flatnonzero(in_c), adapt.REFERENCE_CLIPS, s, f"new {c}")], profile)
                for s in range(ap.DRAWS)]
        for g, speakers in enumerate(groups):
            held = in_c & df["speaker"].isin(speakers).to_numpy()
            if held.sum() < adapt.REFERENCE_CLIPS:
                continue
            profile = profile_of(x, df, rows & ~held, scale)
            familiar += [novelty(x[ap.draw(np.flatnonzero(held), adapt.REFERENCE_CLIPS, s,
                                                 f"familiar {c}{g}")], profile) for s in range(ap.DRAWS)]
    return np.array(familiar), np.array(new)


def choose_threshold(familiar: np.ndarray, new: np.ndarray) -> float:
    """The registered threshold: the geometric mean of the largest familiar and the smallest new value when they
    are apart; otherwise the geometric midpoint of the span whose thresholds give the best mean of the two hit
    rates (familiar at most the threshold, new above it)."""
    familiar, new = np.asarray(familiar, float), np.asarray(new, float)
    if familiar.max() < new.min():
        return float(np.sqrt(familiar.max() * new.min()))
    values = np.unique(np.r_[familiar, new])
    cuts = np.sqrt(values[:-1] * values[1:])
    score = np.array([((familiar <= t).mean() + (new > t).mean()) / 2 for t in cuts])
    best = np.flatnonzero(score == score.max())
    return float(np.sqrt(values[best[0]] * values[best[-1] + 1]))


def route(x: np.ndarray, df: pd.DataFrame, train_rows: np.ndarray, scale: str) -> tuple[dict, float, dict]:
    """A fold's profile of its training clips, its threshold and the inner values it came from."""
    familiar, new = inner_novelties(x, df, train_rows, scale)
    tau = choose_threshold(familiar, new)
    inner = {"familiar_max": round(float(familiar.max()), 4), "new_min": round(float(new.min()), 4),
             "familiar_n": int(len(familiar)), "new_n": int(len(new)),
             "inner_hits": round(float(((familiar <= tau).mean() + (new > tau).mean()) / 2), 4)}
    return profile_of(x, df, train_rows, scale), tau, inner


def branch_rows(results: Path) -> dict[str, pd.DataFrame]:
    """The committed rows each branch answers with: WU2A-CN's held-out rows, WU2S's leaving a corpus out
    (calibrated as shipped) and WU2S's speaker folds (temperature cross-fitted by fold)."""
    cn = pd.read_csv(results / "adapted_WU2A-CN_predictions.csv.gz", dtype={"speaker": str})
    loco = pd.read_csv(results / "loco_calibration_WU2S_predictions.csv.gz", dtype={"speaker": str})
    loco = loco[(loco["calibration"] == "shipped") & (loco["protocol"] == "loco")]
    folds = pd.read_csv(results / "emobox6_WU2S_probe_predictions.csv.gz", dtype={"speaker": str})
    probs = calibration.cross_fitted(folds)
    folds = folds[folds["true"].isin([c[2:] for c in folds.columns if c.startswith("p_")])].copy()
    folds[[c for c in folds.columns if c.startswith("p_")]] = probs
    folds["confidence"] = probs.max(axis=1)
    return {"cn": cn, "loco": loco, "emobox6": folds}


def pick(rows: pd.DataFrame, **where) -> pd.DataFrame:
    mask = np.ones(len(rows), bool)
    for k, v in where.items():
        mask &= (rows[k] == v).to_numpy()
    out = rows[mask]
    return out[[c for c in COLUMNS if c in out]].reset_index(drop=True)


def shifted_right(work: Path, df: pd.DataFrame, test: np.ndarray, fold: int, profile: dict, tau: float,
                  probe: dict, labels: list[str], single: pd.DataFrame) -> tuple[dict, dict, list[dict]]:
    """Per condition, (draws x clips) right answers of the routed mode and of WU2A-CN alone on the fold's RAVDESS
    test clips (the draws of ``adapt_probe.shifted_right``), and how each condition's references were routed."""
    from ser_core import channel, robustness

    cache = work / f"shifted_ravdess_fold{fold}_seed0.npz"
    if not cache.exists():
        raise SystemExit(f"{cache} is missing: python training/whisper_probe.py shifts ... makes it")
    rows = df[test & (df["corpus"] == "ravdess").to_numpy()]
    conditions = [robustness.CLEAN, *channel.SHIFTS]
    vecs, truth = ep.load_shifted(cache, rows["path"].tolist(), conditions), rows["emotion"].to_numpy()
    files = rows["path"].map(lambda p: Path(p).name).to_numpy()
    routed, alone, how = {}, {}, []
    for j, cond in enumerate(conditions):
        v = vecs[:, j].astype(np.float64)
        pred = single[(single["fold"] == fold) & (single["shift"] == cond)].set_index("file")["pred_probe"]
        pred = pred.reindex(files)
        if pred.isna().any():
            raise SystemExit(f"fold {fold}, {cond}: WU2S's shift rows do not cover the fold's clips")
        single_right = pred.to_numpy() == truth
        r_routed, r_alone = [], []
        for d in range(ap.DRAWS):
            ref = ap.draw(np.arange(len(v)), adapt.REFERENCE_CLIPS, d, f"{fold}{cond}")
            nu = novelty(v[ref], profile)
            cn_right = np.asarray(labels)[ap.read(v, adapt.reference_stats(v[ref]), probe).argmax(axis=1)] == truth
            r_alone.append(cn_right)
            r_routed.append(cn_right if nu > tau else single_right)
            how.append({"fold": fold, "condition": cond, "draw": d, "novelty": round(nu, 4),
                        "route": "new" if nu > tau else "familiar"})
        routed[cond], alone[cond] = np.stack(r_routed), np.stack(r_alone)
    return routed, alone, how


def measure(work: Path, out: Path, results: Path = RESULTS, parts: tuple[str, ...] = ("loco", "emobox6", "shifts"),
            scale: str = "clips") -> dict:
    """The registered figures of WU2A-R (module docstring); writes ``out`` and its held-out rows beside it."""
    df, x = ep.load_vectors(work)
    df = df.reset_index(drop=True)
    df["file"] = df["path"].map(lambda p: Path(p).name)
    corpus = df["corpus"].to_numpy(str)
    branches = branch_rows(results)
    cn_record = json.loads((results / "adapted_WU2A-CN.json").read_text())
    res: dict = {"made_by": f"python training/route_probe.py measure --work {work} --scale {scale} --out {out}",
                 "scale": scale,
                 "reference_clips": adapt.REFERENCE_CLIPS, "draws": ap.DRAWS, "groups": GROUPS, "routes": []}
    kept = []
    if "loco" in parts:
        res["loco"] = {}
        for fold, held in enumerate(splits.corpora(df), 1):
            train_rows = corpus != held
            profile, tau, inner = route(x, df, train_rows, scale)
            pool = np.flatnonzero(~train_rows)
            tables = []
            for seed in range(ap.DRAWS):
                nu = novelty(x[ap.draw(pool, adapt.REFERENCE_CLIPS, seed, held)], profile)
                new = nu > tau
                t = (pick(branches["cn"], protocol="loco", reference=f"20 clips, draw {seed}", corpus=held) if new
                     else pick(branches["loco"], corpus=held))
                tables.append(t.assign(reference=f"20 clips, draw {seed}", route="new" if new else "familiar"))
                res["routes"].append({"protocol": "loco", "corpus": held, "draw": seed, "novelty": round(nu, 4),
                                      "threshold": round(tau, 4), "route": "new" if new else "familiar"})
            res["loco"][held] = {"threshold": round(tau, 4), **inner, "reference_20": ap.summary(tables)}
            kept += [t.assign(protocol="loco") for t in tables]
            m = res["loco"][held]["reference_20"]["mean"]
            print(f"{held} out: tau {tau:.3f} (inner familiar <= {inner['familiar_max']}, new >= "
                  f"{inner['new_min']}); routes {[r['route'] for r in res['routes'] if r['corpus'] == held]}; "
                  f"own {m['own_accuracy']:.3f}, ECE {m['ece']:.3f}", flush=True)
    if "emobox6" in parts:
        pooled: dict[int, list] = {}
        fold_info, shifted, shifted_cn, aug = {}, {}, {}, None
        for fold, train_rows, test, _ in ep.emobox6_folds(df):
            profile, tau, inner = route(x, df, train_rows, scale)
            fold_info[str(fold)] = {"threshold": round(tau, 4), **inner}
            for c in splits.corpora(df[test]):
                rows = test & (corpus == c)
                for seed in range(ap.DRAWS):
                    nu = novelty(x[ap.draw(np.flatnonzero(rows), adapt.REFERENCE_CLIPS, seed, f"{fold}{c}")],
                                       profile)
                    new = nu > tau
                    t = (pick(branches["cn"], protocol="emobox6", reference=f"20 clips, draw {seed}", fold=fold,
                              corpus=c) if new else pick(branches["emobox6"], fold=fold, corpus=c))
                    if len(t) != rows.sum():
                        raise SystemExit(f"fold {fold}, {c}: {len(t)} committed rows for {rows.sum()} clips")
                    pooled.setdefault(seed, []).append(t.assign(reference=f"20 clips, draw {seed}",
                                                                route="new" if new else "familiar"))
                    res["routes"].append({"protocol": "emobox6", "fold": fold, "corpus": c, "draw": seed,
                                          "novelty": round(nu, 4), "threshold": round(tau, 4),
                                          "route": "new" if new else "familiar"})
            if "shifts" in parts:
                if aug is None:
                    aug = ep.load_channel_vectors(work, df, COPIES)
                    single = pd.read_csv(results / "emobox6_WU2S_shifts.csv.gz")
                c_fold = float(cn_record["emobox6"]["folds"][str(fold)]["C"])
                probe, labels = ap.train(x, df, train_rows, c_fold, aug)
                r, a, how = shifted_right(work, df, test, fold, profile, tau, probe, labels, single)
                for cond in r:
                    shifted.setdefault(cond, []).append(r[cond])
                    shifted_cn.setdefault(cond, []).append(a[cond])
                res["routes"] += [{"protocol": "shifts", **h, "threshold": round(tau, 4)} for h in how]
            print(f"emobox6 fold {fold}: tau {tau:.3f} ({inner})", flush=True)
        tables = {seed: pd.concat(v, ignore_index=True) for seed, v in pooled.items()}
        res["emobox6"] = {c: ap.summary([t[t["corpus"] == c] for t in tables.values()]) for c in splits.corpora(df)}
        res["emobox6"]["folds"] = fold_info
        res["emobox6"]["ravdess_gender_gap"] = round(float(np.mean(
            [evaluation.gender_gap(t[t["corpus"] == "ravdess"])["gap"] for t in tables.values()])), 4)
        kept += [t.assign(protocol="emobox6") for t in tables.values()]
        if shifted:
            res["shifts"] = ap.shift_figures(shifted)
            res["shifts_cn_alone"] = ap.shift_figures(shifted_cn)
    r = pd.DataFrame(res["routes"])
    res["routed_new"] = {k: f"{int((g['route'] == 'new').sum())} of {len(g)}" for k, g in r.groupby("protocol")}
    ap.save(out, res, kept, extra=("route",))
    return res


def parser(doc: str, what: str) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """A session-40 script's command line: its ``measure`` step (``what``) with ``--work``, ``--out`` and
    ``--parts``; returns the parser and the step's, for more options."""
    top = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    step = top.add_subparsers(dest="cmd", required=True).add_parser("measure", help=what)
    step.add_argument("--work", type=Path, required=True)
    step.add_argument("--out", type=Path, required=True)
    step.add_argument("--parts", default="loco,emobox6,shifts", help="comma-separated: loco, emobox6, shifts")
    return top, step


def main(argv: list[str] | None = None) -> int:
    top, step = parser(__doc__, "WU2A-R's registered figures")
    step.add_argument("--scale", choices=SCALES, default="clips",
                      help="novelty in units of the clips' spread (WU2A-R) or the speakers' (WU2A-RS, addendum 1)")
    args = top.parse_args(argv)
    res = measure(args.work, args.out, parts=tuple(args.parts.split(",")), scale=args.scale)
    print(json.dumps({k: res[k] for k in ("routed_new",)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
