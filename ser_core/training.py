"""Training: one run end to end, and k-fold cross-validation.

``python -m ser_core.training RUN_DIR`` trains the run whose ``config.json``
is in RUN_DIR (this is how the app and ``ser train --background`` start it).
Features are extracted (cached, on all cores) before TensorFlow is imported.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import augment, audio, channel, datasets, features, models, runs, splits
from .cache import corpus_features
from .config import FeatureConfig, ModelSpec, atomic_write_text, reject_unknown
from .errors import ConfigError, DatasetError, SERError
from .evaluation import evaluate

ONLINE_AUGS = ("time_mask", "freq_mask", "brightness_contrast", "freq_shift", "time_stretch")
PRECISIONS = ("auto", "float32", "bfloat16")
SCHEDULES = ("plateau", "cosine")


@functools.lru_cache(maxsize=1)
def bf16_supported() -> bool:
    """True when the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), where mixed precision pays."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _same_kind(value: Any, default: Any) -> bool:
    """Whether an override fits a setting: bool for bool, str for str, int for int, a number (or None) for floats."""
    if isinstance(default, (bool, str)):
        return type(value) is type(default)
    if isinstance(value, bool):
        return False
    if isinstance(default, int):
        return isinstance(value, int)
    return value is None or isinstance(value, (int, float))


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``None`` fields take the architecture's default."""

    dataset: str = "ravdess"
    arch: str = "seed000_cnn"
    protocol: str = "emobox6"
    fold: int = 1
    k: int = 5
    speakers: tuple[str, ...] = ()
    test_speakers: tuple[str, ...] = ()
    n_val_speakers: int = 2
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 1e-3
    label_smoothing: float | None = None
    class_weights: bool = True
    corpus_balance: bool = True
    targeted_aug: bool | None = None
    online_aug: tuple[str, ...] | None = None
    mixup: float | None = None
    channel_aug: float | None = None
    channel_profile: str = "v1"
    patience: int = 15
    schedule: str = "plateau"
    precision: str = "auto"
    seed: int = 0
    split_seed: int | None = None
    ensemble: int = 1
    features: dict = field(default_factory=dict)
    arch_params: dict = field(default_factory=dict)
    workers: int | None = None

    def resolved(self) -> "TrainConfig":
        """Fill ``None`` fields from the architecture's defaults and validate."""
        arch = models.get(self.arch)
        d = arch.train_defaults
        cfg = dataclasses.replace(
            self,
            label_smoothing=self.label_smoothing if self.label_smoothing is not None else d.get("label_smoothing", 0.0),
            targeted_aug=self.targeted_aug if self.targeted_aug is not None else d.get("targeted_aug", False),
            online_aug=tuple(self.online_aug if self.online_aug is not None else d.get("online_aug", ())),
            mixup=self.mixup if self.mixup is not None else d.get("mixup", 0.0),
            channel_aug=self.channel_aug if self.channel_aug is not None else d.get("channel_aug", 0.0),
            precision=("bfloat16" if bf16_supported() else "float32") if self.precision == "auto" else self.precision,
        )
        models.check_params(cfg.arch, cfg.arch_params)
        cfg.feature_config()
        if cfg.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {cfg.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if cfg.channel_aug > 0:
            channel.channel_profile(cfg.channel_profile)
        if cfg.schedule not in SCHEDULES:
            raise ConfigError(f"unknown learning-rate schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        bad = set(cfg.online_aug) - set(ONLINE_AUGS)
        if bad:
            raise ConfigError(f"unknown augmentation(s): {', '.join(sorted(bad))}; known: {', '.join(ONLINE_AUGS)}")
        if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.learning_rate <= 0 or cfg.ensemble < 1:
            raise ConfigError("epochs, batch size, learning rate and ensemble size must be positive")
        if not 0 <= cfg.label_smoothing < 1:
            raise ConfigError("label smoothing must be in [0, 1)")
        return cfg

    @property
    def data_seed(self) -> int:
        """Seed of the split's random draws (random 80/20 split, validation actors).

        ``split_seed`` lets models with different seeds share one split, so they can be
        compared and ensembled on the same test clips; unset, the model seed draws it.
        """
        return self.seed if self.split_seed is None else self.split_seed

    def feature_config(self) -> FeatureConfig:
        """The architecture's feature settings with this run's overrides (``features``) applied."""
        base = models.get(self.arch).features
        if not self.features:
            return base
        reject_unknown(FeatureConfig, self.features, "feature setting")
        for key, value in self.features.items():
            default = getattr(base, key)
            if not _same_kind(value, default):
                raise ConfigError(f"feature setting {key} must be like its default {default!r}, not {value!r}")
        return dataclasses.replace(base, **self.features)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        reject_unknown(cls, d, "training setting")
        d = dict(d)
        for key in ("speakers", "test_speakers", "online_aug"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


class Logger:
    """Timestamped lines to the run's log (and the terminal)."""

    def __init__(self, run_dir: Path | None, *, to_file: bool, echo: bool = True):
        self.path = Path(run_dir) / "log.txt" if (run_dir and to_file) else None
        self.echo = echo

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        if self.echo:
            print(line, file=sys.stdout, flush=True)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")


# ----------------------------------------------------------------------------- data
@dataclass
class Prepared:
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    rows: dict[str, pd.DataFrame]
    labels: list[str]
    spec_norm: tuple[np.ndarray, np.ndarray]
    skipped: list[tuple[str, str]]
    groups: np.ndarray | None = None     # corpus of every training example (augmented copies included)


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
    for xa, src in extra:
        x["train"] = np.concatenate([x["train"], xa])
        y["train"] = np.concatenate([y["train"], y_orig[src]])
        groups = np.concatenate([groups, g_orig[src]])
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
    return Prepared(x, y, rows, labels, (mean, std), fs.errors, groups)


def _label_order(label: str) -> tuple[int, str]:
    from .config import EMOTIONS

    return (EMOTIONS.index(label), label) if label in EMOTIONS else (len(EMOTIONS), label)


# ----------------------------------------------------------------------------- TensorFlow side
def _class_weights(y: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(y, minlength=n).astype(float)
    w = np.where(counts > 0, len(y) / (n * np.maximum(counts, 1)), 0.0)
    return w.astype(np.float32)


def example_weights(y: np.ndarray, groups: np.ndarray | None, n: int) -> np.ndarray:
    """Per-example loss weights: every emotion weighs the same, and within an emotion every
    corpus that has it weighs the same (mean weight 1).

    Without the second rule the largest corpus would set what each emotion sounds like
    (ASED has six times URDU's clips); with it, 80 URDU talk-show clips of "sad" count as
    much as 400 acted Amharic ones. Emotions only some corpora have (calm: RAVDESS alone)
    get their whole weight from those corpora. With one corpus this is plain class weighting.
    """
    if groups is None or len(set(groups)) < 2:
        return _class_weights(y, n)[y]
    frame = pd.DataFrame({"y": y, "g": groups})
    per_cell = frame.groupby(["y", "g"])["y"].transform("size").to_numpy(float)
    corpora_per_class = frame.groupby("y")["g"].transform("nunique").to_numpy(float)
    w = 1.0 / (frame["y"].nunique() * corpora_per_class * per_cell)
    return (w * len(y)).astype(np.float32)


def make_dataset(x: np.ndarray, y: np.ndarray, n_classes: int, *, batch_size: int, weights: np.ndarray | None,
                 training: bool, online_aug: tuple[str, ...] = (), mixup: float = 0.0, seed: int = 0,
                 sample_weight: np.ndarray | None = None):
    """A prefetched tf.data pipeline over arrays held once in memory: the shuffle permutes
    indices and each batch is one gather (no per-clip copies through a shuffle buffer);
    augmentation runs vectorised per batch.

    tf.data's autotuner is off and the parallelism fixed instead: Keras makes a new iterator
    every epoch, and destroying one waited for the autotuner's sleeping thread, padding an
    epoch by up to ~1.3 s of idle wall time (half of a ser_crnn epoch) on this machine.
    """
    import tensorflow as tf

    parallel = min(2, os.cpu_count() or 1)

    onehot = np.eye(n_classes, dtype=np.float32)[y]
    if sample_weight is not None:
        w = np.asarray(sample_weight, np.float32)
    else:
        w = weights[y] if weights is not None else np.ones(len(y), np.float32)
    arrays = tuple(tf.constant(a) for a in (x, onehot, w))
    ds = tf.data.Dataset.range(len(x))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda i: tuple(tf.gather(a, i) for a in arrays))
    if training and (online_aug or mixup) and x.ndim == 4:
        gen = tf.random.Generator.from_seed(seed)
        ds = ds.map(lambda a, b, c: _augment_batch(a, b, c, online_aug, mixup, gen),
                    num_parallel_calls=parallel)
    elif training and mixup:
        gen = tf.random.Generator.from_seed(seed)
        ds = ds.map(lambda a, b, c: _augment_batch(a, b, c, (), mixup, gen), num_parallel_calls=parallel)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)


def _band_mask(gen, batch, length: int, max_frac: float):
    import tensorflow as tf

    width = tf.cast(tf.floor(gen.uniform([batch, 1]) * (max_frac * length + 1)), tf.int32)
    start = tf.cast(tf.floor(gen.uniform([batch, 1]) * tf.cast(length - width + 1, tf.float32)), tf.int32)
    pos = tf.range(length)[None, :]
    return tf.cast(~((pos >= start) & (pos < start + width)), tf.float32)


def _shift_rows(gen, x, max_shift: int):
    """Move each example's spectrum up or down a few mel bands (a cheap vocal-tract-length perturbation)."""
    import tensorflow as tf

    b, f = tf.shape(x)[0], x.shape[1]
    shift = tf.cast(tf.round(gen.uniform([b, 1], -max_shift - 0.49, max_shift + 0.49)), tf.int32)
    idx = tf.clip_by_value(tf.range(f)[None, :] - shift, 0, f - 1)
    return tf.gather(x, idx, axis=1, batch_dims=1)


def _stretch_time(gen, x, low: float, high: float):
    """Play each example a little faster or slower (nearest-frame resampling; frames past the end are zero)."""
    import tensorflow as tf

    b, t = tf.shape(x)[0], x.shape[2]
    rate = gen.uniform([b, 1], low, high)
    src = tf.cast(tf.round(tf.cast(tf.range(t), tf.float32)[None, :] * rate), tf.int32)
    inside = tf.cast(src < t, x.dtype)
    out = tf.gather(x, tf.minimum(src, t - 1), axis=2, batch_dims=1)
    return out * inside[:, None, :, None]


def _augment_batch(x, y, w, online_aug, mixup, gen):
    import tensorflow as tf

    b = tf.shape(x)[0]
    if "time_mask" in online_aug:
        m = _band_mask(gen, b, x.shape[2], 0.15)
        x = x * m[:, None, :, None]
    if "freq_mask" in online_aug:
        m = _band_mask(gen, b, x.shape[1], 0.15)
        x = x * m[:, :, None, None]
    if "freq_shift" in online_aug:
        x = _shift_rows(gen, x, max_shift=3)
    if "time_stretch" in online_aug:
        x = _stretch_time(gen, x, low=0.85, high=1.15)
    if "brightness_contrast" in online_aug:
        contrast = gen.uniform([b, 1, 1, 1], 0.8, 1.2)
        bright = gen.uniform([b, 1, 1, 1], -0.2, 0.2)
        x = x * contrast + bright
    if mixup:
        lam = tf.random.stateless_gamma([b], seed=gen.make_seeds(1)[:, 0], alpha=mixup)
        lam2 = tf.random.stateless_gamma([b], seed=gen.make_seeds(1)[:, 0], alpha=mixup)
        lam = lam / (lam + lam2 + 1e-9)
        lam = tf.maximum(lam, 1 - lam)
        perm = tf.random.experimental.stateless_shuffle(tf.range(b), seed=gen.make_seeds(1)[:, 0])
        shape = [b] + [1] * (len(x.shape) - 1)
        x = tf.reshape(lam, shape) * x + tf.reshape(1 - lam, shape) * tf.gather(x, perm)
        y = lam[:, None] * y + (1 - lam[:, None]) * tf.gather(y, perm)
        w = lam * w + (1 - lam) * tf.gather(w, perm)
    return x, y, w


class _StopFlag:
    requested = False


def _callbacks(run_dir: Path, cfg: TrainConfig, has_val: bool, log: Logger, t_start: float, member: int = 0,
               data: Prepared | None = None):
    from .tf_setup import keras as _keras

    keras = _keras()
    monitor = "val_accuracy" if has_val else "accuracy"
    ckpt = run_dir / "checkpoint" / ("best.keras" if member == 0 else f"best-m{member + 1}.keras")
    recalibrate = bool(models.get(cfg.arch).train_defaults.get("recalibrate_bn")) and data is not None
    ckpt.parent.mkdir(exist_ok=True)

    class Live(keras.callbacks.Callback):
        """history.jsonl row and status update after every epoch; stop requests every batch."""

        def __init__(self):
            super().__init__()
            self.best = -np.inf
            self.epoch_start = time.monotonic()
            self.best_epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            if _StopFlag.requested or (run_dir / runs.STOP_FILE).exists():
                _StopFlag.requested = True
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            if recalibrate and logs is not None:
                recalibrate_batchnorm(self.model, data.x["train"])
                if has_val:
                    logs.update(_evaluate_val(self.model, data))   # in place: later callbacks see these
            logs = dict(logs or {})
            secs = time.monotonic() - self.epoch_start
            row = {"epoch": epoch + 1, "seconds": round(secs, 3),
                   "elapsed": round(time.monotonic() - t_start, 3),
                   **{k: float(v) for k, v in logs.items()}}
            row["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            value = logs.get(monitor, -np.inf)
            improved = value > self.best or not has_val   # without validation the latest epoch is kept
            if improved:
                self.best, self.best_epoch = value, epoch + 1
                tmp = ckpt.with_name(".best.tmp.keras")
                self.model.save(tmp)
                os.replace(tmp, ckpt)
            if cfg.ensemble > 1:
                row["member"] = member + 1
            runs.append_history(run_dir, row)
            extra = {"epoch": epoch + 1, "epochs": cfg.epochs, "best_epoch": self.best_epoch,
                     f"best_{monitor}": float(self.best), "member": member + 1, "members": cfg.ensemble}
            if epoch == 0 and member == 0:
                extra["first_epoch_seconds"] = round(time.monotonic() - t_start, 2)
            runs.write_status(run_dir, "running", **extra)
            log(f"epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k}={v:.4f}" for k, v in logs.items()
                                                              if isinstance(v, float)) + f" ({secs:.1f} s)"
                + (" *" if improved else ""))

    cbs = [Live()]
    if has_val:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=cfg.patience))
    if has_val and cfg.schedule == "plateau":
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                     patience=max(3, cfg.patience // 3), min_lr=1e-5))
    return cbs, ckpt


STEPS_PER_EXECUTION = 8


def compile_model(model, cfg: TrainConfig, steps_per_epoch: int = 1):
    """Adam and (smoothed) cross-entropy, as every run trains.

    Several batches per graph call cut Keras's per-step overhead (3-4x faster epochs for small
    models, neutral for conv nets); XLA stays off: on this CPU it made every architecture slower
    (4x for the DNN, 7-20x for the CNNs and the CRNN) and compiles for tens of seconds.
    The ``cosine`` schedule warms up for two epochs, then decays to 1 % over the run.
    """
    from .tf_setup import keras as _keras

    keras = _keras()
    lr = cfg.learning_rate
    if cfg.schedule == "cosine":
        total, warm = max(1, cfg.epochs * steps_per_epoch), min(2 * steps_per_epoch, cfg.epochs * steps_per_epoch // 4)
        lr = (keras.optimizers.schedules.CosineDecay(cfg.learning_rate * 0.1, total - warm, alpha=0.01,
                                                     warmup_target=cfg.learning_rate, warmup_steps=warm) if warm
              else keras.optimizers.schedules.CosineDecay(cfg.learning_rate, total, alpha=0.01))
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                  metrics=["accuracy"], jit_compile=False, steps_per_execution=STEPS_PER_EXECUTION)
    return model


def fit(run_dir: Path, cfg: TrainConfig, data: Prepared, log: Logger, t_start: float):
    """Compile and fit ``cfg.ensemble`` members (seeds seed, seed+1, ...); returns the best
    checkpoint of each, averaged into one model when there are several.

    With ``precision="bfloat16"`` layers compute in bfloat16 while weights, batch statistics
    and the loss stay float32; the returned model is rebuilt in float32 with the trained
    weights, so saved models predict in float32 whatever trained them."""
    from .tf_setup import keras as _keras

    keras = _keras()
    n = len(data.labels)
    if cfg.class_weights:
        sample_weight = example_weights(data.y["train"], data.groups if cfg.corpus_balance else None, n)
    else:
        sample_weight = np.ones(len(data.y["train"]), np.float32)
    has_val = len(data.x["val"]) > 0
    val_ds = None
    if has_val:
        keep = data.y["val"] >= 0
        val_ds = make_dataset(data.x["val"][keep], data.y["val"][keep], n, batch_size=256, weights=None,
                              training=False)
    steps = -(-len(data.x["train"]) // cfg.batch_size)
    shape = data.x["train"].shape[1:]
    members = []
    for member in range(cfg.ensemble):
        seed = cfg.seed + member
        with precision_policy(cfg.precision):
            model = models.build(cfg.arch, shape, n, seed=seed, **cfg.arch_params)
            compile_model(model, cfg, steps)
            train_ds = make_dataset(data.x["train"], data.y["train"], n, batch_size=cfg.batch_size, weights=None,
                                    sample_weight=sample_weight,
                                    training=True, online_aug=cfg.online_aug, mixup=cfg.mixup, seed=seed)
            cbs, ckpt = _callbacks(run_dir, cfg, has_val, log, t_start, member, data)
            log(f"training {cfg.arch}{f' member {member + 1}/{cfg.ensemble}' if cfg.ensemble > 1 else ''} "
                f"({model.count_params():,} parameters, {cfg.precision}) on {len(data.x['train'])} clips, "
                f"validating on {len(data.x['val'])}")
            model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=cbs, verbose=0, shuffle=False)
            if ckpt.exists():
                model = keras.models.load_model(ckpt, safe_mode=True)
        members.append(as_float32(model, cfg, shape, n))
        if _StopFlag.requested:
            break
    return members[0] if len(members) == 1 else average_models(members, cfg.arch)


@contextlib.contextmanager
def precision_policy(precision: str):
    """Keras's global dtype policy for the models built inside; float32 is restored on exit."""
    from .tf_setup import keras as _keras

    keras = _keras()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def as_float32(model, cfg: TrainConfig, shape: tuple[int, ...], n_classes: int):
    """The same architecture built in float32, holding ``model``'s (float32) weights."""
    if cfg.precision == "float32":
        return model
    clean = models.build(cfg.arch, shape, n_classes, seed=cfg.seed, **cfg.arch_params)
    clean.set_weights(model.get_weights())
    return clean


def all_layers(model):
    """Every layer of a model, nested models' layers included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


def _evaluate_val(model, data: Prepared) -> dict[str, float]:
    """Validation loss and accuracy in inference mode (after a BatchNorm recalibration)."""
    keep = data.y["val"] >= 0
    y = data.y["val"][keep]
    probs = np.asarray(model.predict(data.x["val"][keep], batch_size=256, verbose=0), dtype=np.float64)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))))
    return {"val_loss": loss, "val_accuracy": float((probs.argmax(axis=1) == y).mean())}


def recalibrate_batchnorm(model, x: np.ndarray, batch: int = 256) -> None:
    """Re-estimate BatchNorm statistics on the training clips with dropout switched off.

    Moving averages lag behind weights that change fast (and dropout in front
    of a BatchNorm layer shifts the variance it sees); after global average
    pooling that small bias moved every clip to one class at inference.
    Exact statistics of dropout-free passes for the current weights remove it
    (the weights are untouched).
    """
    from .tf_setup import keras as _keras

    keras = _keras()
    layers = list(all_layers(model))
    norms = [lay for lay in layers if isinstance(lay, keras.layers.BatchNormalization)]
    drops = [lay for lay in layers if isinstance(lay, keras.layers.Dropout)]
    if not norms or len(x) == 0:
        return
    saved = [(lay, lay.momentum) for lay in norms], [(lay, lay.rate) for lay in drops]
    for lay in drops:
        lay.rate = 0.0
    try:
        for k, start in enumerate(range(0, len(x), batch)):
            for lay in norms:
                lay.momentum = k / (k + 1)     # a running mean over the batches seen so far
            model(x[start:start + batch], training=True)
    finally:
        for lay, m in saved[0]:
            lay.momentum = m
        for lay, r in saved[1]:
            lay.rate = r


def average_models(members: list, name: str):
    """One Keras model whose output is the mean of the members' probabilities."""
    from .tf_setup import keras as _keras

    keras = _keras()
    inp = keras.Input(members[0].input_shape[1:])
    outs = [keras.Model(m.inputs, m.outputs[0], name=f"member_{i + 1}")(inp) for i, m in enumerate(members)]
    return keras.Model(inp, keras.layers.Average()(outs), name=f"{name}_ensemble")


def predictions_table(predictor, rows: pd.DataFrame, fold: int | None = None) -> pd.DataFrame:
    """Per-clip predictions through the same windowed path ``ser predict`` uses."""
    labels = predictor.labels
    probs, kept = [], []
    for i, path in enumerate(rows["path"]):
        try:
            p = predictor.predict_file(path)
        except SERError:
            continue
        kept.append(i)
        probs.append([p.probabilities[lab] for lab in labels])
    rows = rows.iloc[kept].reset_index(drop=True)
    probs = np.asarray(probs, dtype=float).reshape(len(kept), len(labels))
    out = pd.DataFrame({
        "file": [Path(p).name for p in rows["path"]],
        "speaker": rows["speaker"].to_numpy(),
        "gender": rows["gender"].to_numpy(),
        "true": rows["emotion"].to_numpy(),
        "pred": [labels[i] for i in probs.argmax(axis=1)],
        "confidence": probs.max(axis=1, initial=0.0),
    })
    for col in ("actor", "intensity", "statement", "corpus"):
        if col in rows:
            out.insert(2, col, rows[col].to_numpy())
    for j, lab in enumerate(labels):
        out[f"p_{lab}"] = probs[:, j]
    if fold is not None:
        out["fold"] = fold
    return out


def save_model(run_dir: Path, model, spec: ModelSpec) -> Path:
    """Write ``model/`` (spec.json, model.keras and its LiteRT export) under a temporary name, then
    rename into place."""
    import shutil

    final = run_dir / "model"
    tmp = run_dir / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save(tmp / "model.keras")
    spec.save(tmp / "spec.json")
    from .lite import try_export

    try_export(tmp)         # LiteRT beside Keras: prediction will not need TensorFlow
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def train(run_dir: Path, cfg: TrainConfig, *, log: Logger | None = None, df: pd.DataFrame | None = None) -> dict:
    """Train one run in this process; writes every artefact into ``run_dir``. Returns its metrics."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = log or Logger(run_dir, to_file=True)
    t_start = time.monotonic()
    cfg = cfg.resolved()
    runs.write_json(run_dir / "config.json", cfg.to_dict())
    runs.write_status(run_dir, "running", pid=os.getpid(), pid_started=_own_create_time(),
                      started=runs.now_iso(), epochs=cfg.epochs, epoch=0)
    df = load_manifest(cfg) if df is None else df
    split = splits.make_split(df, cfg.protocol, cfg.fold, k=cfg.k, n_val=cfg.n_val_speakers, seed=cfg.data_seed,
                              test_speakers=list(cfg.test_speakers) or None)
    log(f"{split.label}: {len(split.train)} train, {len(split.val)} val, {len(split.test)} test clips")
    data = prepare(cfg, df, split, log)
    runs.write_status(run_dir, "running", skipped_files=len(data.skipped),
                      skipped=[m for _, m in data.skipped][:50])
    model = fit(run_dir, cfg, data, log, t_start)
    fcfg = cfg.feature_config()
    spec = ModelSpec(arch=cfg.arch, features=fcfg, labels=tuple(data.labels),
                     norm_mean=tuple(np.asarray(data.spec_norm[0]).tolist()),
                     norm_std=tuple(np.asarray(data.spec_norm[1]).tolist()),
                     protocol=split.label, created=runs.now_iso(),
                     extra={"train_clips": int(len(data.x["train"])), "dataset": cfg.dataset})
    save_model(run_dir, model, spec)
    metrics: dict = {"protocol": split.label, "speaker_independent": split.speaker_independent}
    if len(data.rows["test"]):
        from .predict import Predictor

        preds = predictions_table(Predictor.from_model(model, spec), data.rows["test"], fold=split.fold)
        if len(preds) < len(data.rows["test"]):
            log(f"test: {len(data.rows['test']) - len(preds)} unreadable clip(s) left out of the metrics")
        atomic_write_text(run_dir / "predictions.csv", preds.to_csv(index=False))
        metrics = evaluate(preds, data.labels, protocol=split.label,
                           speaker_independent=split.speaker_independent)
        log(f"test accuracy {metrics['accuracy']:.3f}, UAR {metrics['uar']:.3f} ({split.label})")
    hist = runs.read_history(run_dir)
    if hist:
        metrics["best_val_accuracy"] = max(h.get("val_accuracy", h.get("accuracy", 0)) for h in hist)
        metrics["epochs_run"] = len(hist)
    status = runs.read_status(run_dir)
    metrics["best_epoch"] = status.get("best_epoch")
    metrics["train_seconds"] = round(time.monotonic() - t_start, 1)
    runs.write_json(run_dir / "metrics.json", metrics)
    state = "stopped" if _StopFlag.requested else "finished"
    runs.write_status(run_dir, state, finished=runs.now_iso(),
                      message="stopped on request; the best checkpoint was kept" if state == "stopped" else "")
    return metrics


def _own_create_time() -> float | None:
    try:
        import psutil

        return psutil.Process(os.getpid()).create_time()
    except Exception:
        return None


def setting_differences(saved: dict, cfg: TrainConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """The settings in which a saved run's config.json differs from ``cfg``; settings added
    after that run was saved count as their defaults."""
    want = json.loads(json.dumps(cfg.to_dict()))
    unset = json.loads(json.dumps(TrainConfig().to_dict()))
    return sorted(k for k in want if k not in ignore and saved.get(k, unset[k]) != want[k])


def _finished_with(fold_dir: Path, cfg: TrainConfig) -> dict | None:
    """The metrics of a fold run that finished with exactly ``cfg``'s settings, else None."""
    saved = runs.read_json(fold_dir / "config.json")
    metrics = runs.read_json(fold_dir / "metrics.json")
    if (not saved or not metrics or runs.read_status(fold_dir).get("state") != "finished"
            or not (fold_dir / "predictions.csv").exists()):
        return None
    same = set(saved) <= set(cfg.to_dict()) and not setting_differences(saved, cfg)
    return metrics if same else None


def cross_validate(base: TrainConfig, out_dir: Path, *, folds: list[int] | None = None,
                   log: Logger | None = None, resume: bool = False) -> dict:
    """Train one run per fold and pool their out-of-fold predictions into one evaluation.

    With ``resume``, a fold that already finished in ``out_dir`` with the same settings is
    kept instead of trained again, so an interrupted cross-validation loses only its last fold.
    """
    from .tf_setup import keras as _keras

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = log or Logger(out_dir, to_file=True)
    base = base.resolved()
    df = load_manifest(base)
    folds = folds or list(range(1, splits.n_folds(base.protocol, base.k, df) + 1))
    runs.write_json(out_dir / "config.json", {**base.to_dict(), "cv_folds": folds})
    runs.write_status(out_dir, "running", pid=os.getpid(), pid_started=_own_create_time(), folds=folds)
    t0 = time.monotonic()
    tables, fold_info = [], []
    for fold in folds:
        fold_dir = out_dir / f"fold-{fold}"
        fold_dir.mkdir(exist_ok=True)
        cfg = dataclasses.replace(base, fold=fold)
        m = _finished_with(fold_dir, cfg) if resume else None
        if m is not None:
            log(f"fold {fold}: kept the finished run (accuracy {m.get('accuracy', 0):.3f}, same settings)")
        else:
            m = train(fold_dir, cfg, log=log, df=df)
        tables.append(pd.read_csv(fold_dir / "predictions.csv"))
        fold_info.append({"fold": fold, "accuracy": m.get("accuracy"), "uar": m.get("uar"),
                          "best_epoch": m.get("best_epoch"), "seconds": m.get("train_seconds")})
        _keras().backend.clear_session()
        if _StopFlag.requested:
            break
    preds = pd.concat(tables, ignore_index=True)
    labels = [c[2:] for c in preds.columns if c.startswith("p_")]
    split_proto = f"{base.protocol} {len(folds)}-fold cross-validation, out-of-fold predictions"
    speaker_independent = base.protocol != "random"
    metrics = evaluate(preds, labels, protocol=split_proto + ("" if speaker_independent else " (speaker-DEPENDENT)"),
                       speaker_independent=speaker_independent)
    metrics["folds"] = fold_info
    metrics["arch"] = base.arch
    metrics["wall_seconds"] = round(time.monotonic() - t0, 1)
    atomic_write_text(out_dir / "predictions.csv", preds.to_csv(index=False))
    runs.write_json(out_dir / "metrics.json", metrics)
    runs.write_status(out_dir, "stopped" if _StopFlag.requested else "finished", finished=runs.now_iso())
    log(f"cross-validation: accuracy {metrics['accuracy']:.3f}, UAR {metrics['uar']:.3f} "
        f"over {len(preds)} clips in {metrics['wall_seconds']:.0f} s")
    return metrics


def install_stop_handlers() -> None:
    """SIGTERM / SIGINT finish the current batch, keep the best checkpoint and exit cleanly."""
    def handler(signum, frame):
        _StopFlag.requested = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_from_dir(run_dir: Path, *, log_to_file: bool) -> int:
    """Entry point of a training process: read config.json, train, record the outcome."""
    run_dir = Path(run_dir)
    log = Logger(run_dir, to_file=log_to_file)
    install_stop_handlers()
    try:
        raw = json.loads((run_dir / "config.json").read_text())
        cv = raw.pop("cv_folds", None)
        cfg = TrainConfig.from_dict(raw)
        if cv is not None:
            cross_validate(cfg, run_dir, folds=cv, log=log)
        else:
            train(run_dir, cfg, log=log)
        return 0
    except SERError as exc:
        log(f"failed: {exc}")
        runs.write_status(run_dir, "failed", message=str(exc))
    except (OSError, MemoryError) as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        runs.write_status(run_dir, "failed", message=f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        log(traceback.format_exc())
        runs.write_status(run_dir, "failed", message=f"internal error: {type(exc).__name__}: {exc}")
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m ser_core.training RUN_DIR", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run_from_dir(Path(sys.argv[1]), log_to_file=False))
