"""Training data: the manifest, the split's features, augmented copies, normalisation.

Features are extracted (cached, on all cores) here, before TensorFlow is imported.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import augment, audio, channel, datasets, features, splits
from .cache import corpus_features
from .config import FeatureConfig, ModelSpec
from .errors import ConfigError, DatasetError, SERError
from .runs import Logger
from .trainconfig import TrainConfig


@dataclass
class Prepared:
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    rows: dict[str, pd.DataFrame]
    labels: list[str]
    spec_norm: tuple[np.ndarray, np.ndarray]
    skipped: list[tuple[str, str]]
    groups: np.ndarray | None = None     # corpus of every training example (augmented copies included)
    source: np.ndarray | None = None     # row of rows["train"] every training example comes from
    soft: np.ndarray | None = None       # the teacher's probabilities of every rows["train"] clip (distillation)


def load_manifest(cfg: TrainConfig) -> pd.DataFrame:
    df = datasets.load_dataset(cfg.dataset)
    if cfg.speakers:
        wanted = set(cfg.speakers)
        df = df[df["speaker"].isin(wanted) | df.get("actor", pd.Series(dtype=int)).astype(str).str.zfill(2)
                .isin({s.zfill(2) for s in wanted})].reset_index(drop=True)
        if df.empty:
            raise DatasetError(f"none of the speakers {sorted(wanted)} are in the dataset")
    return df


def _augmented_copies(paths: list[str], picks: np.ndarray, fcfg: FeatureConfig,
                      transform, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Features of transformed copies of the picked training clips, and the index of the clip
    each copy came from (unreadable clips are passed over)."""
    xs, kept = [], []
    for i in picks:
        try:
            y = audio.load(paths[i], sr=fcfg.sample_rate)
        except SERError:
            continue
        xs.append(transform(y, rng))
        kept.append(int(i))
    shape = features.input_shape(fcfg)
    x = features.extract_batch(xs, fcfg) if xs else np.zeros((0, *shape), np.float32)
    return x, np.asarray(kept, dtype=np.int64)


def _targeted_copies(paths: list[str], labels: np.ndarray, fcfg: FeatureConfig, seed: int,
                     log: Logger) -> tuple[np.ndarray, np.ndarray]:
    """Seed 000's targeted augmentation: noisy, gain-shifted copies until classes balance
    (their time and frequency masks are applied after normalisation, in :func:`prepare`)."""
    rng = np.random.default_rng(seed)
    picks = augment.minority_plan(labels, rng)
    x, src = _augmented_copies(paths, picks, fcfg, lambda w, r: augment.random_gain(augment.add_noise(w, r), r), rng)
    if len(x):
        log(f"targeted augmentation: {len(x)} noisy/gain/masked copies of minority-class clips")
    return x, src


def _channel_copies(paths: list[str], fcfg: FeatureConfig, fraction: float, profile: str,
                    seed: int, log: Logger) -> tuple[np.ndarray, np.ndarray]:
    """Copies of a fraction of the training clips through a random recording chain
    (room, noise, microphone EQ, level, codec), so the model hears more than a studio.
    Babble talkers come from training clips only."""
    prof = channel.channel_profile(profile)
    rng = np.random.default_rng(seed + 7919)
    picks = rng.choice(len(paths), int(round(fraction * len(paths))), replace=fraction > 1)
    others: list[np.ndarray] = []
    for i in rng.choice(len(paths), min(prof.babble_pool, len(paths)), replace=False):
        try:
            others.append(audio.load(paths[i], sr=fcfg.sample_rate))
        except SERError:
            continue
    x, src = _augmented_copies(paths, picks, fcfg,
                               lambda w, r: channel.random_channel(w, fcfg.sample_rate, r, others, profile), rng)
    log(f"channel augmentation: {len(x)} copies through random rooms, noise ({profile} profile), "
        "microphones and codecs")
    return x, src


def prepare(cfg: TrainConfig, df: pd.DataFrame, split: splits.Split, log: Logger) -> Prepared:
    """Training and validation features (unreadable clips skipped), stats from training clips only.

    Test clips are not featurised here: they go through the Predictor's windowed path after training,
    exactly as ``ser predict`` would see them."""
    fcfg = cfg.feature_config()
    parts = {"train": split.train, "val": split.val}
    needed = np.concatenate(list(parts.values()))
    paths = df["path"].to_numpy()[needed].tolist()
    log(f"extracting {fcfg.kind} features of {len(paths)} clips (cached)")
    t0 = time.monotonic()
    fs = corpus_features(paths, fcfg, workers=cfg.workers, progress=False)
    log(f"features ready in {time.monotonic() - t0:.1f} s")
    if fs.errors:
        log(f"skipped {len(fs.errors)} unreadable file(s):")
        for _, msg in fs.errors:
            log(f"  - {msg}")
    pos = {int(row): j for j, row in enumerate(needed)}
    labels = sorted(df["emotion"].iloc[split.train].unique(), key=_label_order)
    x, y, rows = {}, {}, {}
    for name, idx in parts.items():
        keep = [i for i in idx if fs.ok[pos[int(i)]]]
        x[name] = fs.x[[pos[int(i)] for i in keep]] if keep else np.zeros((0, *fs.x.shape[1:]), np.float32)
        rows[name] = df.iloc[keep].reset_index(drop=True)
        y[name] = np.array([labels.index(e) if e in labels else -1 for e in rows[name]["emotion"]], dtype=np.int64)
    if len(x["train"]) == 0:
        raise DatasetError("no readable training clips")
    train_paths = rows["train"]["path"].tolist()
    groups = rows["train"]["corpus"].astype(str).to_numpy()
    extra = []
    masked = slice(0, 0)
    if cfg.targeted_aug:
        extra.append(_targeted_copies(train_paths, y["train"], fcfg, cfg.seed, log))
        masked = slice(len(x["train"]), len(x["train"]) + len(extra[0][0]))
    if cfg.channel_aug > 0:
        extra.append(_channel_copies(train_paths, fcfg, cfg.channel_aug, cfg.channel_profile, cfg.seed, log))
    y_orig, g_orig = y["train"], groups
    source = np.arange(len(y_orig))
    for xa, src in extra:
        x["train"] = np.concatenate([x["train"], xa])
        y["train"] = np.concatenate([y["train"], y_orig[src]])
        groups = np.concatenate([groups, g_orig[src]])
        source = np.concatenate([source, src])
    mean, std = features.norm_stats(x["train"])
    for name in x:
        x[name] = ((x[name] - mean) / std).astype(np.float32)
    if x["train"].ndim == 4:
        # masks set normalised values to 0, the training mean; raw zeros would be extreme outliers
        rng = np.random.default_rng(cfg.seed + 1)
        for i in range(masked.start, masked.stop):
            x["train"][i] = augment.freq_mask(augment.time_mask(x["train"][i], rng), rng)
    rows["test"] = df.iloc[split.test].reset_index(drop=True)
    unseen = ~rows["test"]["emotion"].isin(labels)
    if unseen.any():
        log(f"test: {int(unseen.sum())} clip(s) have emotions absent from training; they count as errors")
    held_out = set(df["speaker"].iloc[np.concatenate([split.test, split.val])].astype(str))
    soft = teacher_probabilities(cfg, split, rows["train"], labels, log, held_out)
    return Prepared(x, y, rows, labels, (mean, std), fs.errors, groups, source, soft)


def teacher_probabilities(cfg: TrainConfig, split, rows: pd.DataFrame, labels: list[str], log,
                          held_out: set[str]) -> np.ndarray | None:
    """The teacher's raw probabilities of every training clip (clean audio; an augmented copy gets its
    source clip's), in ``labels`` order; NaN rows where it has no answer. None without distillation.

    No speaker this run validates or tests on may have shaped the teacher: its spec lists the speakers
    it learnt from (models trained before that was recorded must at least be made for this split, by
    its protocol label)."""
    teacher = cfg.teacher_dir()
    if teacher is None:
        return None
    from .modeldir import SPEC, is_model_dir
    from .schema import TRAIN_SPEAKERS
    from .teacher import clip_keys, is_table_dir, model_probabilities, table_probabilities

    if is_table_dir(teacher):
        out, names = table_probabilities(teacher, clip_keys(rows), labels, held_out)
        _log_teacher(log, f"{teacher} ({len(names)} table(s))", out, rows, labels, cfg.distill, cfg.distill_temperature)
        return out
    if not is_model_dir(teacher):
        raise ConfigError(f"teacher not found: {teacher} is neither a model folder nor a folder of teacher tables")
    spec = ModelSpec.load(teacher / SPEC)
    seen = spec.extra.get(TRAIN_SPEAKERS)
    if seen is not None:
        if held_out & set(seen):
            raise ConfigError(f"teacher {teacher} learnt from speakers this run holds out: "
                              f"{', '.join(sorted(held_out & set(seen))[:6])}")
    elif spec.protocol != split.label:
        raise ConfigError(f"teacher {teacher} was made for '{spec.protocol}', this run is '{split.label}': its "
                          "probabilities could carry this run's test speakers")
    out, _ = model_probabilities(teacher, rows["path"].tolist(), labels)
    _log_teacher(log, str(teacher), out, rows, labels, cfg.distill, cfg.distill_temperature)
    return out


def _log_teacher(log, what: str, out: np.ndarray, rows: pd.DataFrame, labels: list[str], share: float,
                 temperature: float = 1.0) -> None:
    from .pipeline import training_targets

    known = ~np.isnan(out).any(axis=1)
    agree = float(np.mean(np.asarray(labels)[out[known].argmax(axis=1)] == rows["emotion"].to_numpy()[known])) \
        if known.any() else 0.0
    # how much of a target the teacher's top answer is, after the temperature (share 1: the teacher alone)
    top = float(training_targets(out[known].argmax(axis=1), len(labels), out[known], 1.0, temperature).max(axis=1)
                .mean()) if known.any() else 0.0
    log(f"teacher {what}: probabilities of {int(known.sum())} of {len(out)} training clips "
        f"(its answer is the clip's emotion for {agree:.1%}; its top probability {top:.2f} on average at "
        f"temperature {temperature:g}); share {share:g} of every target")


def _label_order(label: str) -> tuple[int, str]:
    from .config import EMOTIONS

    return (EMOTIONS.index(label), label) if label in EMOTIONS else (len(EMOTIONS), label)
