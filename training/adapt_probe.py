"""WU2A and its variants: the probe adapted to a recording setup from 20 of its unlabelled clips (session 38,
docs/preregistration-session38.md; the arithmetic is ``ser_core.adapt``'s).

    python training/adapt_probe.py measure --work runs/whisper-wu2s \
        --loco-choices training/results/candidates/loco_WU2S_predictions_choices.json \
        --emobox6-choices training/results/candidates/emobox6_WU2S_probe_predictions_choices.json \
        --out training/results/candidates/adapted_WU2A.json
    python training/adapt_probe.py ship --work runs/whisper-wu2s --model models/default \
        --figures training/results/candidates/adapted_<CANDIDATE>.json --candidate <CANDIDATE>

``measure`` leaves each corpus out: the probe learns from the other three, each standardised by its own clips,
with the C WU2S's nested folds chose without the held-out corpus; one temperature is fitted on the training
corpora only (each left out in turn, the probe on the other two, the left-out one standardised by references of
20 of its clips); the held-out corpus is then scored with references of 20 of its clips drawn at random (five
draws), of 50, of all of them, and of 20 clips of one emotion. ``--parts emobox6`` adds the speaker folds
(reported only): each fold's test clips of a corpus standardised by 20 of them; ``--parts shifts`` the fold's
RAVDESS test clips through every channel shift, each condition adapted from 20 of its clips. ``--weighting``,
``--channel-copies`` and ``--copy-weight`` make WU2A-E, WU2A-C and WU2A-W (addenda 1, 2 and 4). Session 39
(docs/preregistration-session39.md): ``--c-grid`` chooses C for the adapted probe inside each fold's training
corpora instead (WU2A-CN, WU2A-WN), and ``--hybrid`` multiplies in the answer of the single-clip probe of WU2S's
recipe, its C from the choices files (WU2A-H, the default's adapted mode).

``ship`` trains the adapted probe on every clip the model learnt from (C chosen as ``measure`` chose it, or the
model's own), calibrates it the same way over all its corpora, and stores it in the model folder
(``schema.ADAPTED_PROBE``, ``schema.ADAPTED``, ``schema.ADAPTED_TABLE``) with ``measure``'s figures and held-out
rows. A hybrid's single-clip half is then the model folder's own probe.
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

import encoder_probe as ep  # noqa: E402
from ser_core import adapt, calibration, evaluation, splits  # noqa: E402
from ser_core.config import EMOTIONS  # noqa: E402

DRAWS = 5                       # references drawn at random for each held-out corpus (seeds 0-4)
LARGER_REFERENCE = 50           # reported beside the registered 20


def train(x: np.ndarray, df: pd.DataFrame, rows: np.ndarray, c: float,
          aug: np.ndarray | None = None, copy_weight: float = 1.0,
          single_c: float | None = None, by: str = "corpus") -> tuple[dict, list[str]]:
    """The adapted probe on ``rows``: every corpus (or ``by`` group) standardised by its own rows, then by their
    pooled statistics, every (corpus, emotion) cell weighing the same. ``aug`` (rows x copies x values, WU2A-C):
    channel copies of every row, those of ``rows`` trained on too, each copy standardised by its own group (its
    corpus and its copy's number: a recording chain heard as a setup of its own) and weighing ``copy_weight`` of
    its clip (WU2A-W: 1/3). ``single_c`` (WU2A-H, session 39): the arrays also hold, under "single", the
    single-clip probe trained on the same rows (:func:`single_clip`), whose answer :func:`read` adds. ``by``: the
    column whose groups are standardised apart (session 40's WU2A-SP: ``speaker_probe.SETUP``, one speaker's
    clips). Returns its arrays (``ser_core.adapt.logits``' ``probe``) and labels."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    part = df[rows].reset_index(drop=True)
    group = part[by].to_numpy(str)
    z1 = ep.group_standardise(x[rows].astype(np.float64), group)      # in float64, as a reference is
    scale = np.ones(len(part))
    if aug is not None:
        z1 = np.concatenate([z1, *(ep.group_standardise(aug[rows][:, j].astype(np.float64), group)
                                   for j in range(aug.shape[1]))])
        part = pd.concat([part] * (1 + aug.shape[1]), ignore_index=True)
        scale = np.r_[scale, np.full(len(part) - len(scale), copy_weight)]
    mu, sd = z1.mean(axis=0), z1.std(axis=0) + adapt.SD_FLOOR
    clf = LogisticRegression(C=c, max_iter=2000)
    with threadpool_limits(1, user_api="blas"):     # as encoder_probe.probe: L-BFGS's small products
        clf.fit((z1 - mu) / sd, part["emotion"], sample_weight=ep.cell_weights(part) * scale)
    arrays = {"mean": mu, "std": sd, "coef": clf.coef_, "bias": clf.intercept_}
    if single_c is not None:
        arrays["single"] = single_clip(x, df, rows, single_c, aug)
        if arrays["single"]["labels"] != list(clf.classes_):
            raise ValueError(f"the two halves learnt {arrays['single']['labels']} and {list(clf.classes_)}")
    return arrays, list(clf.classes_)


#: The single-clip halves already trained in this run, by their rows and C (a grid's every C shares them); the
#: key does not name the vectors, so ``measure`` and ``ship`` empty it before they read theirs.
_SINGLE: dict = {}


def single_clip(x: np.ndarray, df: pd.DataFrame, rows: np.ndarray, c: float, aug: np.ndarray | None) -> dict:
    """WU2S's single-clip probe on ``rows`` (the hybrid's other half, WU2A-H): the vectors standardised by the
    rows' (and their copies') pooled statistics, every copy weighing as its clip (``encoder_probe.probe``), C
    given; its arrays and labels."""
    import hashlib

    key = (hashlib.sha1(np.packbits(rows).tobytes()).hexdigest(), c)
    if key not in _SINGLE:
        stats = ep.standardiser(x, rows, aug)
        clf, _ = ep.probe(x, df, rows, c, aug, 1.0, stats)
        _SINGLE[key] = {"mean": stats[0], "std": stats[1], "coef": clf.coef_, "bias": clf.intercept_,
                        "labels": list(clf.classes_)}
    return _SINGLE[key]


def read(v: np.ndarray, stats: tuple[np.ndarray, np.ndarray], probe: dict) -> np.ndarray:
    """The probe's scores of vectors ``v`` of a setup whose reference statistics are ``stats``; with a single-clip
    half (WU2A-H), the two halves' log-probabilities added (``ser_core.adapt.hybrid``)."""
    s = adapt.logits(v, stats, probe)
    if "single" not in probe:
        return s
    from ser_core.predict import probe_logits

    return adapt.hybrid(s, probe_logits(v, probe["single"]))


def draw(candidates: np.ndarray, k: int, seed: int, salt: str) -> np.ndarray:
    """``k`` of the row positions ``candidates`` (all of them if fewer), drawn with a seed of their own."""
    import zlib

    rng = np.random.default_rng([seed, zlib.crc32(salt.encode())])
    return np.sort(rng.choice(candidates, min(k, len(candidates)), replace=False))


def scores(x: np.ndarray, probe: dict, test: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The probe's scores of the ``test`` rows, standardised by the ``reference`` rows' statistics."""
    return read(x[test], adapt.reference_stats(x[reference], minimum=2), probe)


def inner_rows(x: np.ndarray, df: pd.DataFrame, rows: np.ndarray, c: float, what: str,
               aug: np.ndarray | None = None, copy_weight: float = 1.0, single_c: float | None = None) -> list[tuple]:
    """Each corpus of ``rows`` left out in turn, the probe trained on the others and the left-out one scored
    with ``DRAWS`` references of ``REFERENCE_CLIPS`` of its clips: (scores, true label index, corpus) of its
    clips whose label that probe knows."""
    out = []
    for corpus in splits.corpora(df[rows]):
        held = rows & (df["corpus"] == corpus).to_numpy()
        probe, labels = train(x, df, rows & ~held, c, aug, copy_weight, single_c)
        truth = df.loc[held, "emotion"].to_numpy()
        y = np.array([labels.index(t) if t in labels else -1 for t in truth])
        for seed in range(DRAWS):
            ref = draw(np.flatnonzero(held), adapt.REFERENCE_CLIPS, seed, corpus)
            s = scores(x, probe, held, ref)
            out.append((s[y >= 0], y[y >= 0], corpus))
        print(f"{what}: {corpus} left out inside, {held.sum()} clips", flush=True)
    return out


#: How the temperature's likelihood weighs the corpora left out inside: "clips" (WU2A: every clip the same) or
#: "corpora" (WU2A-E, addendum 1: every corpus the same, whatever its size).
WEIGHTINGS = ("clips", "corpora")


def own_accuracy(rows: list[tuple]) -> float:
    """Accuracy on each inner corpus's own emotions (the labels it holds that the probe knows: its rows' true
    labels), each draw's (``encoder_probe.own_accuracy``, the labels being the score columns' indices), averaged
    per corpus, then over the corpora (each weighing the same)."""
    per_corpus: dict[str, list[float]] = {}
    for s, y, corpus in rows:
        per_corpus.setdefault(corpus, []).append(ep.own_accuracy(s, list(range(s.shape[1])), y))
    return float(np.mean([np.mean(v) for v in per_corpus.values()]))


def choose_c(x: np.ndarray, df: pd.DataFrame, rows: np.ndarray, grid: tuple[float, ...], what: str,
             aug: np.ndarray | None = None, copy_weight: float = 1.0,
             single_c: float | None = None) -> tuple[float, dict, list[tuple]]:
    """C for the adapted probe from the ``rows`` alone (session 39's WU2A-CN, WU2A-WN): each of its corpora left
    out in turn and adapted from 20-clip references (:func:`inner_rows`), the ``grid``'s C with the highest
    :func:`own_accuracy`, the smaller on a tie. Returns it, every C's inner accuracy, and its inner rows (which the
    temperature is fitted on). With ``single_c`` (WU2A-H) the hybrid's answers are what is scored."""
    inner = {c: inner_rows(x, df, rows, c, f"{what}, C={c:g}", aug, copy_weight, single_c) for c in sorted(grid)}
    accuracy = {c: own_accuracy(r) for c, r in inner.items()}
    best = max(sorted(grid), key=lambda c: (accuracy[c], -c))
    return best, {f"{c:g}": round(a, 4) for c, a in accuracy.items()}, inner[best]


def c_grid(spec: str) -> tuple[float, ...]:
    """``--c-grid``'s values: positive numbers, comma-separated."""
    try:
        grid = tuple(float(v) for v in spec.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--c-grid takes numbers separated by commas, not {spec!r}") from None
    if not grid or min(grid) <= 0:
        raise argparse.ArgumentTypeError(f"every C of --c-grid must be above 0, not {spec!r}")
    return grid


def fit_temperature(rows: list[tuple], weighting: str = "clips") -> float:
    """One temperature by maximum likelihood over the inner rows (each part's probe knows its own labels),
    every clip weighing the same or every corpus left out (``weighting``, :data:`WEIGHTINGS`)."""
    from scipy.optimize import minimize_scalar

    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, not {weighting!r}")
    n = sum(len(y) for _, y, _ in rows)
    per_corpus = {corpus: sum(len(y) for _, y, c in rows if c == corpus) for _, _, corpus in rows}

    def nll(log_t: float) -> float:
        total = 0.0
        for s, y, corpus in rows:
            part = -np.log(np.clip(adapt.softmax(s, np.exp(log_t))[np.arange(len(y)), y], 1e-300, None)).sum()
            total += part / n if weighting == "clips" else part / per_corpus[corpus] / len(per_corpus)
        return total

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def figures(t: pd.DataFrame, threshold: float = calibration.DEFAULT_THRESHOLD) -> dict:
    """Accuracy on the corpus's own emotions, the registered ECE (its probabilities over the labels the probe
    knows), the two commonest answers' share and "not sure"."""
    probs, y, _ = calibration.table_arrays(t, [lab for lab in EMOTIONS if f"p_{lab}" in t])
    own = sorted(set(t["true"]))
    masked = np.nan_to_num(t[[f"p_{lab}" for lab in EMOTIONS]].to_numpy(float)) * np.isin(EMOTIONS, own)
    answers = np.asarray(EMOTIONS)[masked.argmax(axis=1)]
    shares = pd.Series(answers).value_counts(normalize=True)
    return {"n": int(len(t)), "own_accuracy": round(float((answers == t["true"].to_numpy()).mean()), 4),
            "ece": round(calibration.ece(probs, y), 4),
            "mean_confidence": round(float(probs.max(axis=1).mean()), 4),
            "two_commonest": round(float(shares.iloc[:2].sum()), 4),
            **{k: round(v, 4) if isinstance(v, float) else v
               for k, v in calibration.not_sure_rate(probs, y, threshold).items()}}


def fold_table(df: pd.DataFrame, test: np.ndarray, s: np.ndarray, labels: list[str], temperature: float,
               fold: int, reference: str) -> pd.DataFrame:
    return ep.fold_table(df, test, adapt.softmax(s, temperature), labels, fold).assign(reference=reference)


def summary(tables: list[pd.DataFrame]) -> dict:
    """Each draw's figures, their mean, and the worst draw (by accuracy on the corpus's own emotions)."""
    each = [figures(t) for t in tables]
    mean = {k: round(float(np.mean([e[k] for e in each if e[k] is not None])), 4)
            for k in each[0] if k != "n" and any(e[k] is not None for e in each)}
    return {"mean": mean, "worst_own_accuracy": min(e["own_accuracy"] for e in each),
            "worst_ece": max(e["ece"] for e in each), "draws": each}


def measure(work: Path, loco_choices: Path | None, out: Path, emobox6_choices: Path | None = None,
            parts: tuple[str, ...] = ("loco",), weighting: str = "clips", copies: str | None = None,
            copy_weight: float = 1.0, grid: tuple[float, ...] | None = None, hybrid: bool = False) -> dict:
    """The figures of ``docs/preregistration-session38.md``: ``parts`` of loco (each corpus left out), emobox6
    (the speaker folds, each fold's test clips of a corpus adapted from 20 of them) and shifts (with emobox6: the
    fold's RAVDESS test clips through every channel shift, each condition adapted from 20 of its clips). C is
    WU2S's choice (``loco_choices``, ``emobox6_choices``) or, given a ``grid``, chosen for the adapted probe from
    each fold's training corpora (:func:`choose_c`, session 39). ``hybrid`` (WU2A-H): a grid chooses the adapted
    half's C, the choices files give the single-clip half's (WU2S's), and the answer adds the two halves'."""
    if hybrid and not grid:
        raise ValueError("the hybrid chooses its adapted half's C from a grid")
    _SINGLE.clear()
    df, x = ep.load_vectors(work)
    df = df.reset_index(drop=True)
    aug = ep.load_channel_vectors(work, df, copies) if copies else None
    results: dict = {"made_by": command(work, loco_choices, emobox6_choices, out, parts, weighting, copies,
                                        copy_weight, grid, hybrid),
                     "reference_clips": adapt.REFERENCE_CLIPS, "draws": DRAWS, "weighting": weighting,
                     "channel_copies": copies, "copy_weight": copy_weight, "c_grid": grid, "hybrid": hybrid}

    def c_and_temperature(train_rows: np.ndarray, c: float | None, what: str) -> tuple[float, float, dict]:
        """The fold's C (given, or chosen from ``grid``), the temperature fitted on its inner rows, and every
        grid C's inner accuracy ({} when C is given). For the hybrid, ``c`` is its single-clip half's."""
        if grid is None:
            return c, fit_temperature(inner_rows(x, df, train_rows, c, what, aug, copy_weight), weighting), {}
        single_c = c if hybrid else None
        c, inner, rows = choose_c(x, df, train_rows, grid, what, aug, copy_weight, single_c)
        return c, fit_temperature(rows, weighting), {"inner_own_accuracy": inner,
                                                     **({"single_clip_C": single_c} if hybrid else {})}

    kept = []
    if "loco" in parts:
        chosen = json.loads(Path(loco_choices).read_text()) if grid is None or hybrid else {}
        results["loco"] = {}
        for fold, held in enumerate(splits.corpora(df), 1):
            train_rows = (df["corpus"] != held).to_numpy()
            c, t, inner = c_and_temperature(train_rows, float(chosen[held]["C"]) if chosen else None,
                                            f"{held} out")
            probe, labels = train(x, df, train_rows, c, aug, copy_weight, inner.get("single_clip_C"))
            test = ~train_rows
            pool = np.flatnonzero(test)
            tables = {}
            for seed in range(DRAWS):
                ref = draw(pool, adapt.REFERENCE_CLIPS, seed, held)
                tables.setdefault("20", []).append(
                    fold_table(df, test, scores(x, probe, test, ref), labels, t, fold, f"20 clips, draw {seed}"))
                ref = draw(pool, LARGER_REFERENCE, seed, held)
                tables.setdefault(str(LARGER_REFERENCE), []).append(
                    fold_table(df, test, scores(x, probe, test, ref), labels, t, fold, f"{LARGER_REFERENCE} clips, "
                                                                                         f"draw {seed}"))
            tables["all"] = [fold_table(df, test, scores(x, probe, test, pool), labels, t, fold, "all clips")]
            one = {}
            for emo in sorted(set(df.loc[test, "emotion"])):
                ref = draw(np.flatnonzero(test & (df["emotion"] == emo).to_numpy()), adapt.REFERENCE_CLIPS, 0,
                           held + emo)
                one[emo] = figures(fold_table(df, test, scores(x, probe, test, ref), labels, t, fold,
                                              f"20 clips of {emo}"))["own_accuracy"]
            results["loco"][held] = {"C": c, **inner, "temperature": round(t, 4),
                                     **{f"reference_{k}": summary(v) for k, v in tables.items()},
                                     "one_emotion_reference_own_accuracy": one}
            kept += [v.assign(protocol="loco") for v in tables["20"]]
            r = results["loco"][held]["reference_20"]["mean"]
            print(f"{held} out: C={c}, T={t:.2f}: own {r['own_accuracy']:.3f}, ECE {r['ece']:.3f}, "
                  f"two commonest {r['two_commonest']:.2f}; all clips "
                  f"{results['loco'][held]['reference_all']['mean']['own_accuracy']:.3f}; one emotion {one}",
                  flush=True)
    if "emobox6" in parts:
        chosen = json.loads(Path(emobox6_choices).read_text()) if grid is None or hybrid else None
        folds, shifted, fold_c = {}, {}, {}
        for fold, train_rows, test, c in ep.emobox6_folds(df, chosen):
            c, t, inner = c_and_temperature(train_rows, c, f"emobox6 fold {fold}")
            fold_c[str(fold)] = {"C": c, **inner, "temperature": round(t, 4)}
            probe, labels = train(x, df, train_rows, c, aug, copy_weight, inner.get("single_clip_C"))
            if "shifts" in parts:
                for cond, right in shifted_right(work, df, test, fold, probe, labels).items():
                    shifted.setdefault(cond, []).append(right)
            for corpus in splits.corpora(df[test]):
                rows = test & (df["corpus"] == corpus).to_numpy()
                for seed in range(DRAWS):
                    ref = draw(np.flatnonzero(rows), adapt.REFERENCE_CLIPS, seed, f"{fold}{corpus}")
                    folds.setdefault(seed, []).append(fold_table(df, rows, scores(x, probe, rows, ref), labels, t,
                                                                 fold, f"20 clips, draw {seed}"))
            print(f"emobox6 fold {fold}: C={c}, T={t:.2f}", flush=True)
        pooled = {seed: pd.concat(v, ignore_index=True) for seed, v in folds.items()}
        results["emobox6"] = {corpus: summary([p[p["corpus"] == corpus] for p in pooled.values()])
                              for corpus in splits.corpora(df)}
        results["emobox6"]["folds"] = fold_c
        results["emobox6"]["ravdess_gender_gap"] = round(float(np.mean(      # each draw's, as WU2S's is read
            [evaluation.gender_gap(p[p["corpus"] == "ravdess"])["gap"] for p in pooled.values()])), 4)
        kept += [p.assign(protocol="emobox6") for p in pooled.values()]
        if shifted:
            results["shifts"] = shift_figures(shifted)
            print("shifts: " + ", ".join(f"{k} {v['drop']}" for k, v in results["shifts"].items()
                                         if k != "max_drop"), flush=True)
    save(out, results, kept)
    return results


#: The columns of the kept held-out rows (ten draws of every clip: each value once, probabilities to 4 places).
KEPT = ["protocol", "reference", "fold", "file", "corpus", "speaker", "gender", "true", "pred", "confidence"]


def compact(rows: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """The held-out rows as kept: :data:`KEPT`, the probabilities, rounded, and the ``extra`` columns."""
    rows = rows.drop(columns="path", errors="ignore") if "file" in rows else rows.rename(columns={"path": "file"})
    probs = [f"p_{lab}" for lab in EMOTIONS]
    return rows[[c for c in KEPT if c in rows] + probs + list(extra)].round({c: 4 for c in ["confidence", *probs]})


def save(out: Path, results: dict, kept: list[pd.DataFrame], extra: tuple[str, ...] = ()) -> None:
    """A measurement's figures (``out``) and, when there are any, its held-out rows beside them
    (:func:`predictions_path`, :func:`compact` with the ``extra`` columns)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    if kept:
        compact(pd.concat(kept, ignore_index=True), extra).to_csv(predictions_path(out), index=False)


def shifted_right(work: Path, df: pd.DataFrame, test: np.ndarray, fold: int, probe: dict,
                  labels: list[str], corpus: str = "ravdess", seed: int = 0) -> dict[str, np.ndarray]:
    """Per condition (clean and every shift), a (draws x clips) array of right answers on the fold's ``corpus``
    test clips, each condition's clips adapted from ``REFERENCE_CLIPS`` of them (the shifted vectors session
    36's check kept: ``encoder_probe.channel_shifts``)."""
    from ser_core import channel, robustness

    cache = work / f"shifted_{corpus}_fold{fold}_seed{seed}.npz"
    if not cache.exists():
        raise SystemExit(f"{cache} is missing: python training/whisper_probe.py shifts ... makes it")
    rows = df[test & (df["corpus"] == corpus).to_numpy()]
    conditions = [robustness.CLEAN, *channel.SHIFTS]
    vecs, truth = ep.load_shifted(cache, rows["path"].tolist(), conditions), rows["emotion"].to_numpy()
    out = {}
    for j, cond in enumerate(conditions):
        v = vecs[:, j].astype(np.float64)
        out[cond] = np.stack([np.asarray(labels)[read(v, adapt.reference_stats(
            v[draw(np.arange(len(v)), adapt.REFERENCE_CLIPS, d, f"{fold}{cond}")]), probe).argmax(axis=1)] == truth
            for d in range(DRAWS)])
    return out


def shift_figures(shifted: dict[str, list[np.ndarray]]) -> dict:
    """Accuracy per condition over the folds (mean of the draws) and each shift's drop from clean, in points."""
    acc = {cond: float(np.concatenate(v, axis=1).mean()) for cond, v in shifted.items()}
    out = {cond: {"accuracy": round(a, 4), "drop": round(100 * (acc["clean"] - a), 2)} for cond, a in acc.items()}
    worst = max((k for k in out if k != "clean"), key=lambda k: out[k]["drop"])
    out["max_drop"] = {"shift": worst, "points": out[worst]["drop"]}
    return out


#: What the model folder's record keeps of ``measure``'s figures for each corpus left out (20-clip references).
CARD_KEYS = ("own_accuracy", "ece", "mean_confidence", "two_commonest", "not_sure", "not_sure_when_wrong",
             "not_sure_when_right")


def card_figures(figures: dict) -> dict:
    """The figures a model folder keeps of ``measure``'s (its card and the Evaluate page read them)."""
    out: dict = {"command": figures["made_by"], "reference_clips": figures["reference_clips"],
                 "draws": figures["draws"], "loco": {}}
    for corpus, v in figures.get("loco", {}).items():
        out["loco"][corpus] = {**{k: v["reference_20"]["mean"][k] for k in CARD_KEYS},
                               "worst_own_accuracy": v["reference_20"]["worst_own_accuracy"],
                               "worst_ece": v["reference_20"]["worst_ece"],
                               "all_clips_own_accuracy": v["reference_all"]["mean"]["own_accuracy"],
                               "one_emotion_reference_own_accuracy": v["one_emotion_reference_own_accuracy"]}
    if "emobox6" in figures:
        out["emobox6"] = {c: {k: v["mean"][k] for k in ("own_accuracy", "ece")}
                          for c, v in figures["emobox6"].items() if isinstance(v, dict) and "mean" in v}
        out["emobox6_ravdess_gender_gap"] = figures["emobox6"].get("ravdess_gender_gap")
    if "shifts" in figures:
        out["shifts"] = {k: v for k, v in figures["shifts"].items()}
    return out


def ship(work: Path, model_dir: Path, figures_path: Path, candidate: str) -> Path:
    """The adapted probe into a probe folder made from ``work``'s vectors (``whisper_probe.ship``): trained on
    every clip with ``figures_path``'s settings (weighting, copies; C chosen by :func:`choose_c` over every corpus
    when ``measure`` had a ``--c-grid``, else the folder's own C), its temperature
    fitted by leaving each of its corpora out in turn, 20-clip references (as ``measure`` did one level down),
    stored with ``measure``'s figures (``schema.ADAPTED_PROBE``, ``schema.ADAPTED``)."""
    from whisper_probe import read_setup

    from ser_core.calibration import DEFAULT_THRESHOLD, SPEC_KEY, Calibration
    from ser_core.config import ModelSpec
    from ser_core.predict import write_adapted
    from ser_core.schema import ENCODER_SETUP, SPEC

    spec = ModelSpec.load(Path(model_dir) / SPEC)
    if read_setup(work).to_dict() != spec.extra.get(ENCODER_SETUP):
        raise SystemExit(f"{work}'s vectors were made another way than {model_dir}'s encoder hears")
    figures = json.loads(Path(figures_path).read_text())
    weighting, copies = figures.get("weighting", "clips"), figures.get("channel_copies")
    copy_weight = float(figures.get("copy_weight", 1.0))
    _SINGLE.clear()
    df, x = ep.load_vectors(work)
    df = df.reset_index(drop=True)
    aug = ep.load_channel_vectors(work, df, copies) if copies else None
    rows = np.ones(len(df), bool)
    grid = figures.get("c_grid")
    # WU2A-H: the other half is the folder's own probe, whose recipe (C included) the inner halves follow
    single_c = float(spec.extra["C"]) if figures.get("hybrid") else None
    if grid:            # C chosen for the adapted probe as measure chose it one level down (session 39)
        c, inner_accuracy, inner = choose_c(x, df, rows, tuple(grid), "every corpus", aug, copy_weight, single_c)
    else:
        c, inner_accuracy = float(spec.extra["C"]), {}
        inner = inner_rows(x, df, rows, c, "every corpus", aug, copy_weight, single_c)
    t = fit_temperature(inner, weighting)
    arrays, classes = train(x, df, rows, c, aug, copy_weight)
    labels = list(spec.labels)
    if sorted(classes) != sorted(labels):
        raise SystemExit(f"the adapted probe learnt {classes}, not the model's {labels}")
    order = [classes.index(lab) for lab in labels]
    arrays = {**arrays, "coef": arrays["coef"][order], "bias": arrays["bias"][order]}
    corpora = splits.corpora(df)
    calib = Calibration(temperature=round(t, 4), threshold=DEFAULT_THRESHOLD, n=int(sum(len(y) for _, y, _ in inner)),
                        fitted_on=f"each of its {len(corpora)} corpora left out in turn, the probe trained on the "
                                  f"others and the left-out one adapted from {adapt.REFERENCE_CLIPS} of its clips "
                                  f"({DRAWS} draws; every {'corpus' if weighting == 'corpora' else 'clip'} weighing "
                                  f"the same)")
    record = {SPEC_KEY: calib.to_dict(), "candidate": candidate, "reference_clips": adapt.REFERENCE_CLIPS, "C": c,
              **({"c_grid": list(grid), "inner_own_accuracy": inner_accuracy} if grid else {}),
              **({"hybrid": True, "single_clip_C": single_c} if single_c is not None else {}),
              "weighting": weighting, "channel_copies": copies, "copy_weight": copy_weight,
              "trained_on": f"{len(df)} clips of {'+'.join(corpora)}"
                            + (f" and their channel copies ({copies})" if copies else "")
                            + ", every corpus standardised by its own clips",
              "command": f"python training/adapt_probe.py ship --work {work} --model {model_dir} "
                         f"--figures {figures_path} --candidate {candidate}",
              "figures": card_figures(figures)}
    rows = predictions_path(figures_path)
    if rows.exists():       # each corpus left out, every clip once per reference draw: the Evaluate page's view
        from ser_core.schema import ADAPTED_TABLE

        loco = pd.read_csv(rows)
        loco = loco[loco["protocol"] == "loco"].drop(columns="protocol")
        tmp = Path(model_dir) / f".{ADAPTED_TABLE}"
        loco.to_csv(tmp, index=False, compression="gzip")
        tmp.replace(Path(model_dir) / ADAPTED_TABLE)
        record["table"] = ADAPTED_TABLE
    write_adapted(model_dir, arrays, record)
    print(f"adapted probe stored in {model_dir}: C={c}, temperature {t:.3f}", flush=True)
    return Path(model_dir)


def predictions_path(out: Path) -> Path:
    """Where :func:`measure` writes the held-out rows of its 20-clip references."""
    return out.with_name(out.stem + "_predictions.csv.gz")


def command(work: Path, loco_choices: Path | None, emobox6_choices: Path | None, out: Path,
            parts: tuple[str, ...], weighting: str = "clips", copies: str | None = None, copy_weight: float = 1.0,
            grid: tuple[float, ...] | None = None, hybrid: bool = False) -> str:
    extra = f" --loco-choices {loco_choices}" if loco_choices else ""
    extra += f" --emobox6-choices {emobox6_choices}" if emobox6_choices else ""
    extra += f" --c-grid {','.join(f'{c:g}' for c in grid)}" if grid else ""
    extra += " --hybrid" if hybrid else ""
    extra += f" --channel-copies {copies}" if copies else ""
    extra += f" --copy-weight {copy_weight:g}" if copy_weight != 1 else ""
    extra += f" --weighting {weighting}" if weighting != "clips" else ""
    return (f"python training/adapt_probe.py measure --work {work}{extra} --parts {','.join(parts)} --out {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("measure", help="leave each corpus out (and the speaker folds), adapted from 20 clips")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--loco-choices", type=Path, help="WU2S's C for each corpus left out (or give --c-grid)")
    p.add_argument("--emobox6-choices", type=Path, help="WU2S's C for each speaker fold (or give --c-grid)")
    p.add_argument("--c-grid", type=c_grid, metavar="C,C,...",
                   help="choose C for the adapted probe itself from each fold's training corpora (WU2A-CN)")
    p.add_argument("--parts", default="loco", help="comma-separated: loco, emobox6, shifts (with emobox6)")
    p.add_argument("--weighting", choices=WEIGHTINGS, default="clips",
                   help="the temperature's likelihood: every clip the same (WU2A), or every corpus left out (WU2A-E)")
    p.add_argument("--channel-copies", metavar="KINDS", type=ep.copy_spec,
                   help="the probe also trains on these channel copies (WU2A-C: babble:1+loudbabble:2)")
    ep.add_copy_weight(p)
    p.add_argument("--hybrid", action="store_true",
                   help="WU2A-H: add the single-clip probe's answer (its C from the choices files, the adapted "
                        "half's from --c-grid)")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("ship", help="train the adapted probe on every clip into a probe folder made from --work")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True, help="the probe's model folder (e.g. models/default)")
    p.add_argument("--figures", type=Path, required=True, help="measure's figures (its settings are used)")
    p.add_argument("--candidate", required=True, help="its name in the pre-registration (e.g. WU2A-E)")
    a = ap.parse_args(argv)
    if a.step == "ship":
        ship(a.work, a.model, a.figures, a.candidate)
        return 0
    parts = tuple(a.parts.split(","))
    unknown = set(parts) - {"loco", "emobox6", "shifts"}
    if unknown:
        ap.error(f"unknown parts: {', '.join(sorted(unknown))} (loco, emobox6, shifts)")
    if a.hybrid and not a.c_grid:
        ap.error("--hybrid chooses its adapted half's C: give --c-grid")
    if a.c_grid and not a.hybrid and (a.loco_choices or a.emobox6_choices):
        ap.error("--c-grid chooses C itself: give it without --loco-choices and --emobox6-choices")
    if a.hybrid and (("loco" in parts and not a.loco_choices)
                     or ({"emobox6", "shifts"} & set(parts) and not a.emobox6_choices)):
        ap.error("--hybrid takes its single-clip half's C from --loco-choices and --emobox6-choices")
    if "loco" in parts and not (a.loco_choices or a.c_grid):
        ap.error("--parts loco needs --loco-choices or --c-grid")
    if ("emobox6" in parts or "shifts" in parts) and not (a.emobox6_choices or a.c_grid):
        ap.error("--parts emobox6 and shifts need --emobox6-choices or --c-grid")
    if "shifts" in parts and "emobox6" not in parts:
        ap.error("--parts shifts goes with emobox6 (the same folds' probes)")
    if a.copy_weight != 1 and not a.channel_copies:
        ap.error("--copy-weight weighs channel copies: give --channel-copies")
    measure(a.work, a.loco_choices, a.out, a.emobox6_choices, parts, a.weighting, a.channel_copies, a.copy_weight,
            a.c_grid, a.hybrid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
