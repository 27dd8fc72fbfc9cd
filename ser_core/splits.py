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

PROTOCOLS = ("emobox6", "speaker_kfold", "loco", "random")

# Fixed, so every recipe (whatever its model seed) tests the same speakers in a fold: an
# ensemble averages its members' out-of-fold predictions fold by fold.
OTHER_CORPORA_SEED = 0


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


def speaker_groups(df: pd.DataFrame, k: int, seed: int = OTHER_CORPORA_SEED) -> list[set]:
    """``k`` disjoint speaker groups of each corpus in ``df``, genders alternating, sizes within one.

    Group ``i`` holds the ``i``-th, ``i+k``-th, ... speaker of every corpus, so each fold tests
    some speakers of every corpus (a corpus with fewer than ``k`` speakers leaves some groups
    without it)."""
    groups: list[set] = [set() for _ in range(k)]
    for _, part in df.groupby("corpus", sort=True):
        order = pick_validation_speakers(part, sorted(part["speaker"].unique()), part["speaker"].nunique(), seed)
        for i, spk in enumerate(order):
            groups[i % k].add(spk)
    return groups


def emobox_ravdess(df: pd.DataFrame, fold: int, *, n_val: int = 2, seed: int = 0) -> Split:
    """EmoBox 6-fold RAVDESS protocol; validation actors come from the training actors.

    With other corpora in the manifest, their speakers are dealt into six groups too
    (:func:`speaker_groups`) and fold ``k`` also tests group ``k``: every fold trains on all
    other corpora but the speakers it tests, and six folds give out-of-fold predictions of
    every clip of every corpus (speaker folds inside each corpus) in the same six trainings."""
    if "actor" not in df:
        raise ConfigError("the emobox6 protocol needs a RAVDESS manifest (an 'actor' column)")
    if not 1 <= fold <= len(EMOBOX_RAVDESS_FOLDS):
        raise ConfigError(f"emobox6 has folds 1-6, not {fold}")
    actors = set(EMOBOX_RAVDESS_FOLDS[fold - 1])
    ravdess = df["corpus"] == "ravdess" if "corpus" in df else pd.Series(True, index=df.index)
    test_spk = set(df.loc[ravdess & df["actor"].isin(actors), "speaker"])
    others = df[~ravdess]
    if len(others):
        test_spk |= speaker_groups(others, len(EMOBOX_RAVDESS_FOLDS))[fold - 1]
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


def corpora(df: pd.DataFrame) -> list[str]:
    """The corpora of a manifest in a fixed order (RAVDESS first, then by name): the folds of ``loco``."""
    names = sorted(df["corpus"].unique(), key=lambda c: (c != "ravdess", c))
    return [str(c) for c in names]


def leave_one_corpus_out(df: pd.DataFrame, fold: int, *, n_val: int = 2, seed: int = 0) -> Split:
    """Train on every corpus but one, test on all of that one (fold ``k`` = the ``k``-th of :func:`corpora`).

    Speaker-independent and more: no speaker, language or recording set-up of the test corpus is seen."""
    names = corpora(df)
    if len(names) < 2:
        raise ConfigError("leave-one-corpus-out needs at least two corpora (e.g. --dataset ravdess+ased)")
    if not 1 <= fold <= len(names):
        raise ConfigError(f"loco has folds 1-{len(names)} ({', '.join(names)}), not {fold}")
    test_spk = set(df.loc[df["corpus"] == names[fold - 1], "speaker"])
    return _by_speakers(df, "loco", fold, test_spk, n_val, seed)


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


def n_folds(protocol: str, k: int = 5, df: pd.DataFrame | None = None) -> int:
    """How many folds a protocol has (``loco``: one per corpus of ``df``)."""
    if protocol == "loco":
        if df is None:
            raise ConfigError("the number of loco folds depends on the dataset's corpora")
        return len(corpora(df))
    return {"emobox6": len(EMOBOX_RAVDESS_FOLDS), "speaker_kfold": k, "random": 1}[protocol]


def fold_name(protocol: str, fold: int, df: pd.DataFrame | None = None) -> str:
    """How a fold reads in reports: ``fold 3``, or for ``loco`` the corpus it tests."""
    if protocol == "loco" and df is not None:
        return f"test corpus {corpora(df)[fold - 1]}"
    return f"fold {fold}"


def make_split(df: pd.DataFrame, protocol: str, fold: int = 1, *, k: int = 5, n_val: int = 2,
               seed: int = 0, test_speakers: list[str] | None = None) -> Split:
    """Build a split by protocol name (see :data:`PROTOCOLS`), or from explicit test speakers."""
    if test_speakers:
        return _by_speakers(df, "custom", fold, set(test_speakers), n_val, seed)
    if protocol == "emobox6":
        return emobox_ravdess(df, fold, n_val=n_val, seed=seed)
    if protocol == "speaker_kfold":
        return speaker_kfold(df, fold, k=k, n_val=n_val, seed=seed)
    if protocol == "loco":
        return leave_one_corpus_out(df, fold, n_val=n_val, seed=seed)
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
