"""A pretrained speaker encoder as frozen features, probed across corpora (pre-registered: docs/preregistration-session14.md).

    python training/encoder_probe.py convert Resemblyzer-0.1.4-py3-none-any.whl   # weights -> models/voice_encoder/
    python training/encoder_probe.py vectors --dataset ravdess+ased+emovo+urdu --work runs/encoder
    python training/encoder_probe.py speakers --work runs/encoder                  # is the port a speaker encoder?
    python training/encoder_probe.py loco --work runs/encoder --out PREDICTIONS.csv [--part embedding|states]
                                          [--project-corpora] [--normalise speaker | --normalise corpus [--stat-clips N]]
    python training/encoder_probe.py loco --work runs/encoder --nested --out PREDICTIONS.csv   # candidate L
                                          [--alternative WORK ...]     # candidate WL: vector folders chosen too
    python training/encoder_probe.py cv --work runs/encoder --out PREDICTIONS.csv  # M's probe, emobox6 folds
    python training/encoder_probe.py average A.csv B.csv --out MEAN.csv            # two LOCO tables, clip by clip

``convert`` reads PyTorch's legacy ``pretrained.pt`` (inside the wheel, as PyPI serves it: ``pip download
--no-deps resemblyzer``) with pickle and numpy alone, and keeps the network's arrays (not the optimiser's).
``vectors`` computes every clip's ``ser_core.voice_encoder.clip_vector`` once, corpus by corpus, resumably.
``speakers`` checks the port without any emotion label: the equal error rate of same- against
different-speaker cosine similarity of RAVDESS utterance embeddings (a broken port is near 50 %).
``loco`` is the pre-registered probe: leave one corpus out, a multinomial logistic regression on the three
others' standardised vectors (statistics from those three only), every (corpus, emotion) cell weighing the
same; it writes out-of-fold probabilities in the layout of ``ser cv`` predictions for ``loco_report.py``.
``loco --normalise corpus|speaker`` (candidates CN, SN, docs/preregistration-session21.md) first standardises
every corpus or speaker, the held-out one too, with its own unlabelled clips' statistics: transductive.
``loco --nested`` (candidate L, docs/preregistration-session15.md) chooses the probe's C and a per-label bias
and temperature by leaving each of the three training corpora out in turn, then scores the fourth.
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import pickle
import struct
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_core import audio, datasets, splits, voice_encoder  # noqa: E402
from ser_core.config import EMOTIONS  # noqa: E402

_TORCH_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64,
                 "IntStorage": np.int32}


class _Storage:
    def __init__(self, dtype):
        self.dtype, self.data = dtype, None


class _LegacyUnpickler(pickle.Unpickler):
    """Reads the object part of PyTorch's legacy format; tensors become (storage, offset, size, stride)."""

    def __init__(self, fh, storages: dict):
        super().__init__(fh)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name.startswith("_rebuild_tensor"):
            return lambda storage, offset, size, stride, *_: ("tensor", storage, offset, tuple(size), tuple(stride))
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda t, *_: t
        if module == "torch" and name in _TORCH_DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected class {module}.{name} in the checkpoint")

    def persistent_load(self, pid):
        _, storage_type, key, _, _, _ = pid
        return self.storages.setdefault(key, _Storage(_TORCH_DTYPES[storage_type]))


def read_legacy_checkpoint(fh) -> dict:
    """A PyTorch legacy-format checkpoint as nested dicts of numpy arrays."""
    for _ in range(3):                        # magic number, protocol version, system info
        pickle.load(fh)
    storages: dict = {}
    obj = _LegacyUnpickler(fh, storages).load()
    for key in pickle.load(fh):
        s = storages[key]
        (n,) = struct.unpack("<q", fh.read(8))
        s.data = np.frombuffer(fh.read(n * np.dtype(s.dtype).itemsize), s.dtype)

    def build(o):
        if isinstance(o, tuple) and o and o[0] == "tensor":
            _, s, offset, size, stride = o
            return np.lib.stride_tricks.as_strided(s.data[offset:], size,
                                                   [k * s.data.itemsize for k in stride]).copy()
        if isinstance(o, dict):
            return {k: build(v) for k, v in o.items()}
        return o
    return build(obj)


def convert(source: Path, dest: Path = voice_encoder.WEIGHTS) -> Path:
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as z:
            fh = io.BytesIO(z.read("resemblyzer/pretrained.pt"))
    else:
        fh = open(source, "rb")
    with fh:
        state = read_legacy_checkpoint(fh)["model_state"]
    arrays = {k: np.ascontiguousarray(state[k], np.float32) for k in voice_encoder.SHAPES}
    dest.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(dest, **arrays)
    voice_encoder.load_weights.cache_clear()
    voice_encoder.load_weights(dest)          # checks the shapes
    return dest


def vectors(dataset: str, work: Path, batch: int = 64) -> None:
    w = voice_encoder.load_weights()
    write_vectors(dataset, work, voice_encoder.SAMPLE_RATE, lambda waves: voice_encoder.clip_vectors(waves, w), batch)


def write_vectors(dataset: str, work: Path, sample_rate: int, embed, batch: int) -> None:
    """Every clip's vector, corpus by corpus (``vectors_<corpus>.npz`` beside ``manifest_<corpus>.csv``), ``batch``
    clips at a time through ``embed`` (a list of waves at ``sample_rate`` -> clips x values); a corpus whose file
    exists is kept (resumable)."""
    df = datasets.load_dataset(dataset)
    work.mkdir(parents=True, exist_ok=True)
    for corpus, g in df.groupby("corpus", sort=True):
        out = work / f"vectors_{corpus}.npz"
        if out.exists():
            print(f"{corpus}: done before ({out})")
            continue
        t0, vecs = time.perf_counter(), []
        paths = g["path"].tolist()
        for a in range(0, len(paths), batch):
            vecs.append(embed([audio.load(p, sr=sample_rate) for p in paths[a:a + batch]]))
            if (a // batch) % max(1, 64 // batch) == 0 or a + batch >= len(paths):
                print(f"{corpus}: {min(a + batch, len(paths))}/{len(paths)} clips, {time.perf_counter() - t0:.0f} s",
                      flush=True)
        tmp = out.with_suffix(".tmp.npz")
        np.savez(tmp, vectors=np.concatenate(vecs), path=np.asarray([Path(p).name for p in paths]))
        tmp.rename(out)
        g.assign(path=[Path(p).name for p in paths]).to_csv(work / f"manifest_{corpus}.csv", index=False)


def load_vectors(work: Path) -> tuple[pd.DataFrame, np.ndarray]:
    frames, mats = [], []
    for f in sorted(work.glob("vectors_*.npz")):
        corpus = f.stem.removeprefix("vectors_")
        with np.load(f) as z:
            mats.append(z["vectors"])
        frames.append(pd.read_csv(work / f"manifest_{corpus}.csv", dtype={"speaker": str}))
    if not frames:
        raise SystemExit(f"no vectors in {work}: run the vectors step first")
    return pd.concat(frames, ignore_index=True), np.concatenate(mats)


def equal_error_rate(same: np.ndarray, other: np.ndarray) -> float:
    scores = np.concatenate([same, other])
    is_same = np.concatenate([np.ones(len(same)), np.zeros(len(other))])
    order = np.argsort(-scores)
    tp = np.cumsum(is_same[order]) / len(same)
    fp = np.cumsum(1 - is_same[order]) / len(other)
    k = int(np.argmin(np.abs((1 - tp) - fp)))
    return float(((1 - tp[k]) + fp[k]) / 2)


def speakers(work: Path, corpus: str = "ravdess") -> dict:
    df, x = load_vectors(work)
    rows = (df["corpus"] == corpus).to_numpy()
    emb, who = x[rows, :voice_encoder.HIDDEN], df.loc[rows, "speaker"].to_numpy()
    sim = emb @ emb.T
    iu = np.triu_indices(len(emb), 1)
    same = who[iu[0]] == who[iu[1]]
    result = {"corpus": corpus, "clips": int(rows.sum()), "speakers": int(len(set(who))),
              "mean_cosine_same": round(float(sim[iu][same].mean()), 4),
              "mean_cosine_other": round(float(sim[iu][~same].mean()), 4),
              "equal_error_rate": round(equal_error_rate(sim[iu][same], sim[iu][~same]), 4)}
    print(json.dumps(result, indent=1))
    return result


def cell_weights(df: pd.DataFrame) -> np.ndarray:
    """Every (corpus, emotion) cell of the training rows weighs the same in total (mean weight 1)."""
    counts = df.groupby(["corpus", "emotion"])["emotion"].transform("size").to_numpy(float)
    w = 1.0 / counts
    return w * len(w) / w.sum()


#: Which of a clip vector's values a probe reads: all, or (the speaker encoder's vectors only) the utterance
#: embedding or the hidden-state statistics. "all" is every value, whatever the encoder: a Whisper probe's
#: vectors (1536 values since WU2M) are twice the speaker encoder's 768, and a slice to 768 read half of them.
PARTS = {"all": slice(None), "embedding": slice(0, voice_encoder.HIDDEN),
         "states": slice(voice_encoder.HIDDEN, voice_encoder.VECTOR_SIZE)}


def corpus_offsets(x: np.ndarray, df: pd.DataFrame, rel: float = 1e-6) -> np.ndarray:
    """Orthonormal rows spanning how the same emotion's mean differs between corpora (nuisance attribute
    projection): per emotion, each corpus's mean minus the mean of those corpus means; the residuals'
    singular vectors above ``rel`` of the largest singular value. ``df``'s rows are ``x``'s, in order."""
    residuals = []
    emotion, corpus = df["emotion"].to_numpy(), df["corpus"].to_numpy()
    for emo in np.unique(emotion):
        means = np.stack([x[(emotion == emo) & (corpus == c)].mean(axis=0)
                          for c in np.unique(corpus[emotion == emo])])
        if len(means) > 1:
            residuals.append(means - means.mean(axis=0))
    if not residuals:
        return np.zeros((0, x.shape[1]), x.dtype)
    _, sv, vt = np.linalg.svd(np.concatenate(residuals), full_matrices=False)
    return vt[sv > rel * sv[0]]


def fold_table(df: pd.DataFrame, test: np.ndarray, probs: np.ndarray, labels: list[str], fold: int) -> pd.DataFrame:
    """One outer fold's held-out rows in the layout of ``ser cv`` predictions (a label the fold's probe never
    trained on is NaN)."""
    t = df[test].copy()
    t["pred"] = np.asarray(labels)[probs.argmax(axis=1)]
    t["true"] = t["emotion"]
    t["confidence"] = probs.max(axis=1)
    for lab in EMOTIONS:
        t[f"p_{lab}"] = probs[:, labels.index(lab)] if lab in labels else np.nan
    t["fold"] = fold
    return t


def write_table(parts: list[pd.DataFrame], out: Path, choices: dict | None = None) -> pd.DataFrame:
    """The folds' tables as one ``out`` CSV; ``choices`` (what each fold chose) beside it as
    ``<out stem>_choices.json``."""
    table = pd.concat(parts, ignore_index=True).rename(columns={"path": "file"}).drop(columns=["emotion"])
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    if choices is not None:
        (out.parent / f"{out.name.removesuffix('.gz').removesuffix('.csv')}_choices.json").write_text(
            json.dumps(choices, indent=1))
    return table


def rows_mask(n: int, idx: np.ndarray) -> np.ndarray:
    """A boolean mask of ``n`` rows, true at ``idx`` (a split's positions)."""
    mask = np.zeros(n, bool)
    mask[idx] = True
    return mask


def emobox6_folds(df: pd.DataFrame, chosen: dict | None = None):
    """Each emobox6 fold of ``df``'s clips, its speakers checked apart: (fold, training rows, test rows, the
    fold's C in ``chosen``, a cross-validation's choices, or None)."""
    for fold in range(1, splits.n_folds("emobox6", df=df) + 1):
        split = splits.make_split(df, "emobox6", fold, n_val=0)
        splits.check_disjoint(df, split)
        yield (fold, rows_mask(len(df), split.train), rows_mask(len(df), split.test),
               None if chosen is None else float(chosen[str(fold)]["C"]))


def standardiser(x: np.ndarray, train: np.ndarray, aug: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the ``train`` rows (and of their channel copies, when given)."""
    rows = x[train] if aug is None else np.concatenate([x[train], aug[train].reshape(-1, x.shape[1])])
    return rows.mean(axis=0), rows.std(axis=0) + 1e-6


def probe(x: np.ndarray, df: pd.DataFrame, train: np.ndarray, c: float, aug: np.ndarray | None = None,
          copy_weight: float = 1.0, stats: tuple[np.ndarray, np.ndarray] | None = None):
    """J's probe on the ``train`` rows: standardised with their statistics, every (corpus, emotion) cell
    weighing the same. ``aug`` (rows x copies x values, candidate N): channel copies of every row, those
    of the ``train`` rows trained on too, each in its clip's cell, its weight in the loss times ``copy_weight``
    (WU2W: 1/3, a clip's three copies together weigh as much as the clip). ``stats``: :func:`standardiser`'s
    (mean, sd) of the same rows, when the caller needs them too (computed once). Returns the fitted classifier
    and the standardised ``x`` (every row)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    mu, sd = stats if stats is not None else standardiser(x, train, aug)
    z = (x - mu) / sd
    rows, feats = df[train].reset_index(drop=True), z[train]
    scale = np.ones(len(rows))
    if aug is not None:
        k = aug.shape[1]
        feats = np.concatenate([feats, ((aug[train] - mu) / sd).reshape(-1, x.shape[1])])
        rows = pd.concat([rows, rows.loc[np.repeat(rows.index.to_numpy(), k)]], ignore_index=True)
        scale = np.r_[scale, np.full(len(rows) - len(scale), copy_weight)]
    clf = LogisticRegression(C=c, max_iter=2000)
    # one BLAS thread: L-BFGS's many small products cost more in waking and spinning threads than they gain
    # (a tiny cross-validation took 32 s instead of 649 on a busy 2-core machine, session 36)
    with threadpool_limits(1, user_api="blas"):
        clf.fit(feats, rows["emotion"], sample_weight=cell_weights(rows) * scale)
    return clf, z


CHANNEL_COPIES = 2      # candidates N and O: channel-augmented copies of every clip
COPY_FILES = {"white": "channel", "babble": "babble",   # a kind of copies -> its files' prefix (<prefix>_<corpus>.npz)
              "loudbabble": "loudbabble", "voice": "voice"}
# ... and the channel profile its chains are drawn from (loudbabble: other talkers in every copy, 5-15 dB; WUB);
# "voice" copies are no recording chain but another voice (other_voice, WUG)
COPY_PROFILES = {"white": "noisy", "babble": "noisy", "loudbabble": "babble"}
BABBLE_POOL = 32        # candidate O: other clips a copy's babble talkers are drawn from
OTHER_VOICE_SEMITONES = (3.0, 6.0)      # WUG: how far a copy's voice moves toward the other gender's


def other_voice(y: np.ndarray, sr: int, rng: np.random.Generator, gender: str) -> np.ndarray:
    """WUG's copy (docs/preregistration-session34.md, stage 3): the clip's pitch and formants shifted a uniform
    3-6 semitones toward the other gender's voices (a woman's down, a man's up), nothing else changed."""
    import librosa

    steps = rng.uniform(*OTHER_VOICE_SEMITONES) * (-1.0 if gender == "female" else 1.0)
    return librosa.effects.pitch_shift(np.asarray(y, np.float32), sr=sr, n_steps=steps).astype(np.float32)


def speaker_groups(df: pd.DataFrame) -> np.ndarray:
    """Each row's emobox6 group: the fold of ``emobox6`` over ``df``'s corpora that tests its speaker."""
    group = np.zeros(len(df), int)
    for fold in range(1, splits.n_folds("emobox6", df=df) + 1):
        group[splits.make_split(df, "emobox6", fold, n_val=0).test] = fold
    return group


def babble_pool(df: pd.DataFrame, group: np.ndarray, i: int, rng: np.random.Generator,
                size: int = BABBLE_POOL) -> np.ndarray:
    """Row positions of up to ``size`` other clips of row ``i``'s corpus and emobox6 group, other speakers
    first (a group with one speaker, as EMOVO's, gives that speaker's other clips). A copy that mixes in only
    these never hears a held-out speaker: under emobox6 they are in the clip's own (training) group, under
    leave-one-corpus-out (outer or nested) in the clip's own corpus."""
    same = (df["corpus"].to_numpy() == df["corpus"].iat[i]) & (group == group[i])
    same[i] = False
    other = same & (df["speaker"].to_numpy() != df["speaker"].iat[i])
    first, rest = np.flatnonzero(other), np.flatnonzero(same & ~other)
    pick = list(rng.permutation(first)[:size])
    pick += list(rng.permutation(rest)[:size - len(pick)])
    return np.sort(np.asarray(pick, int))


def channel_vectors(work: Path, copies: int = CHANNEL_COPIES, seed: int = 0, batch: int = 32,
                    kind: str = "white", embed=None, sample_rate: int = voice_encoder.SAMPLE_RATE) -> None:
    """Every clip's vector after ``copies`` random recording chains (``channel.random_channel``, profile
    ``noisy``), seeded by clip name and copy; resumable by corpus (``<prefix>_<corpus>.npz``, rows in the
    order of ``vectors_<corpus>.npz``); asked for more copies than a kept file holds, it adds the missing ones
    (copy ``k`` is the same whenever it is made). ``kind="white"`` (candidate N): white noise only, no other clip is
    mixed in. ``kind="babble"`` (candidate O): babble as the networks' augmentation makes it, its talkers from
    :func:`babble_pool`. ``embed`` and ``sample_rate`` as in :func:`channel_shifts`: the encoder whose vectors
    ``work`` holds, by default the speaker encoder's. ``kind="loudbabble"`` (WUB): other talkers in every copy
    (profile ``babble``); ``kind="voice"`` (WUG): :func:`other_voice`, no recording chain."""
    import zlib

    from ser_core import channel

    if embed is None:
        w = voice_encoder.load_weights()
        embed = lambda waves: voice_encoder.clip_vectors(waves, w)      # noqa: E731
    rate = sample_rate
    df, _ = load_vectors(work)
    talkers = kind in COPY_PROFILES and kind != "white"          # babble of other clips may be mixed in
    group = speaker_groups(df) if talkers else None
    for corpus in sorted(df["corpus"].unique()):
        out = work / f"{COPY_FILES[kind]}_{corpus}.npz"
        rows = np.flatnonzero((df["corpus"] == corpus).to_numpy())
        names = df["path"].to_numpy()[rows]
        kept = np.zeros((len(rows), 0, 0))
        if out.exists():
            with np.load(out) as z:
                if list(z["path"]) != list(names):
                    raise SystemExit(f"{out} does not hold the clips of vectors_{corpus}.npz in their order")
                kept = z["vectors"]
            if kept.shape[1] >= copies:
                print(f"{corpus}: done before ({out})")
                continue
        new = range(kept.shape[1], copies)      # more copies asked for than kept: only the missing ones are made
        m = datasets.load_dataset(corpus)
        full = dict(zip(m["path"].map(lambda q: Path(q).name), m["path"]))
        waves_of = {}
        if talkers:              # the whole corpus once: every clip is some other clip's talker
            waves_of = {i: audio.load(full[df["path"].iat[i]], sr=rate) for i in rows}
        t0, vecs = time.perf_counter(), []
        for a in range(0, len(rows), batch):
            waves = []
            for i, name in zip(rows[a:a + batch], names[a:a + batch]):
                y = waves_of[i] if waves_of else audio.load(full[name], sr=rate)
                others = None
                if talkers:
                    pool = babble_pool(df, group, i, np.random.default_rng([seed, zlib.crc32(name.encode()), 1 << 20]))
                    others = [waves_of[j] for j in pool]
                rngs = [np.random.default_rng([seed, zlib.crc32(name.encode()), k]) for k in new]
                if kind == "voice":
                    waves += [other_voice(y, rate, r, df["gender"].iat[i]) for r in rngs]
                else:
                    waves += [channel.random_channel(y, rate, r, others, COPY_PROFILES[kind]) for r in rngs]
            vecs.append(embed(waves).reshape(len(waves) // len(new), len(new), -1))
            print(f"{corpus}: {min(a + batch, len(rows))}/{len(rows)} clips, {time.perf_counter() - t0:.0f} s",
                  flush=True)
        made = np.concatenate(vecs)
        tmp = out.with_suffix(".tmp.npz")
        np.savez(tmp, vectors=np.concatenate([kept, made], axis=1) if kept.size else made,
                 path=np.asarray(names, dtype=str))
        tmp.rename(out)


def copy_kinds(spec: str) -> list[tuple[str, int | None]]:
    """``--channel-copies``' kinds and counts: ``babble`` (every copy kept), ``babble:1`` (each clip's first), or
    several joined by ``+`` (``babble:1+loudbabble:2``, WUB)."""
    out = []
    for part in spec.split("+"):
        kind, _, n = part.partition(":")
        if kind not in COPY_FILES or (n and not n.isdigit()):
            raise argparse.ArgumentTypeError(f"{part!r}: a kind of copies ({', '.join(sorted(COPY_FILES))}), "
                                             "optionally with a count (babble:1)")
        out.append((kind, int(n) if n else None))
    return out


def copy_spec(spec: str) -> str:
    copy_kinds(spec)                    # refused here, with the kinds, rather than when the copies are read
    return spec


def load_channel_vectors(work: Path, df: pd.DataFrame, kind: str = "white", copies: int | None = None) -> np.ndarray:
    """The channel copies of :func:`load_vectors`'s rows, in its order (rows x copies x values): the first
    ``copies`` of each clip (None: all kept). ``kind`` may name several kinds with counts (:func:`copy_kinds`,
    ``babble:1+loudbabble:2``): their copies side by side, ``copies`` then the count of a kind given none."""
    parts = copy_kinds(kind)
    if len(parts) > 1 or parts[0][1] is not None:
        return np.concatenate([load_channel_vectors(work, df, k, copies if n is None else n) for k, n in parts],
                              axis=1)
    mats = []
    for corpus in sorted(df["corpus"].unique()):
        f = work / f"{COPY_FILES[kind]}_{corpus}.npz"
        if not f.exists():
            raise SystemExit(f"no {kind} channel copies in {work} for {corpus}: run the channel-vectors step first")
        with np.load(f) as z:
            if list(z["path"]) != df.loc[df["corpus"] == corpus, "path"].tolist():
                raise SystemExit(f"{f} does not hold the clips of vectors_{corpus}.npz in their order")
            if copies is not None and z["vectors"].shape[1] < copies:
                raise SystemExit(f"{f} holds {z['vectors'].shape[1]} copies of each clip, not {copies}: "
                                 "run the channel step with more copies")
            mats.append(z["vectors"][:, :copies])
    return np.concatenate(mats)


#: What each row is standardised with before the probe (candidates CN and SN, docs/preregistration-session21.md):
#: the statistics of its own corpus, or of its own speaker, from unlabelled clips.
NORMALISE = ("corpus", "speaker")


def normalisation_groups(df: pd.DataFrame, by: str) -> np.ndarray:
    """Each row's group for ``--normalise``: its corpus, or its corpus and speaker."""
    if by == "corpus":
        return df["corpus"].to_numpy(str)
    return (df["corpus"] + "/" + df["speaker"].astype(str)).to_numpy(str)


def group_standardise(x: np.ndarray, groups: np.ndarray, fit: np.ndarray | None = None) -> np.ndarray:
    """Every row standardised with the mean and standard deviation of its own group's rows, counting only the
    rows where ``fit`` is true (default: all). A group with one counted row only has its mean removed (standard
    deviation 1). No label is read: this is what a held-out corpus's unlabelled clips allow."""
    z = np.empty_like(x, dtype=float)
    fit = np.ones(len(x), bool) if fit is None else fit
    for g in np.unique(groups):
        rows = groups == g
        counted = x[rows & fit]
        if len(counted) == 0:
            raise ValueError(f"group '{g}' has no row to take its statistics from")
        sd = counted.std(axis=0) + 1e-6 if len(counted) > 1 else np.ones(x.shape[1])
        z[rows] = (x[rows] - counted.mean(axis=0)) / sd
    return z


def loco(work: Path, out: Path, c: float = 1.0, part: str = "all", project: bool = False,
         normalise: str | None = None, stat_clips: int | None = None, seed: int = 0) -> pd.DataFrame:
    """J's probe, leaving one corpus out. ``normalise`` (CN: "corpus", SN: "speaker"): every row first
    standardised by its own group (``group_standardise``), the held-out corpus's groups from its unlabelled
    clips (transductive); ``stat_clips``: those of the held-out corpus from only that many of its clips, drawn
    at random (what a small archive gives; exploratory)."""
    from sklearn.linear_model import LogisticRegression

    df, x = load_vectors(work)
    if part != "all" and x.shape[1] != voice_encoder.VECTOR_SIZE:
        raise SystemExit(f"--part {part} splits the speaker encoder's {voice_encoder.VECTOR_SIZE} values; "
                         f"{work}'s vectors have {x.shape[1]}")
    x = x[:, PARTS[part]]
    groups = normalisation_groups(df, normalise) if normalise else None
    rng = np.random.default_rng(seed)
    parts = []
    for fold, held in enumerate(splits.corpora(df), 1):      # the folds of `ser cv --protocol loco`
        train = (df["corpus"] != held).to_numpy()
        if groups is not None:
            fit = None
            if stat_clips is not None:
                fit = train.copy()
                fit[rng.choice(np.flatnonzero(~train), min(stat_clips, int((~train).sum())), replace=False)] = True
            x_fold = group_standardise(x, groups, fit)
        else:
            x_fold = x
        mu, sd = x_fold[train].mean(axis=0), x_fold[train].std(axis=0) + 1e-6
        z = (x_fold - mu) / sd
        if project:
            rows = df[train].reset_index(drop=True)
            basis = corpus_offsets(z[train], rows)
            z = z - (z @ basis.T) @ basis
            print(f"fold {fold}: {len(basis)} corpus directions projected out", flush=True)
        clf = LogisticRegression(C=c, max_iter=2000)
        clf.fit(z[train], df.loc[train, "emotion"], sample_weight=cell_weights(df[train]))
        parts.append(fold_table(df, ~train, clf.predict_proba(z[~train]), list(clf.classes_), fold))
        print(f"fold {fold}: {held} held out, {train.sum()} training clips", flush=True)
    return write_table(parts, out)


# ---------------------------------------------------------------- candidate L (docs/preregistration-session15.md)
#: The regularisations the nested folds choose from (candidate L).
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
BIAS_L2 = 1e-3      # keeps the bias of a label seldom present near 0


def own_accuracy(logits: np.ndarray, labels: list[str], truth: np.ndarray) -> float:
    """Accuracy with answers restricted to the emotions the clips' corpus has (``loco_report``'s own-emotion
    accuracy), among the labels the probe knows."""
    own = [k for k, lab in enumerate(labels) if lab in set(truth)]
    return float((np.asarray(labels)[np.asarray(own)[logits[:, own].argmax(axis=1)]] == truth).mean())


def fit_correction(folds: list[tuple[np.ndarray, list[str], np.ndarray, np.ndarray]],
                   labels: list[str], l2: float = BIAS_L2) -> tuple[float, dict[str, float]]:
    """One temperature and one bias per label, ``softmax(logits / T + b)``, minimising the weighted
    cross-entropy of held-out clips pooled over folds of (logits, the fold's labels, true labels, weights);
    a clip whose label its fold's probe never trained on cannot be scored and is left out."""
    from scipy.optimize import minimize

    prepared = []
    for logits, fold_labels, truth, w in folds:
        idx = np.array([labels.index(lab) for lab in fold_labels])
        known = np.isin(truth, fold_labels)
        y = np.array([fold_labels.index(t) for t in truth[known]])
        prepared.append((logits[known], idx, y, w[known]))
    total = sum(p[3].sum() for p in prepared)

    def loss(theta):
        t, b = np.exp(theta[0]), theta[1:]
        value, grad = l2 * b @ b, np.concatenate([[0.0], 2 * l2 * b])
        for logits, idx, y, w in prepared:
            s = logits / t + b[idx]
            s = s - s.max(axis=1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=1, keepdims=True)
            rows = np.arange(len(y))
            value += float(-(w * np.log(p[rows, y] + 1e-300)).sum() / total)
            d = p.copy()
            d[rows, y] -= 1.0
            d *= (w / total)[:, None]
            np.add.at(grad[1:], idx, d.sum(axis=0))
            grad[0] += float((d * (-logits / t)).sum())
        return value, grad

    res = minimize(loss, np.zeros(1 + len(labels)), jac=True, method="L-BFGS-B")
    return float(np.exp(res.x[0])), {lab: float(v) for lab, v in zip(labels, res.x[1:])}


def choose_c(x: np.ndarray, df: pd.DataFrame, train: np.ndarray, grid=C_GRID, what: str = "",
             aug: np.ndarray | None = None, copy_weight: float = 1.0):
    """Nested leave-one-corpus-out inside the ``train`` rows: each of their corpora is held out in turn and
    a probe of every C in ``grid`` is trained on the others. Returns the C with the best mean own-emotion
    accuracy over those held-out corpora (a tie goes to the smaller C), every C's mean, and every C's
    held-out (logits, labels, truth, weights) for :func:`fit_correction`."""
    inner = splits.corpora(df[train])
    scores, kept = {}, {}
    for c in grid:
        accs, folds = [], []
        for inner_held in inner:
            itest = train & (df["corpus"] == inner_held).to_numpy()
            itrain = train & ~itest
            clf, z = probe(x, df, itrain, c, aug, copy_weight)      # the inner held-out corpus is scored clean
            logits = clf.decision_function(z[itest])
            truth = df.loc[itest, "emotion"].to_numpy()
            accs.append(own_accuracy(logits, list(clf.classes_), truth))
            # 1 / the cell's size: every (inner corpus, emotion) cell weighs the same, pooled over corpora
            w = 1.0 / df[itest].groupby("emotion")["emotion"].transform("size").to_numpy(float)
            folds.append((logits, list(clf.classes_), truth, w))
        scores[c], kept[c] = float(np.mean(accs)), folds
        print(f"{what}: C={c}: inner own accuracy "
              f"{', '.join(f'{h} {100 * a:.1f}' for h, a in zip(inner, accs))} (mean {100 * scores[c]:.1f})",
              flush=True)
    return max(grid, key=lambda c: (scores[c], -c)), scores, kept


def best_set(tried: dict[str, tuple[float, dict]]) -> str:
    """The vector folder whose chosen C scored best in the nested folds (``tried``: name -> (its C, every C's
    mean inner accuracy), in the order given); a tie keeps the earlier folder."""
    names = list(tried)
    return max(names, key=lambda n: (tried[n][1][tried[n][0]], -names.index(n)))


def nested_loco(work: Path, out: Path, fixed_c: float | None = None, correct: bool = True,
                copies: str | None = None, alternatives: tuple[Path, ...] = (), n_copies: int | None = None,
                copy_weight: float = 1.0) -> pd.DataFrame:
    """Candidate L: leave one corpus out, with C and the output correction chosen by leaving each training
    corpus out in turn (the outer held-out corpus gives nothing to either). ``fixed_c`` and
    ``correct=False`` are the exploratory halves; the choices go to ``<out stem>_choices.json``.
    ``alternatives`` (candidate WL, docs/preregistration-session31.md): other vector folders of the same clips
    (another layer of the same encoder); the nested folds then choose the folder with C, a tie going to
    ``work``."""
    df, x = load_vectors(work)
    sets = {str(work): x}
    for alt in alternatives:
        df_alt, x_alt = load_vectors(alt)
        if not df_alt["path"].equals(df["path"]):
            raise SystemExit(f"{alt} holds other clips, or another order, than {work}")
        sets[str(alt)] = x_alt
    aug = load_channel_vectors(work, df, copies, n_copies) if copies else None
    labels = [lab for lab in EMOTIONS if lab in set(df["emotion"])]
    parts, choices = [], {}
    for fold, held in enumerate(splits.corpora(df), 1):
        train = (df["corpus"] != held).to_numpy()
        grid = (fixed_c,) if fixed_c is not None else C_GRID
        tried = {name: choose_c(x_set, df, train, grid, f"fold {fold} ({held} out)"
                                + (f", {name}" if alternatives else ""), aug, copy_weight)
                 for name, x_set in sets.items()}
        name = best_set({n: (best, scores) for n, (best, scores, _) in tried.items()})
        best, scores, kept = tried[name]
        x = sets[name]
        temperature, bias = fit_correction(kept[best], labels) if correct else (1.0, {})
        clf, z = probe(x, df, train, best, aug, copy_weight)
        fold_labels = list(clf.classes_)
        s = clf.decision_function(z[~train]) / temperature + np.array([bias.get(lab, 0.0) for lab in fold_labels])
        s = s - s.max(axis=1, keepdims=True)
        probs = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
        parts.append(fold_table(df, ~train, probs, fold_labels, fold))
        choices[held] = {"C": best, "inner_own_accuracy": {str(c): round(v, 4) for c, v in scores.items()},
                         **({"vectors": name} if alternatives else {}),
                         "temperature": round(temperature, 4), "bias": {k: round(v, 4) for k, v in bias.items()}}
        print(f"fold {fold}: {held} held out: C={best}, T={temperature:.2f}, "
              f"b={ {k: round(v, 2) for k, v in bias.items()} }", flush=True)
    return write_table(parts, out, choices)


def speaker_cv(work: Path, out: Path, protocol: str = "emobox6", copies: str | None = None,
               n_copies: int | None = None, copy_weight: float = 1.0) -> pd.DataFrame:
    """The probe with C chosen by nested leave-one-corpus-out (M's first half, no correction) under a speaker
    protocol: each fold's C is chosen inside its training speakers, each corpus's in turn held out; the
    fold's test speakers give nothing to the choice, the standardisation or the probe."""
    df, x = load_vectors(work)
    df = df.reset_index(drop=True)
    aug = load_channel_vectors(work, df, copies, n_copies) if copies else None
    parts, choices = [], {}
    for fold in range(1, splits.n_folds(protocol, df=df) + 1):
        split = splits.make_split(df, protocol, fold, n_val=0)
        splits.check_disjoint(df, split)
        train, test = rows_mask(len(df), split.train), rows_mask(len(df), split.test)
        best, scores, _ = choose_c(x, df, train, C_GRID, f"fold {fold}", aug, copy_weight)
        clf, z = probe(x, df, train, best, aug, copy_weight)
        parts.append(fold_table(df, test, clf.predict_proba(z[test]), list(clf.classes_), fold))
        choices[str(fold)] = {"C": best, "inner_own_accuracy": {str(c): round(v, 4) for c, v in scores.items()}}
        print(f"fold {fold}: {test.sum()} test clips, C={best}", flush=True)
    return write_table(parts, out, choices)


def speaker_summary(table: Path, out: Path | None = None) -> dict:
    """The default's rule's figures from a speaker-fold predictions table: per corpus accuracy and UAR (own
    emotions), RAVDESS's female-male gap with its speaker-bootstrap interval, pooled ECE before and after a
    temperature (cross-fitted by fold: no fold's temperature saw its clips)."""
    from ser_core import calibration, evaluation

    t = pd.read_csv(table, dtype={"speaker": str})
    labels = [c[2:] for c in t.columns if c.startswith("p_")]
    per = evaluation.per_corpus(t, labels)
    calib = calibration.fit_table(t)
    res = {"corpora": {c: {"accuracy": round(e["accuracy"], 4), "uar": round(e["uar"], 4),
                           "own_accuracy": round(e["own"]["accuracy"], 4),
                           "per_gender": {k: round(v, 4) for k, v in e["per_gender"].items()}}
                       for c, e in per.items()},
           "ece_before": calib.ece_before, "ece_after_cross_fitted": calib.ece_after}
    if (t["corpus"] == "ravdess").any():
        gap = evaluation.gender_gap(t[t["corpus"] == "ravdess"])
        res["ravdess_gender_gap"] = {"gap": round(float(gap["gap"]), 4), "ci95": [round(float(v), 4) for v in gap["ci95"]]}
    for c, e in res["corpora"].items():
        print(f"{c:<8} accuracy {100 * e['accuracy']:.1f} %, UAR {100 * e['uar']:.1f} %, own emotions "
              f"{100 * e['own_accuracy']:.1f} %, by gender {e['per_gender']}")
    print(f"pooled ECE {res['ece_before']} before, {res['ece_after_cross_fitted']} after (cross-fitted); "
          f"RAVDESS female - male {res.get('ravdess_gender_gap')}")
    if out:
        out.write_text(json.dumps(res, indent=1))
    return res


def channel_shifts(work: Path, cv_dir: Path | None, choices: Path, out: Path, *, corpus: str = "ravdess",
                   folds: list[int] | None = None, seed: int = 0, copies: str | None = None,
                   embed=None, sample_rate: int = voice_encoder.SAMPLE_RATE, n_copies: int | None = None,
                   copy_weight: float = 1.0) -> pd.DataFrame:
    """M's channel-shift check (the default's rule): every emobox6 fold's test clips of ``corpus``, clean and
    through each shift of ``ser_core.channel.SHIFTS`` exactly as ``ser robustness`` makes them (same seeds,
    babble from the fold's training speakers), scored by the fold's H network (``cv_dir``, raw
    probabilities), by the fold's probe (C from ``choices``, trained on the clean vectors of the fold's
    training speakers) and by their mean. One row per clip and condition; no speech is a wrong answer.
    ``embed`` (waves at ``sample_rate`` -> clips x values): the encoder whose vectors ``work`` holds, by default
    the speaker encoder's; ``cv_dir`` None scores the probe alone (``pred_H`` and ``pred_M`` left empty).
    The shifted clips' vectors are kept in ``work`` (``shifted_<corpus>_fold<K>_seed<S>.npz``) and reused, so
    probes trained another way (``copies``) are scored on the same vectors without running the encoder again."""
    from ser_core import channel, robustness
    from ser_core.predict import load_predictor

    df, x = load_vectors(work)
    df = df.reset_index(drop=True)
    aug = load_channel_vectors(work, df, copies, n_copies) if copies else None
    chosen = json.loads(Path(choices).read_text())
    manifest = datasets.load_dataset("+".join(splits.corpora(df)))
    full = dict(zip(manifest["path"].map(lambda q: Path(q).name), manifest["path"]))
    if embed is None:
        w = voice_encoder.load_weights()
        embed = lambda waves: voice_encoder.clip_vectors(waves, w)      # noqa: E731
    rows = []
    for fold in folds or range(1, splits.n_folds("emobox6", df=df) + 1):
        split = splits.make_split(df, "emobox6", fold, n_val=0)
        train = rows_mask(len(df), split.train)
        test = df.iloc[split.test]
        test = test[test["corpus"] == corpus].assign(file=lambda t: t["path"])
        mu, sd = standardiser(x, train, aug)
        clf, _ = probe(x, df, train, chosen[str(fold)]["C"], aug, copy_weight, stats=(mu, sd))
        net = None
        if cv_dir is not None:
            net = load_predictor(cv_dir / f"fold-{fold}" / "model", calibrated=False)
            if net.cfg.sample_rate != sample_rate:
                raise SystemExit(f"fold {fold}'s network hears {net.cfg.sample_rate} Hz, the encoder {sample_rate}")
        labels = list(net.labels) if net is not None else [lab for lab in EMOTIONS if lab in clf.classes_]
        cols = [list(clf.classes_).index(lab) if lab in clf.classes_ else None for lab in labels]
        babble = robustness._babble_pool(manifest.assign(speaker=manifest["speaker"].astype(str)), test, seed, fold)
        cache = work / f"shifted_{corpus}_fold{fold}_seed{seed}.npz"
        conditions, made, p_net = [robustness.CLEAN, *channel.SHIFTS], [], []
        vecs = load_shifted(cache, test["path"].tolist(), conditions) if cache.exists() else None
        t0 = time.perf_counter()
        # nothing to hear when every vector is kept from an earlier run and no network is scored
        to_hear = test.iterrows() if vecs is None or net is not None else iter(())
        for n, (_, r) in enumerate(to_hear, 1):
            versions = robustness.shifted_versions(full[r["path"]], sample_rate, list(channel.SHIFTS), seed, babble)
            if list(versions) != conditions:
                raise SystemExit(f"shifted_versions gave {list(versions)}, not {conditions}")
            if vecs is None:
                made.append(embed(list(versions.values())))
            if net is not None:
                preds = [net.predict_array(y, sample_rate, name=r["path"]) for y in versions.values()]
                p_net.append([np.array([p.probabilities.get(lab, 0.0) for lab in labels]) if p.best else None
                              for p in preds])
            if n % 40 == 0 or n == len(test):
                print(f"fold {fold}: {n}/{len(test)} clips, {time.perf_counter() - t0:.0f} s", flush=True)
        if vecs is None:
            vecs = np.stack(made)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, vectors=vecs, path=np.asarray(test["path"].tolist(), dtype=str),
                     conditions=np.asarray(conditions))
            tmp.rename(cache)
        for n, (_, r) in enumerate(test.iterrows()):
            p_probe = clf.predict_proba((vecs[n] - mu) / sd)
            for k, (shift, pp) in enumerate(zip(conditions, p_probe)):
                ph = p_net[n][k] if net is not None else None
                pv = np.array([pp[j] if j is not None else 0.0 for j in cols])
                pm = (ph + pv) / 2 if ph is not None else None
                rows.append({"fold": fold, "file": r["path"], "speaker": r["speaker"], "gender": r["gender"],
                             "true": r["emotion"], "shift": shift,
                             "pred_H": labels[int(ph.argmax())] if ph is not None else "",
                             "pred_probe": labels[int(pv.argmax())],
                             "pred_M": labels[int(pm.argmax())] if pm is not None else ""})
    table = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table


def load_shifted(cache: Path, paths: list[str], conditions: list[str]) -> np.ndarray:
    """The shifted test clips' vectors an earlier :func:`channel_shifts` run kept (clips x conditions x values);
    the shifts are seeded, so a second probe on the same folder is scored on the very same sounds."""
    with np.load(cache) as z:
        if list(z["path"]) != paths or list(z["conditions"]) != conditions:
            raise SystemExit(f"{cache} holds other clips or conditions than this fold's: remove it to remake it")
        return z["vectors"]


def shift_summary(tables: list[Path], out: Path | None = None, folds: list[int] | None = None) -> dict:
    """Accuracy per condition and the drop from clean (points) of H, the probe and M, from
    :func:`channel_shifts` tables (folds split between processes are joined here; ``folds``: only these)."""
    t = pd.concat([pd.read_csv(f, keep_default_na=False) for f in tables], ignore_index=True)
    if folds is not None:
        t = t[t["fold"].isin(folds)]
    res = {"clips": int((t["shift"] == "clean").sum()), "folds": sorted(int(f) for f in t["fold"].unique())}
    for who in ("H", "probe", "M"):
        if not (t[f"pred_{who}"] != "").any():          # a probe scored alone (no H, so no M)
            continue
        acc = t.assign(ok=t[f"pred_{who}"] == t["true"]).groupby("shift")["ok"].mean()
        res[who] = {s: {"accuracy": round(float(a), 4), "drop": round(100 * float(acc["clean"] - a), 2)}
                    for s, a in acc.items()}
        worst = max((s for s in acc.index if s != "clean"), key=lambda s: acc["clean"] - acc[s])
        res[who]["max_drop"] = {"shift": worst, "points": round(100 * float(acc["clean"] - acc[worst]), 2)}
        print(f"{who:<6} clean {100 * acc['clean']:.1f} %; "
              + ", ".join(f"{s} {100 * acc[s]:.1f}" for s in acc.index if s != "clean")
              + f"; largest drop {res[who]['max_drop']['points']} points ({worst})")
    if out:
        out.write_text(json.dumps(res, indent=1))
    return res


def average(a: Path, b: Path, out: Path) -> pd.DataFrame:
    """The clip-by-clip mean of two leave-one-corpus-out tables' probabilities (a label that one table's
    fold never trained on counts as 0 there), and the answer it gives."""
    ta, tb = (pd.read_csv(p, dtype={"speaker": str}).set_index(["corpus", "file"]) for p in (a, b))
    if set(ta.index) != set(tb.index) or not (ta["fold"] == tb.loc[ta.index, "fold"]).all():
        raise SystemExit(f"{a} and {b} do not hold the same clips in the same folds")
    tb = tb.loc[ta.index]
    cols = [f"p_{lab}" for lab in EMOTIONS]
    pa = ta.reindex(columns=cols).fillna(0.0).to_numpy()
    pb = tb.reindex(columns=cols).fillna(0.0).to_numpy()
    mean = (pa + pb) / 2
    both = ta.reindex(columns=cols).notna().to_numpy() | tb.reindex(columns=cols).notna().to_numpy()
    table = ta.copy()
    for k, col in enumerate(cols):
        table[col] = np.where(both[:, k], mean[:, k], np.nan)
    table["pred"] = np.asarray(EMOTIONS)[np.where(both, mean, -1).argmax(axis=1)]
    table["confidence"] = np.where(both, mean, -1).max(axis=1)
    table = table.reset_index()
    table.to_csv(out, index=False)
    return table


def copy_weight_arg(text: str) -> float:
    """``--copy-weight``: a positive number (each copy row's weight in the probe's loss)."""
    try:
        w = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (np.isfinite(w) and w > 0):
        raise argparse.ArgumentTypeError(f"a copy's weight must be positive, not {text}")
    return w


def add_copy_weight(p) -> None:
    p.add_argument("--copy-weight", type=copy_weight_arg, default=1.0, metavar="W",
                   help="with --channel-copies: each copy row's weight in the probe's loss (WU2W: 0.333)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("convert")
    p.add_argument("source", type=Path, help="Resemblyzer's wheel, or its pretrained.pt")
    p = sub.add_parser("vectors")
    p.add_argument("--dataset", default="ravdess+ased+emovo+urdu")
    p.add_argument("--work", type=Path, default=Path("runs/encoder"))
    p = sub.add_parser("channel-vectors", help="every clip's vector after two random recording chains (candidates N, O)")
    p.add_argument("--work", type=Path, default=Path("runs/encoder"))
    p.add_argument("--copies", type=int, default=CHANNEL_COPIES)
    p.add_argument("--babble", action="store_true",
                   help="babble allowed, talkers from the clip's own corpus and emobox6 group (candidate O)")
    p = sub.add_parser("speakers")
    p.add_argument("--work", type=Path, default=Path("runs/encoder"))
    p.add_argument("--corpus", default="ravdess")
    p = sub.add_parser("loco")
    p.add_argument("--work", type=Path, default=Path("runs/encoder"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--part", choices=sorted(PARTS), default="all",
                   help="which values of a clip vector the probe reads (the registered candidate: all)")
    p.add_argument("--project-corpora", action="store_true",
                   help="first project out how the training corpora's same-emotion means differ (candidate K)")
    p.add_argument("--nested", action="store_true",
                   help="choose C and a per-label bias and temperature by leaving each training corpus out (candidate L)")
    p.add_argument("--normalise", choices=NORMALISE,
                   help="first standardise every corpus (CN) or speaker (SN) with its own clips' statistics, "
                        "the held-out corpus's too, unlabelled: a transductive protocol")
    p.add_argument("--stat-clips", type=int, metavar="N",
                   help="with --normalise corpus: the held-out corpus's statistics from N random clips of it (exploratory)")
    p.add_argument("--c", type=float, help="with --nested: this C instead of choosing one (exploratory)")
    p.add_argument("--no-correction", action="store_true", help="with --nested: no bias or temperature (exploratory)")
    p.add_argument("--alternative", type=Path, action="append", default=[], metavar="WORK",
                   help="with --nested: another vector folder of the same clips, chosen between with C (WL)")
    p.add_argument("--channel-copies", nargs="?", const="white", type=copy_spec,
                   help="with --nested: also train on the clips' channel copies (white: candidate N, babble: O; "
                        "several: babble:1+loudbabble:2)")
    p.add_argument("--n-copies", type=int, metavar="N", help="with --channel-copies: each clip's first N copies (default: all kept)")
    add_copy_weight(p)
    p = sub.add_parser("cv", help="the nested-C probe (M's first half) under a speaker protocol")
    p.add_argument("--work", type=Path, default=Path("runs/encoder"))
    p.add_argument("--protocol", default="emobox6")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--channel-copies", nargs="?", const="white", type=copy_spec,
                   help="also train on the clips' channel copies (white: candidate N, babble: O; several: "
                        "babble:1+loudbabble:2, WUB)")
    p.add_argument("--n-copies", type=int, metavar="N", help="with --channel-copies: each clip's first N copies (default: all kept)")
    add_copy_weight(p)
    p = sub.add_parser("summary", help="the default's rule's figures from a speaker-fold predictions table")
    p.add_argument("table", type=Path)
    p.add_argument("--out", type=Path)
    p = sub.add_parser("shifts", help="M's channel-shift check on the emobox6 folds (H's cv folder, the probe's choices)")
    p.add_argument("--work", type=Path, default=Path("runs/encoder"))
    p.add_argument("--cv", type=Path, required=True, help="H's emobox6 cross-validation folder (fold-K/model)")
    p.add_argument("--choices", type=Path, required=True, help="the probe's emobox6 choices (from the cv step)")
    p.add_argument("--folds", help="comma-separated subset of folds (two processes can split them)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--channel-copies", nargs="?", const="white", type=copy_spec,
                   help="the probe also trains on channel copies (white: candidate N, babble: O)")
    p.add_argument("--n-copies", type=int, metavar="N", help="with --channel-copies: each clip's first N copies (default: all kept)")
    add_copy_weight(p)
    p = sub.add_parser("shift-summary", help="join shifts tables and report accuracy and drop per condition")
    p.add_argument("tables", type=Path, nargs="+")
    p.add_argument("--out", type=Path)
    p = sub.add_parser("average")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.step == "convert":
        print(convert(args.source))
    elif args.step == "vectors":
        vectors(args.dataset, args.work)
    elif args.step == "channel-vectors":
        channel_vectors(args.work, args.copies, kind="babble" if args.babble else "white")
    elif args.step == "speakers":
        speakers(args.work, args.corpus)
    elif args.step == "cv":
        speaker_cv(args.work, args.out, args.protocol, copies=args.channel_copies, n_copies=args.n_copies,
                   copy_weight=args.copy_weight)
    elif args.step == "summary":
        speaker_summary(args.table, args.out)
    elif args.step == "shifts":
        channel_shifts(args.work, args.cv, args.choices, args.out,
                       folds=[int(f) for f in args.folds.split(",")] if args.folds else None,
                       copies=args.channel_copies, n_copies=args.n_copies, copy_weight=args.copy_weight)
    elif args.step == "shift-summary":
        shift_summary(args.tables, args.out)
    elif args.step == "average":
        average(args.a, args.b, args.out)
    elif args.nested:
        nested_loco(args.work, args.out, fixed_c=args.c, correct=not args.no_correction, copies=args.channel_copies,
                    alternatives=tuple(args.alternative), n_copies=args.n_copies, copy_weight=args.copy_weight)
    else:
        if args.alternative:
            ap.error("--alternative goes with --nested (the nested folds choose between the folders)")
        if args.stat_clips is not None and args.normalise != "corpus":
            # a held-out speaker none of whose clips were drawn would have no statistics at all
            ap.error("--stat-clips goes with --normalise corpus")
        if args.stat_clips is not None and args.stat_clips < 2:
            ap.error("--stat-clips needs at least 2 clips (a standard deviation)")
        loco(args.work, args.out, part=args.part, project=args.project_corpora, normalise=args.normalise,
             stat_clips=args.stat_clips)
    return 0


if __name__ == "__main__":
    sys.exit(main())
