"""Metrics from predictions: overall, per class, per gender, per speaker, per intensity.

Everything works on a predictions table (one row per clip with ``true``,
``pred`` and, where known, ``speaker``, ``gender``, ``intensity``, ``fold``),
so a run, a cross-validation and the app's dashboards share one code path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import SERError


def _safe_div(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def confusion(true: np.ndarray, pred: np.ndarray, labels: list[str]) -> np.ndarray:
    """Counts, rows = true label, columns = predicted label, in ``labels`` order."""
    index = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(true, pred):
        if t in index and p in index:
            m[index[t], index[p]] += 1
    return m


def per_class(cm: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for i, lab in enumerate(labels):
        tp = cm[i, i]
        precision = _safe_div(tp, cm[:, i].sum())
        recall = _safe_div(tp, cm[i].sum())
        f1 = _safe_div(2 * precision * recall, precision + recall)
        out[lab] = {"precision": precision, "recall": recall, "f1": f1, "support": int(cm[i].sum())}
    return out


def summary(true, pred, labels: list[str]) -> dict:
    """Accuracy, UAR (mean recall over classes present), macro and weighted F1."""
    true, pred = np.asarray(true), np.asarray(pred)
    cm = confusion(true, pred, labels)
    pc = per_class(cm, labels)
    present = [lab for lab in labels if pc[lab]["support"] > 0]
    support = np.array([pc[lab]["support"] for lab in present], dtype=float)
    f1s = np.array([pc[lab]["f1"] for lab in present])
    return {
        "n": int(len(true)),
        "accuracy": _safe_div((true == pred).sum(), len(true)),
        "uar": float(np.mean([pc[lab]["recall"] for lab in present])) if present else 0.0,
        "macro_f1": float(f1s.mean()) if present else 0.0,
        "weighted_f1": float((f1s * support).sum() / support.sum()) if present else 0.0,
    }


def _group_metrics(df: pd.DataFrame, column: str, labels: list[str]) -> dict[str, dict]:
    if column not in df:
        return {}
    out = {}
    for key, g in df.groupby(column, sort=True):
        s = summary(g["true"].to_numpy(), g["pred"].to_numpy(), labels)
        s["recall"] = {lab: v["recall"] for lab, v in
                       per_class(confusion(g["true"].to_numpy(), g["pred"].to_numpy(), labels), labels).items()}
        out[str(key)] = s
    return out


def evaluate(df: pd.DataFrame, labels: list[str], *, protocol: str = "", speaker_independent: bool = True) -> dict:
    """Full metrics dictionary of a predictions table."""
    if df.empty:
        raise SERError("no predictions to evaluate")
    true, pred = df["true"].to_numpy(), df["pred"].to_numpy()
    cm = confusion(true, pred, labels)
    metrics = {
        "protocol": protocol,
        "speaker_independent": bool(speaker_independent),
        "labels": list(labels),
        **summary(true, pred, labels),
        "per_class": per_class(cm, labels),
        "confusion": cm.tolist(),
        "per_gender": _group_metrics(df, "gender", labels),
        "per_speaker": {k: v["accuracy"] for k, v in _group_metrics(df, "speaker", labels).items()},
        "per_intensity": _group_metrics(df, "intensity", labels),
    }
    if "corpus" in df and df["corpus"].nunique() > 1:
        metrics["per_corpus"] = per_corpus(df, labels)
    if "fold" in df and df["fold"].nunique() > 1:
        metrics["per_fold"] = {str(k): summary(g["true"].to_numpy(), g["pred"].to_numpy(), labels)
                               for k, g in df.groupby("fold", sort=True)}
        for k, g in df.groupby("fold", sort=True):
            gen = _group_metrics(g, "gender", labels)
            metrics["per_fold"][str(k)].update({f"{gname}_accuracy": gm["accuracy"] for gname, gm in gen.items()})
    return metrics


def own_emotions(df: pd.DataFrame, labels: list[str]) -> list[str]:
    """The model labels a corpus's clips are labelled with (its own emotion set), in model order."""
    present = set(df["true"])
    return [lab for lab in labels if lab in present]


def restricted_pred(df: pd.DataFrame, allowed: list[str]) -> np.ndarray:
    """Each clip's most probable emotion among ``allowed`` (needs the ``p_<label>`` columns)."""
    cols = [f"p_{lab}" for lab in allowed]
    if not allowed or any(c not in df for c in cols):
        return df["pred"].to_numpy()
    # empty cells (a leave-one-corpus-out fold's model lacks that label) are probability 0, not NaN:
    # argmax would pick a NaN
    return np.asarray(allowed)[np.nan_to_num(df[cols].to_numpy(dtype=float), nan=0.0).argmax(axis=1)]


def per_corpus(df: pd.DataFrame, labels: list[str]) -> dict[str, dict]:
    """Per corpus: metrics over all model labels, the same with answers restricted to the corpus's own
    emotions (``own``: chance is 1 / its number of emotions), per-gender accuracy and the confusion matrix."""
    out = {}
    for name, g in df.groupby("corpus", sort=True):
        own = own_emotions(g, labels)
        true = g["true"].to_numpy()
        entry = summary(true, g["pred"].to_numpy(), labels)
        entry["own_emotions"] = own
        entry["own"] = summary(true, restricted_pred(g, own), own)
        entry["per_gender"] = {str(k): summary(sub["true"].to_numpy(), sub["pred"].to_numpy(), labels)["accuracy"]
                               for k, sub in g.groupby("gender", sort=True)} if "gender" in g else {}
        entry["confusion"] = confusion(true, g["pred"].to_numpy(), labels).tolist()
        entry["speakers"] = int(g["speaker"].nunique()) if "speaker" in g else None
        out[str(name)] = entry
    return out


MIN_SPEAKERS_FOR_GAP = 3


def gender_gap(df: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, a: str = "female", b: str = "male") -> dict:
    """Accuracy gap (a - b) with a 95 % speaker-cluster bootstrap interval.

    Speakers, not clips, are resampled: clips of one speaker are not independent,
    so a clip bootstrap would give intervals that are too narrow.
    """
    sub = df[df["gender"].isin([a, b])]
    if sub.empty or sub["gender"].nunique() < 2:
        raise SERError(f"need clips of both {a} and {b} speakers for a gender gap")
    correct = (sub["true"] == sub["pred"]).astype(float)
    per_spk = sub.assign(c=correct).groupby(["gender", "speaker"])["c"].agg(["sum", "count"])
    groups = {g: per_spk.loc[g].to_numpy() for g in (a, b)}
    rng = np.random.default_rng(seed)

    def acc(arr: np.ndarray) -> float:
        return arr[:, 0].sum() / arr[:, 1].sum()

    gap = acc(groups[a]) - acc(groups[b])
    boots = np.empty(n_boot)
    for i in range(n_boot):
        ra = groups[a][rng.integers(0, len(groups[a]), len(groups[a]))]
        rb = groups[b][rng.integers(0, len(groups[b]), len(groups[b]))]
        boots[i] = acc(ra) - acc(rb)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    within = bool(lo <= 0 <= hi)
    few = min(len(groups[a]), len(groups[b]))
    if few < MIN_SPEAKERS_FOR_GAP:
        verdict = (f"Too few speakers to judge a gender gap ({len(groups[a])} {a}, {len(groups[b])} {b}; "
                   f"at least {MIN_SPEAKERS_FOR_GAP} of each are needed for a meaningful interval).")
    elif within:
        verdict = f"The {abs(gap) * 100:.1f}-point gap is within noise (the 95 % interval includes zero)."
    else:
        verdict = (f"{a.capitalize() if gap > 0 else b.capitalize()} speakers are recognised better: the "
                   f"{abs(gap) * 100:.1f}-point gap is larger than chance would explain.")
    return {"accuracy": {a: acc(groups[a]), b: acc(groups[b])}, "gap": float(gap), "ci95": [float(lo), float(hi)],
            "within_noise": within, "enough_speakers": few >= MIN_SPEAKERS_FOR_GAP, "verdict": verdict,
            "speakers": {a: len(groups[a]), b: len(groups[b])}}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test of two classifiers on the same clips.

    Parameters
    ----------
    correct_a, correct_b : array of bool
        Whether each model is right, clip by clip (same clips, same order).

    Returns
    -------
    dict
        ``a_only`` (clips only A gets right), ``b_only`` and the two-sided exact ``p`` of
        a binomial test of ``a_only`` among the discordant clips (1.0 when there are none).
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise SERError(f"McNemar needs the same clips: {a.size} against {b.size}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    from scipy.stats import binomtest

    p = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "p": float(p)}


def clip_keys(df: pd.DataFrame) -> pd.Series:
    """Which clip each row is: corpus and file name when known (file names may repeat across corpora)."""
    if "file" not in df:
        raise SERError("the predictions have no file column, so their clips cannot be matched")
    files = df["file"].astype(str).map(lambda f: Path(f).name)
    return (df["corpus"].astype(str) + "/" + files) if "corpus" in df else files


def common_clips(df_a: pd.DataFrame, df_b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables restricted to the clips they share, in one order."""
    ka, kb = clip_keys(df_a), clip_keys(df_b)
    shared = sorted(set(ka) & set(kb))
    a = df_a.assign(_key=ka.to_numpy()).drop_duplicates("_key").set_index("_key").loc[shared]
    b = df_b.assign(_key=kb.to_numpy()).drop_duplicates("_key").set_index("_key").loc[shared]
    return a.reset_index(drop=True), b.reset_index(drop=True)


def paired_difference(df_a: pd.DataFrame, df_b: pd.DataFrame) -> dict | None:
    """Whether two evaluations' accuracies differ by more than chance on the clips both were tested on.

    Returns
    -------
    dict or None
        :func:`mcnemar`'s figures on the shared clips (A's and B's answers), ``n`` of them, and ``text``: the
        finding in one sentence; None when the tables share no clip or cannot be matched.
    """
    try:
        a, b = common_clips(df_a, df_b)
    except SERError:
        return None
    if a.empty:
        return None
    right_a, right_b = (a["true"] == a["pred"]).to_numpy(), (b["true"] == b["pred"]).to_numpy()
    test = mcnemar(right_a, right_b)
    verdict = "unlikely to be chance" if test["p"] < 0.05 else "a difference this size could be chance"
    text = (f"Is the difference real? On the {len(a)} clips both were tested on (A {100 * right_a.mean():.1f} %, "
            f"B {100 * right_b.mean():.1f} %), A is right where B is wrong on {test['a_only']} clips and B right "
            f"where A is wrong on {test['b_only']}: McNemar's exact test p = {test['p']:.2g}, {verdict}.")
    return {"n": int(len(a)), "accuracy_a": float(right_a.mean()), "accuracy_b": float(right_b.mean()), **test,
            "text": text}


def classification_report(metrics: dict) -> str:
    """A plain-text report like scikit-learn's, from a metrics dictionary."""
    lines = [f"{'':>12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for lab, v in metrics["per_class"].items():
        lines.append(f"{lab:>12} {v['precision']:9.3f} {v['recall']:9.3f} {v['f1']:9.3f} {v['support']:8d}")
    lines.append("")
    lines.append(f"{'accuracy':>12} {metrics['accuracy']:29.3f} {metrics['n']:8d}")
    lines.append(f"{'UAR':>12} {metrics['uar']:29.3f}")
    lines.append(f"{'macro F1':>12} {metrics['macro_f1']:29.3f}")
    lines.append(f"{'weighted F1':>12} {metrics['weighted_f1']:29.3f}")
    for g, v in metrics.get("per_gender", {}).items():
        lines.append(f"{g + ' acc':>12} {v['accuracy']:29.3f} {v['n']:8d}")
    return "\n".join(lines)


def load_predictions(path: Path | str) -> pd.DataFrame:
    """Read a predictions CSV, checking the columns evaluation needs."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise SERError(f"no predictions file at {path}") from None
    except OSError as exc:             # a folder where a file was expected, a file inside a file, no permission
        raise SERError(f"cannot read predictions at {path} ({exc.strerror or exc})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SERError(f"{path.name} is not a readable predictions CSV ({exc})") from exc
    missing = {"true", "pred"} - set(df.columns)
    if missing:
        raise SERError(f"{path.name} lacks column(s) {', '.join(sorted(missing))}")
    return df


def probability_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("p_")]
