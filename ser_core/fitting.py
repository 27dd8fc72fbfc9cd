"""Fitting on the TensorFlow side: compile, callbacks, mixed precision, BatchNorm recalibration,
seed ensembles, and stopping on request.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from pathlib import Path

import numpy as np

from . import models, resume, runs, schema
from .pipeline import example_weights, make_dataset, training_targets
from .prepare import Prepared
from .runs import Logger
from .trainconfig import TrainConfig


class StopFlag:
    """Set by a stop request (signal or STOP file): the run ends after its current batch."""

    requested = False


def _callbacks(run_dir: Path, cfg: TrainConfig, has_val: bool, log: Logger, t_start: float, member: int = 0,
               data: Prepared | None = None, network=None, point: resume.ResumePoint | None = None):
    """Live metrics, checkpoints, resume points, early stopping. ``network``: the model the checkpoint keeps
    when the model being fitted wraps it (the corpus-adversarial training model); default the fitted one.
    ``point``: the resume point this member continues from (its best value and counters carry on)."""
    from .tf_setup import keras as _keras

    keras = _keras()
    monitor = schema.VAL_MONITOR if has_val else schema.TRAIN_MONITOR
    ckpt = _checkpoint_path(run_dir, member)
    recalibrate = bool(models.get(cfg.arch).train_defaults.get("recalibrate_bn")) and data is not None
    ckpt.parent.mkdir(exist_ok=True)

    class Live(keras.callbacks.Callback):
        """Measures every epoch (its row, whether it is the best so far); stop requests every batch.
        First in the list, so early stopping and the plateau schedule see a BatchNorm-recalibrated figure."""

        def __init__(self):
            super().__init__()
            self.best = point.best if point else -np.inf
            self.epoch_start = time.monotonic()
            self.best_epoch = point.best_epoch if point else 0
            # the elapsed time of the process(es) before a resume, so the curves' time axis runs on
            self.offset = point.row.get("elapsed", 0.0) if point else 0.0
            self.row, self.improved, self.cut = {}, False, False

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.monotonic()
            self.cut = False        # whether a stop request ends this epoch before its last batch

        def on_train_batch_end(self, batch, logs=None):
            if StopFlag.requested or (run_dir / schema.STOP).exists():
                StopFlag.requested = True
                self.model.stop_training = True
                self.cut = True

        def on_epoch_end(self, epoch, logs=None):
            if recalibrate and logs is not None:
                recalibrate_batchnorm(self.model, data.x["train"])
                if has_val:
                    logs.update(_evaluate_val(self.model, data))   # in place: later callbacks see these
            logs = dict(logs or {})
            secs = time.monotonic() - self.epoch_start
            row = {"epoch": epoch + 1, "seconds": round(secs, 3),
                   "elapsed": round(self.offset + time.monotonic() - t_start, 3),
                   **{k: float(v) for k, v in logs.items()}}
            row["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            value = logs.get(monitor, -np.inf)
            self.improved = value > self.best or not has_val   # without validation the latest epoch is kept
            if self.improved:
                self.best, self.best_epoch = value, epoch + 1
            if cfg.ensemble > 1:
                row["member"] = member + 1
            self.row = row

    class Commit(keras.callbacks.Callback):
        """Last in the list, once every callback has updated its state for the epoch: the resume point, the
        kept checkpoint, the history row, the status and the log line. Before fitting, it gives early stopping
        and the plateau schedule back the counters they had at the resume point."""

        def on_train_begin(self, logs=None):
            for cb in cbs:
                for name, value in (point.counters if point else {}).get(type(cb).__name__, {}).items():
                    setattr(cb, name, value)

        def on_epoch_end(self, epoch, logs=None):
            row = live.row
            if not live.cut:                # an epoch cut short by a stop is no place to resume from
                # the resume point before the checkpoint: a kill between the two leaves a point whose best
                # epoch is its own, and resuming writes that checkpoint again from the point (fit)
                resume.save(run_dir, self.model, resume.ResumePoint(
                    member=member, epoch=epoch + 1, best=float(live.best), best_epoch=live.best_epoch, done=False,
                    row=row, counters=_counters(cbs), settings=cfg.to_dict()))
            # an epoch cut short by a stop is kept only when there is no model yet
            if live.improved and (not live.cut or not ckpt.exists()):
                _save_checkpoint(network if network is not None else self.model, ckpt)
            if StopFlag.requested:
                self.model.stop_training = True     # a stop that came after the last batch: no next epoch
            runs.append_history(run_dir, row)
            extra = {"epoch": epoch + 1, "epochs": cfg.epochs, schema.BEST_EPOCH: live.best_epoch,
                     schema.best_key(monitor): float(live.best), "member": member + 1, "members": cfg.ensemble}
            if epoch == 0 and member == 0:
                extra["first_epoch_seconds"] = round(time.monotonic() - t_start, 2)
            runs.write_status(run_dir, "running", **extra)
            log(f"epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k}={v:.4f}" for k, v in row.items()
                                                              if k not in ("epoch", "seconds", "elapsed", "lr",
                                                                           "member"))
                + f" ({row['seconds']:.1f} s)" + (" *" if live.improved else ""))

    live = Live()
    cbs = [live]
    if has_val:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=cfg.patience))
    if has_val and cfg.schedule == "plateau":
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                     patience=max(3, cfg.patience // 3), min_lr=1e-5))
    cbs.append(Commit())
    return cbs


# what an early-stopping or plateau callback counts, carried over a resume
_COUNTERS = ("wait", "best", "cooldown_counter")


def _counters(callbacks) -> dict:
    """``{class name: {counter: value}}`` of the callbacks that count epochs (for a resume point)."""
    found = {}
    for cb in callbacks:
        if type(cb).__name__ not in ("EarlyStopping", "ReduceLROnPlateau"):
            continue
        values = {k: float(getattr(cb, k)) for k in _COUNTERS
                  if isinstance(getattr(cb, k, None), (int, float, np.number))}
        if values:
            found[type(cb).__name__] = values
    return found


def _save_checkpoint(model, ckpt: Path) -> None:
    """The kept model, replaced atomically."""
    tmp = ckpt.with_name(".best.tmp.keras")
    model.save(tmp)
    os.replace(tmp, ckpt)


STEPS_PER_EXECUTION = 8


def compile_model(model, cfg: TrainConfig, steps_per_epoch: int = 1, *, loss=None, metrics=None):
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
                  loss=loss or keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                  metrics=metrics or ["accuracy"], jit_compile=False, steps_per_execution=STEPS_PER_EXECUTION)
    return model


def fit(run_dir: Path, cfg: TrainConfig, data: Prepared, log: Logger, t_start: float, *, resume_run: bool = False):
    """Compile and fit ``cfg.ensemble`` members (seeds seed, seed+1, ...); returns the best
    checkpoint of each, averaged into one model when there are several.

    With ``resume_run``, a run interrupted in ``run_dir`` with the same settings continues from its resume
    point (:mod:`ser_core.resume`): members it finished are loaded from their checkpoints, the member it was
    training goes on from its last finished epoch. Without it, any resume point there is removed.

    With ``precision="bfloat16"`` layers compute in bfloat16 while weights, batch statistics
    and the loss stay float32; the returned model is rebuilt in float32 with the trained
    weights, so saved models predict in float32 whatever trained them."""
    from .tf_setup import keras as _keras

    keras = _keras()
    n = len(data.labels)
    if cfg.class_weights:
        sample_weight = example_weights(data.y["train"], data.groups if cfg.corpus_balance else None, n,
                                        within=cfg.balance_within)
    else:
        sample_weight = np.ones(len(data.y["train"]), np.float32)
    targets = training_targets(data.y["train"], n, None if data.soft is None else data.soft[data.source], cfg.distill,
                               cfg.distill_temperature)
    has_val = len(data.x["val"]) > 0
    keep = data.y["val"] >= 0
    val_targets = None
    if cfg.adversary > 0 or cfg.corpus_experts:
        from . import adversary

        codes, corpora = adversary.corpus_codes(data.groups)
        targets = adversary.adversarial_targets(targets, codes, len(corpora))
        if has_val:     # validation clips come from the training corpora (their held-out speakers)
            val_codes = np.searchsorted(corpora, data.rows["val"]["corpus"].astype(str).to_numpy()[keep])
            val_targets = adversary.adversarial_targets(training_targets(data.y["val"][keep], n),
                                                        np.minimum(val_codes, len(corpora) - 1), len(corpora))
        if cfg.corpus_experts:
            log(f"corpus experts: one emotion head for each of {', '.join(corpora)}, blended by a gate that "
                "learns which of them a clip sounds like")
        else:
            log(f"corpus adversary (strength {cfg.adversary}, ramped): the network learns to hide which of "
                f"{', '.join(corpora)} a clip comes from")
    val_ds = None
    if has_val:
        val_ds = make_dataset(data.x["val"][keep], data.y["val"][keep], n, batch_size=256, weights=None,
                              training=False, targets=val_targets)
    steps = -(-len(data.x["train"]) // cfg.batch_size)
    shape = data.x["train"].shape[1:]
    point = _resume_point(run_dir, cfg, log) if resume_run else None
    if point is None:       # from the first epoch: no curve or resume point of an earlier process carries on
        resume.clear(run_dir)
        runs.write_history(run_dir, [])
    members = []
    for member in range(cfg.ensemble):
        seed = cfg.seed + member
        with precision_policy(cfg.precision):
            model = models.build(cfg.arch, shape, n, seed=seed, **cfg.arch_params)
            fitted, extra_cbs = model, []
            if cfg.corpus_experts:
                from . import experts

                model, fitted = experts.wrap(model, len(corpora))
                compile_model(fitted, cfg, steps, loss=adversary.loss(n, cfg.label_smoothing),
                              metrics=adversary.metrics(n))
            elif cfg.adversary > 0:
                fitted, reversal = adversary.wrap(model, len(corpora))
                compile_model(fitted, cfg, steps, loss=adversary.loss(n, cfg.label_smoothing),
                              metrics=adversary.metrics(n))
                extra_cbs = [adversary.Ramp(reversal, cfg.epochs, cfg.adversary)]
            else:
                compile_model(model, cfg, steps)
            mine = point if point is not None and point.member == member else None
            ckpt = _checkpoint_path(run_dir, member)
            if point is not None and (point.member > member or (mine and mine.done)) and ckpt.exists():
                log(f"member {member + 1}: finished by an earlier process, its checkpoint kept")
                members.append(as_float32(keras.models.load_model(ckpt, safe_mode=True), cfg, shape, n,
                                          len(corpora) if cfg.corpus_experts else 0))
                continue
            start = _continue_from(run_dir, mine, fitted, model, ckpt, log) if mine else 0
            train_ds = make_dataset(data.x["train"], data.y["train"], n, batch_size=cfg.batch_size, weights=None,
                                    sample_weight=sample_weight, targets=targets,
                                    training=True, online_aug=cfg.online_aug, mixup=cfg.mixup, seed=seed + start)
            cbs = _callbacks(run_dir, cfg, has_val, log, t_start, member, data, network=model,
                             point=mine if start else None)
            log(f"training {cfg.arch}{f' member {member + 1}/{cfg.ensemble}' if cfg.ensemble > 1 else ''} "
                f"({model.count_params():,} parameters, {cfg.precision}) on {len(data.x['train'])} clips, "
                f"validating on {len(data.x['val'])}")
            fitted.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=extra_cbs + cbs, verbose=0,
                       shuffle=False, initial_epoch=start)
            if not StopFlag.requested:      # ended (every epoch, or early stopping): a resume loads it, not trains
                state = resume.read(run_dir)
                if state is not None and state.member == member:
                    resume.save(run_dir, fitted, dataclasses.replace(state, done=True))
            if ckpt.exists():
                model = keras.models.load_model(ckpt, safe_mode=True)
        members.append(as_float32(model, cfg, shape, n, len(corpora) if cfg.corpus_experts else 0))
        if StopFlag.requested:
            break
    return members[0] if len(members) == 1 else average_models(members, cfg.arch)


def _checkpoint_path(run_dir: Path, member: int) -> Path:
    """Where the kept model of ensemble member ``member`` (0-based) is written."""
    return run_dir / schema.CHECKPOINT / ("best.keras" if member == 0 else f"best-m{member + 1}.keras")


def _resume_point(run_dir: Path, cfg: TrainConfig, log: Logger) -> resume.ResumePoint | None:
    """The run's resume point when it was written with ``cfg``'s settings, else None (said in the log)."""
    from .trainconfig import setting_differences

    point = resume.read(run_dir)
    if point is None:
        if resume.path(run_dir).exists():
            log("the resume point cannot be read: training from the first epoch")
        return None
    differ = setting_differences(point.settings, cfg)
    if differ:
        log(f"the resume point was written with other settings ({', '.join(differ)}): training from the first epoch")
        return None
    return point


def _continue_from(run_dir: Path, point: resume.ResumePoint, fitted, network, ckpt: Path, log: Logger) -> int:
    """Put the resume point's state into ``fitted`` (built and compiled); returns the epoch to start from,
    0 when the point does not fit the model (then it trains from the first epoch)."""
    try:
        resume.restore(run_dir, fitted)
    except ValueError as exc:
        log(f"{exc}: training from the first epoch")
        runs.write_history(run_dir, [r for r in runs.read_history(run_dir) if r.get("member", 1) - 1 < point.member])
        return 0
    if point.best_epoch == point.epoch or not ckpt.exists():
        _save_checkpoint(network, ckpt)     # the point's own epoch is its best: the checkpoint may predate it
    runs.write_history(run_dir, resume.history_up_to(runs.read_history(run_dir), point))
    runs.write_status(run_dir, "running", epoch=point.epoch, resumed_at_epoch=point.epoch,
                      resumed_elapsed=point.row.get("elapsed", 0.0))
    log(f"resumed{f' member {point.member + 1}' if 'member' in point.row else ''} after epoch {point.epoch} "
        f"(its best: epoch {point.best_epoch}) from {resume.path(run_dir).name}")
    return point.epoch


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


def as_float32(model, cfg: TrainConfig, shape: tuple[int, ...], n_classes: int, n_experts: int = 0):
    """The same architecture built in float32 (with ``n_experts`` corpus experts), holding ``model``'s
    (float32) weights."""
    if cfg.precision == "float32":
        return model
    clean = models.build(cfg.arch, shape, n_classes, seed=cfg.seed, **cfg.arch_params)
    if n_experts:
        from . import experts

        clean = experts.wrap(clean, n_experts)[0]
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


def install_stop_handlers() -> None:
    """SIGTERM / SIGINT finish the current batch, keep the best checkpoint and exit cleanly."""
    def handler(signum, frame):
        StopFlag.requested = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
