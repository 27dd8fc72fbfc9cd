"""Resume points: an interrupted training run continues from its last finished epoch.

A fold of the default's recipe trains for about 15-45 minutes a core; a session that ends, a machine that
reboots or a SIGKILL used to throw the whole fold away. After every finished epoch the run now writes one
file, ``checkpoint/resume.npz``: every variable of the model being fitted (weights, BatchNorm statistics,
the dropout layers' random-generator states), every variable of its optimizer (its step count, hence the
learning-rate schedule's position, and Adam's moments), and a small JSON state: which ensemble member, how
many epochs it finished, its best epoch, the early-stopping counters, the settings it trained with and the
history row of that epoch. It is one file replaced atomically, so it is always a whole epoch's state.

The model is rebuilt by the same code from the same settings and the arrays are assigned into it: nothing
is deserialised as code, and the corpus-adversarial and corpus-expert models resume like any other.
What is not carried over is the position of the tf.data shuffle: a resumed run draws its batches from a
generator seeded anew, so it is statistically the same training, not bit for bit the same.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from . import schema

_STATE = "state"            # npz key of the JSON state; model variables are m<i>, optimizer variables o<i>


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where a run stood at the end of its last finished epoch.

    Attributes
    ----------
    member : int
        The ensemble member being trained (0-based).
    epoch : int
        Epochs that member finished.
    best, best_epoch : float, int
        The monitored value the kept checkpoint was chosen by, and its epoch.
    done : bool
        The member's training ended (every epoch, or early stopping): it is not trained further.
    row : dict
        The history row of ``epoch`` (history.jsonl is made to end with it on resume).
    counters : dict
        ``{callback class name: {"wait": .., "best": ..}}`` of the early-stopping and plateau callbacks.
    settings : dict
        The run's settings (``TrainConfig.to_dict()``): a point of other settings is never resumed.
    """

    member: int
    epoch: int
    best: float
    best_epoch: int
    done: bool
    row: dict
    counters: dict
    settings: dict


def path(run_dir: Path) -> Path:
    """The run's resume point file."""
    return Path(run_dir) / schema.CHECKPOINT / schema.RESUME_POINT


def _numpy(variables) -> list[np.ndarray]:
    from .tf_setup import keras as _keras

    ops = _keras().ops
    return [np.asarray(ops.convert_to_numpy(v.value if hasattr(v, "value") else v)) for v in variables]


def save(run_dir: Path, fitted, point: ResumePoint) -> None:
    """Write ``fitted``'s variables, its optimizer's and ``point`` into the run's resume point, atomically."""
    target = path(run_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"m{i}": a for i, a in enumerate(_numpy(fitted.variables))}
    arrays.update({f"o{i}": a for i, a in enumerate(_numpy(fitted.optimizer.variables))})
    arrays[_STATE] = np.frombuffer(json.dumps(dataclasses.asdict(point)).encode(), dtype=np.uint8)
    tmp = target.with_name(".resume.tmp.npz")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def read(run_dir: Path) -> ResumePoint | None:
    """The run's resume point (its state only), or None when there is none or it cannot be read."""
    try:
        with np.load(path(run_dir)) as z:
            return ResumePoint(**json.loads(bytes(z[_STATE]).decode()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def restore(run_dir: Path, fitted) -> None:
    """Assign the resume point's variables to ``fitted`` (built and compiled as the saved run was) and to its
    optimizer. Raises ValueError when they do not fit (another architecture or optimizer)."""
    with np.load(path(run_dir)) as z:
        model_arrays = [z[f"m{i}"] for i in range(sum(k.startswith("m") for k in z.files))]
        opt_arrays = [z[f"o{i}"] for i in range(sum(k.startswith("o") for k in z.files))]
    optimizer = fitted.optimizer
    if not optimizer.built:
        optimizer.build(fitted.trainable_variables)
    pairs = (("model", fitted.variables, model_arrays), ("optimizer", optimizer.variables, opt_arrays))
    for what, variables, arrays in pairs:       # every check before any assignment: all or nothing
        if len(variables) != len(arrays) or any(tuple(v.shape) != a.shape for v, a in zip(variables, arrays)):
            raise ValueError(f"the resume point's {what} variables do not fit this {what}")
    for _, variables, arrays in pairs:
        for v, a in zip(variables, arrays):
            v.assign(a)


def clear(run_dir: Path) -> None:
    """Remove the run's resume point (a run that starts afresh, or whose model is saved)."""
    path(run_dir).unlink(missing_ok=True)
    path(run_dir).with_name(".resume.tmp.npz").unlink(missing_ok=True)


def history_up_to(rows: list[dict], point: ResumePoint) -> list[dict]:
    """The history rows a run resumed at ``point`` keeps: every row before the point's epoch (earlier members
    whole), then the point's own row, whether or not the killed process had appended it."""
    def key(r):
        return r.get("member", 1) - 1, int(r.get("epoch", 0))

    return [r for r in rows if key(r) < (point.member, point.epoch)] + [point.row]
