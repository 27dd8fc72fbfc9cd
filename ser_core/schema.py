"""The layout of run and model folders: file names, status keys and the protocol record.

Every module that reads or writes these folders takes the names from here, so a name is
spelled once. A run folder (``runs/<id>/``)::

    config.json      the TrainConfig it trains (a cross-validation adds ``cv_folds``)
    status.json      state, pid, epoch, best epoch and score (rewritten atomically)
    history.jsonl    one row per epoch
    log.txt          what the run printed
    checkpoint/      the best epoch so far
    model/           the finished model folder
    metrics.json     test metrics, with the protocol as a record (``protocol_info``)
    predictions.csv  one row per test clip: truth, prediction, probabilities
    fold-K/          a cross-validation's runs, one per fold

A model folder holds ``spec.json`` and ``model.keras``, or, for an ensemble, ``spec.json``
and a ``members/`` folder of model folders.
"""
from __future__ import annotations

import re

# ----------------------------------------------------------------------------- run folders
CONFIG = "config.json"
STATUS = "status.json"
HISTORY = "history.jsonl"
LOG = "log.txt"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
STOP = "STOP"                      # its presence asks a running run to stop
CHECKPOINT = "checkpoint"
RESUME_POINT = "resume.npz"       # under CHECKPOINT: where an interrupted run continues from (ser_core.resume)
MODEL = "model"
CV_FOLDS = "cv_folds"              # config.json key that makes a run a cross-validation
ROBUSTNESS = "robustness.json"
ROBUSTNESS_PREDICTIONS = "robustness_predictions.csv"
STRANGERS = "strangers.json"       # in a model folder: what it does on corpora it never heard (training/strangers.py)
# in a probe's folder: its recipe trained on three corpora and calibrated as shipped, on the fourth
# (training/novelty_calibration.py --save)
LOCO_CALIBRATION = "loco_calibration.json"
LOCO_CALIBRATION_TABLE = "loco_calibration_predictions.csv.gz"       # ... and its held-out rows
# in a probe's folder: the probe adapted to a recording setup from its own clips (ser_core.adapt; arrays as
# PROBE's) and its record (calibration, reference size, what leaving each corpus out measured)
ADAPTED_PROBE = "adapted_probe.npz"
ADAPTED = "adapted.json"
ADAPTED_TABLE = "adapted_predictions.csv.gz"     # ... and the held-out rows of its recipe, each corpus left out


FOLD_PREFIX = "fold-"
ALL_FOLD = "all"                   # what {fold} in a teacher path becomes for a run on every speaker


def fold_dir_name(fold: int) -> str:
    """The sub-folder of one fold's run in a cross-validation folder."""
    return f"{FOLD_PREFIX}{fold}"


def fold_of(dir_name: str) -> int | None:
    """The fold a cross-validation's sub-folder holds (None for another folder)."""
    rest = dir_name[len(FOLD_PREFIX):] if dir_name.startswith(FOLD_PREFIX) else ""
    return int(rest) if rest.isdigit() else None


# ----------------------------------------------------------------------------- model folders
SPEC = "spec.json"
WEIGHTS = "model.keras"
LITE = "model.tflite"              # the LiteRT export inference prefers (ser_core.lite)
LITE_INT8 = "model.int8.tflite"    # its int8 (dynamic-range) copy: faster, not equal to Keras (--runtime int8)
NOVELTY = "novelty.npz"            # a model's novelty gate: what its training recordings sound like (ser_core.novelty)
MEMBERS = "members"                # an ensemble's folder of member model folders
ENSEMBLE_ARCH = "ensemble"         # spec.json "arch" of an ensemble folder
PROBE_ARCH = "whisper_probe"       # spec.json "arch" of a linear probe on Whisper's frozen encoder (ser_core.whisper)
PROBE = "probe.npz"                # such a folder's probe: standardisation, weights and bias (no Keras network)
ENCODER_SETUP = "encoder_setup"    # probe spec.json extra: how its encoder hears a window (ser_core.whisper.Setup)
MEMBER_WEIGHTS = "member_weights"  # ensemble spec.json extra: each member's share of the mean (equal if absent)
TRAIN_SPEAKERS = "train_speakers"  # spec.json extra: the speakers a model learnt from (a teacher's check)
ACTIVE = "active.json"             # in the models folder: which model the app uses

# ----------------------------------------------------------------------------- status.json keys
BEST_EPOCH = "best_epoch"
VAL_MONITOR = "val_accuracy"       # what a run with validation speakers keeps its best epoch by
TRAIN_MONITOR = "accuracy"         # ... and one without (it keeps the latest epoch)


def best_key(monitor: str) -> str:
    """The status (and metrics) key of the best value of ``monitor`` so far."""
    return f"best_{monitor}"


BEST_VAL_ACCURACY = best_key(VAL_MONITOR)

# ----------------------------------------------------------------------------- the protocol
PROTOCOL = "protocol"              # metrics.json: the human label, e.g. "emobox6 fold 1 (speaker-independent)"
PROTOCOL_INFO = "protocol_info"    # metrics.json: the same as a record, see protocol_record
SPEAKER_INDEPENDENT = "speaker_independent"


def protocol_record(name: str, folds: list[int], *, speaker_independent: bool, cross_validation: bool,
                    label: str) -> dict:
    """What a metrics file was measured on: protocol ``name``, the ``folds`` its test clips come
    from, whether they were pooled out-of-fold predictions of a cross-validation, whether no
    speaker is both trained on and tested, and the human ``label`` reports print."""
    return {"name": name, "folds": [int(f) for f in folds], "cross_validation": bool(cross_validation),
            "speaker_independent": bool(speaker_independent), "label": label}


def cv_protocol(name: str, folds: list[int], speaker_independent: bool) -> dict:
    """The record of a cross-validation's pooled out-of-fold predictions."""
    label = (f"{name} {len(folds)}-fold cross-validation, out-of-fold predictions"
             + ("" if speaker_independent else " (speaker-DEPENDENT)"))
    return protocol_record(name, folds, speaker_independent=speaker_independent, cross_validation=True,
                           label=label)


def split_protocol(split) -> dict:
    """The record of one split's test clips (a :class:`ser_core.splits.Split`)."""
    return protocol_record(split.protocol, [split.fold], speaker_independent=split.speaker_independent,
                           cross_validation=False, label=split.label)


def protocol_of(metrics: dict | None) -> dict:
    """The protocol record of a metrics file; files written before the record existed hold only the
    label, which is read back here (and only here)."""
    metrics = metrics or {}
    info = metrics.get(PROTOCOL_INFO)
    if isinstance(info, dict) and info.get("name"):
        return info
    folds = [f.get("fold") for f in metrics.get("folds") or [] if isinstance(f, dict)]
    return legacy_protocol(str(metrics.get(PROTOCOL) or ""), metrics.get(SPEAKER_INDEPENDENT),
                           folds=[f for f in folds if isinstance(f, int)] or None)


def legacy_protocol(label: str, speaker_independent: bool | None = None, *, folds: list[int] | None = None) -> dict:
    """A protocol record from a label alone: ``NAME K-fold cross-validation...`` or ``NAME fold K (...)``.

    A cross-validation's fold numbers are not in its label: they come from ``folds`` (its metrics'
    per-fold rows), else 1..K stand in. An unknown label gives a record named after its text
    before any parenthesis, with no folds."""
    if speaker_independent is None:
        speaker_independent = "DEPENDENT" not in label
    m = re.match(r"(\w+) (\d+)-fold cross-validation", label)
    if m:
        k = int(m.group(2))
        return protocol_record(m.group(1), folds if folds and len(folds) == k else list(range(1, k + 1)),
                               cross_validation=True, speaker_independent=speaker_independent, label=label)
    m = re.match(r"(\w+) fold (\d+)", label)
    if m:
        return protocol_record(m.group(1), [int(m.group(2))], cross_validation=False,
                               speaker_independent=speaker_independent, label=label)
    return protocol_record(label.split(" (")[0], [], cross_validation=False,
                           speaker_independent=speaker_independent, label=label)
