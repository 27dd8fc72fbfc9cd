"""Train/validation/test splits. Speaker-independent unless labelled otherwise.

A :class:`Split` holds row indices into a manifest. ``speaker_independent``
is True only when no speaker appears in two of its parts; reports print the
protocol name with every number.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import ConfigError

# EmoBox's RAVDESS protocol: six folds, each with four test actors.
EMOBOX_RAVDESS_FOLDS: tuple[tuple[int, ...], ...] = (
    (1, 11, 20, 21), (4, 10, 12, 14), (8, 9, 19, 23), (3, 5, 7, 24), (2, 15, 16, 18), (6, 13, 17, 22),
)

PROTOCOLS = ("emobox6", "speaker_kfold", "random")


@dataclass(frozen=True)
class Split:
    protocol: str
    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    speaker_independent: bool

    @property
    def label(self) -> str:
        kind = "speaker-independent" if self.speaker_independent else "speaker-DEPENDENT"
        return f"{self.protocol} fold {self.fold} ({kind})"


def _speakers(df: pd.DataFrame, idx: np.ndarray) -> set:
    return set(df["speaker"].iloc[idx])


def check_disjoint(df: pd.DataFrame, split: Split) -> None:
    """Raise if a speaker-independent split shares a speaker between two parts."""
    if not split.speaker_independent:
        return
    tr, va, te = (_speakers(df, i) for i in (split.train, split.val, split.test))
    if tr & te or tr & va or va & te:
        raise ConfigError(f"{split.label} shares speakers between parts: {sorted((tr & te) | (tr & va) | (va & te))}")


def pick_validation_speakers(df: pd.DataFrame, candidates: list[str], n: int, seed: int) -> list[str]:
    """Choose ``n`` validation speakers from the training speakers, alternating genders when known."""
    rng = np.random.default_rng(seed)
    gender = df.drop_duplicates("speaker").set_index("speaker")["gender"].to_dict()
    pools: dict[str, list[str]] = {}
    for spk in rng.permutation(sorted(candidates)):
        pools.setdefault(gender.get(spk, "unknown"), []).append(str(spk))
    order = sorted(pools)
    chosen: list[str] = []
    while len(chosen) < n and any(pools.values()):
        for g in order:
            if pools[g] and len(chosen) < n:
                chosen.append(pools[g].pop())
    return chosen


def _by_speakers(df: pd.DataFrame, protocol: str, fold: int, test_speakers: set, n_val: int, seed: int) -> Split:
    rest = sorted(set(df["speaker"]) - test_speakers)
    if len(rest) < 2:
        raise ConfigError(f"{protocol} fold {fold}: too few training speakers ({len(rest)})")
    n_val = min(n_val, len(rest) - 1)
    val_spk = set(pick_validation_speakers(df, rest, n_val, seed + fold)) if n_val > 0 else set()
    spk = df["speaker"].to_numpy()
    test = np.flatnonzero(np.isin(spk, list(test_speakers)))
    val = np.flatnonzero(np.isin(spk, list(val_spk)))
    train = np.flatnonzero(~np.isin(spk, list(test_speakers | val_spk)))
    split = Split(protocol, fold, train, val, test, True)
    check_disjoint(df, split)
    return split


def emobox_ravdess(df: pd.DataFrame, fold: int, *, n_val: int = 2, seed: int = 0) -> Split:
    """EmoBox 6-fold RAVDESS protocol; validation actors come from the training actors."""
    if "actor" not in df:
        raise ConfigError("the emobox6 protocol needs a RAVDESS manifest (an 'actor' column)")
    if not 1 <= fold <= len(EMOBOX_RAVDESS_FOLDS):
        raise ConfigError(f"emobox6 has folds 1-6, not {fold}")
    actors = set(EMOBOX_RAVDESS_FOLDS[fold - 1])
    test_spk = set(df.loc[df["actor"].isin(actors), "speaker"])
    if not test_spk:
        raise ConfigError(f"emobox6 fold {fold}: none of its test actors {sorted(actors)} are in the data")
    return _by_speakers(df, "emobox6", fold, test_spk, n_val, seed)


def speaker_kfold(df: pd.DataFrame, fold: int, *, k: int = 5, n_val: int = 2, seed: int = 0) -> Split:
    """k-fold over speakers (shuffled with ``seed``), genders spread across folds."""
    speakers = sorted(df["speaker"].unique())
    if len(speakers) < k:
        raise ConfigError(f"speaker k-fold needs at least {k} speakers, the data has {len(speakers)}")
    if not 1 <= fold <= k:
        raise ConfigError(f"speaker_kfold has folds 1-{k}, not {fold}")
    order = pick_validation_speakers(df, speakers, len(speakers), seed)
    test_spk = set(order[fold - 1::k])
    return _by_speakers(df, "speaker_kfold", fold, test_spk, n_val, seed)


def random_split(df: pd.DataFrame, *, test_size: float = 0.2, val_size: float = 0.1, seed: int = 0) -> Split:
    """Random clip split stratified by emotion. SPEAKER-DEPENDENT: speakers are shared.

    This is the protocol seed 000 reported; it overstates real-world accuracy.
    ``val_size`` 0 (a recipe without validation speakers) trains on all 80 %.
    """
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for _, group in df.groupby("emotion", sort=True):
        idx = rng.permutation(group.index.to_numpy())
        n_test = int(round(len(idx) * test_size))
        n_val = int(round(len(idx) * val_size))
        test.extend(idx[:n_test])
        val.extend(idx[n_test:n_test + n_val])
        train.extend(idx[n_test + n_val:])
    return Split("random", 1, *(np.sort(np.asarray(part, dtype=np.int64)) for part in (train, val, test)), False)


def n_folds(protocol: str, k: int = 5) -> int:
    return {"emobox6": len(EMOBOX_RAVDESS_FOLDS), "speaker_kfold": k, "random": 1}[protocol]


def make_split(df: pd.DataFrame, protocol: str, fold: int = 1, *, k: int = 5, n_val: int = 2,
               seed: int = 0, test_speakers: list[str] | None = None) -> Split:
    """Build a split by protocol name (see :data:`PROTOCOLS`), or from explicit test speakers."""
    if test_speakers:
        return _by_speakers(df, "custom", fold, set(test_speakers), n_val, seed)
    if protocol == "emobox6":
        return emobox_ravdess(df, fold, n_val=n_val, seed=seed)
    if protocol == "speaker_kfold":
        return speaker_kfold(df, fold, k=k, n_val=n_val, seed=seed)
    if protocol == "random":
        return random_split(df, val_size=0.1 if n_val else 0.0, seed=seed)
    if protocol == "all":
        rest = sorted(df["speaker"].unique())
        val_spk = set(pick_validation_speakers(df, rest, n_val, seed)) if n_val else set()
        spk = df["speaker"].to_numpy()
        val = np.flatnonzero(np.isin(spk, list(val_spk)))
        train = np.flatnonzero(~np.isin(spk, list(val_spk)))
        return Split("all", 0, train, val, np.array([], dtype=int), True)
    raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS + ('all',))}")
