"""Dataset adapters: every corpus becomes one manifest DataFrame.

Columns always present: ``path, emotion, speaker, gender, corpus``; RAVDESS adds
``actor, intensity, statement, repetition``. Emotions use the eight RAVDESS
names (:data:`ser_core.config.EMOTIONS`); corpora with other names are mapped,
and emotions outside the eight are kept under their own name.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .audio import AUDIO_EXTENSIONS
from .config import EMOTIONS, data_dir
from .errors import DatasetError

COLUMNS = ["path", "emotion", "speaker", "gender", "corpus"]

RAVDESS_EMOTIONS = dict(zip(("01", "02", "03", "04", "05", "06", "07", "08"), EMOTIONS))
RAVDESS_INTENSITY = {"01": "normal", "02": "strong"}
RAVDESS_STATEMENT = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_RAVDESS_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def parse_ravdess(name: str) -> dict | None:
    """Parse ``MM-VV-EE-II-SS-RR-AA``; ``None`` when the name is not a RAVDESS speech clip."""
    m = _RAVDESS_RE.match(Path(name).stem)
    if not m:
        return None
    modality, channel, emo, intensity, statement, rep, actor = m.groups()
    if emo not in RAVDESS_EMOTIONS or intensity not in RAVDESS_INTENSITY or statement not in RAVDESS_STATEMENT:
        return None
    actor_n = int(actor)
    if not 1 <= actor_n <= 24:
        return None
    return {
        "emotion": RAVDESS_EMOTIONS[emo],
        "speaker": f"ravdess-{actor_n:02d}",
        "gender": "male" if actor_n % 2 else "female",
        "corpus": "ravdess",
        "actor": actor_n,
        "modality": int(modality),
        "vocal_channel": "speech" if channel == "01" else "song",
        "intensity": RAVDESS_INTENSITY[intensity],
        "statement": int(statement),
        "repetition": int(rep),
    }


_TESS_EMO = {"angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy",
             "neutral": "neutral", "ps": "surprised", "sad": "sad"}


def parse_tess(name: str) -> dict | None:
    """TESS: ``OAF_back_angry.wav`` / ``YAF_dog_ps.wav`` (two female speakers)."""
    parts = Path(name).stem.split("_")
    if len(parts) != 3 or parts[0].upper() not in ("OAF", "YAF"):
        return None
    emo = _TESS_EMO.get(parts[2].lower())
    if emo is None:
        return None
    return {"emotion": emo, "speaker": f"tess-{parts[0].upper()}", "gender": "female", "corpus": "tess",
            "word": parts[1].lower()}


_CREMA_EMO = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
_CREMA_LEVEL = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified", "X": "unspecified"}
# CREMA-D's VideoDemographics.csv: the female actors (all others are male).
CREMA_FEMALE = frozenset({
    1002, 1003, 1004, 1006, 1007, 1008, 1009, 1010, 1012, 1013, 1018, 1020, 1021, 1024, 1025, 1028,
    1029, 1030, 1037, 1043, 1046, 1047, 1049, 1052, 1053, 1054, 1055, 1056, 1058, 1060, 1061, 1063,
    1072, 1073, 1074, 1075, 1076, 1078, 1079, 1082, 1084, 1089, 1091,
})


def parse_crema(name: str) -> dict | None:
    """CREMA-D: ``1001_DFA_ANG_XX.wav`` (actor, sentence, emotion, level)."""
    parts = Path(name).stem.split("_")
    if len(parts) != 4 or not parts[0].isdigit():
        return None
    emo = _CREMA_EMO.get(parts[2].upper())
    actor = int(parts[0])
    if emo is None or not 1001 <= actor <= 1091:
        return None
    return {"emotion": emo, "speaker": f"crema-{actor}", "gender": "female" if actor in CREMA_FEMALE else "male",
            "corpus": "crema-d", "sentence": parts[1], "level": _CREMA_LEVEL.get(parts[3].upper(), "unspecified")}


_SAVEE_EMO = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad",
              "su": "surprised"}
_SAVEE_RE = re.compile(r"^(?:(DC|JE|JK|KL)_)?(a|d|f|h|n|sa|su)(\d\d)$")


def parse_savee(name: str, speaker: str | None = None) -> dict | None:
    """SAVEE: ``DC_a01.wav`` or ``a01.wav`` inside a speaker folder (four male speakers)."""
    m = _SAVEE_RE.match(Path(name).stem)
    if not m:
        return None
    spk = m.group(1) or speaker
    if spk not in ("DC", "JE", "JK", "KL"):
        return None
    return {"emotion": _SAVEE_EMO[m.group(2)], "speaker": f"savee-{spk}", "gender": "male", "corpus": "savee"}


_EMODB_EMO = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful", "F": "happy", "T": "sad",
              "N": "neutral"}
_EMODB_MALE = {"03", "10", "11", "12", "15"}
_EMODB_FEMALE = {"08", "09", "13", "14", "16"}
_EMODB_RE = re.compile(r"^(\d\d)([ab]\d\d)([WLEAFTN])([a-z])$")


def parse_emodb(name: str) -> dict | None:
    """EmoDB: ``03a01Fa.wav`` (speaker, text, emotion letter, version)."""
    m = _EMODB_RE.match(Path(name).stem)
    if not m or m.group(1) not in _EMODB_MALE | _EMODB_FEMALE:
        return None
    spk = m.group(1)
    return {"emotion": _EMODB_EMO[m.group(3)], "speaker": f"emodb-{spk}",
            "gender": "male" if spk in _EMODB_MALE else "female", "corpus": "emodb", "text": m.group(2)}


PARSERS: dict[str, Callable[[str], dict | None]] = {
    "ravdess": parse_ravdess, "tess": parse_tess, "crema-d": parse_crema, "savee": parse_savee,
    "emodb": parse_emodb,
}


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def _require_dir(root: Path, what: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{what} folder not found: {root} (set SER_DATA_DIR or run 'ser data download ravdess')")
    return root


def load_corpus(root: Path | str, corpus: str) -> pd.DataFrame:
    """Manifest of a named corpus whose file names carry the labels."""
    if corpus not in PARSERS:
        raise DatasetError(f"unknown corpus {corpus!r}; known: {', '.join(PARSERS)}")
    root = _require_dir(Path(root), corpus)
    rows = []
    for p in _audio_files(root):
        info = parse_savee(p.name, p.parent.name) if corpus == "savee" else PARSERS[corpus](p.name)
        if info is not None:
            rows.append({"path": str(p), **info})
    if not rows:
        raise DatasetError(f"no {corpus} clips found under {root}")
    return _finish(pd.DataFrame(rows))


def load_ravdess(root: Path | str | None = None, *, speech_only: bool = True) -> pd.DataFrame:
    """RAVDESS manifest, one row per clip, sorted by actor and file name."""
    df = load_corpus(root if root is not None else data_dir(), "ravdess")
    if speech_only:
        df = df[df["vocal_channel"] == "speech"]
    return df.sort_values(["actor", "path"]).reset_index(drop=True)


def load_folder(root: Path | str) -> pd.DataFrame:
    """A user's corpus laid out one folder per label: ``root/<emotion>/<clip>``.

    Speakers are unknown, so each clip counts as its own speaker group
    (splits on such data are clip-level; say so when reporting).
    """
    root = _require_dir(Path(root), "dataset")
    rows = []
    for label_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        for p in _audio_files(label_dir):
            rows.append({"path": str(p), "emotion": label_dir.name.lower(), "speaker": f"clip-{p.stem}",
                         "gender": "unknown", "corpus": root.name})
    if not rows:
        raise DatasetError(f"no audio found in label folders under {root}")
    return _finish(pd.DataFrame(rows))


def load_csv(csv_path: Path | str) -> pd.DataFrame:
    """A user's corpus listed in a CSV with columns ``path,label[,speaker,gender]``.

    Relative paths are resolved against the CSV's folder.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"CSV not found: {csv_path}")
    try:
        raw = pd.read_csv(csv_path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path.name} is not a readable CSV ({exc})") from exc
    raw.columns = [c.strip().lower() for c in raw.columns]
    missing = {"path", "label"} - set(raw.columns)
    if missing:
        raise DatasetError(f"{csv_path.name} lacks column(s): {', '.join(sorted(missing))}")
    raw = raw.dropna(subset=["path", "label"])
    paths = [str(p if Path(p).is_absolute() else (csv_path.parent / p)) for p in raw["path"].str.strip()]
    df = pd.DataFrame({
        "path": paths,
        "emotion": raw["label"].str.strip().str.lower(),
        "speaker": raw["speaker"].fillna("").str.strip() if "speaker" in raw else "",
        "gender": raw["gender"].fillna("unknown").str.strip().str.lower() if "gender" in raw else "unknown",
        "corpus": csv_path.stem,
    })
    df.loc[df["speaker"] == "", "speaker"] = ["clip-" + Path(p).stem for p in df.loc[df["speaker"] == "", "path"]]
    if df.empty:
        raise DatasetError(f"{csv_path.name} lists no clips")
    return _finish(df)


def _finish(df: pd.DataFrame) -> pd.DataFrame:
    df["gender"] = df["gender"].map(lambda g: {"m": "male", "f": "female"}.get(g, g))
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]].reset_index(drop=True)


def combine(*manifests: pd.DataFrame) -> pd.DataFrame:
    """Stack manifests of several corpora (speaker ids are corpus-prefixed, so they never collide)."""
    if not manifests:
        raise DatasetError("nothing to combine")
    return pd.concat(manifests, ignore_index=True, sort=False)


def load_dataset(spec: str | Path) -> pd.DataFrame:
    """Load a dataset by spec: ``ravdess`` (configured folder), ``NAME:PATH`` for a named
    corpus, a ``.csv`` file, or a folder-per-label directory. ``+`` joins several."""
    spec = str(spec)
    if "+" in spec:
        return combine(*(load_dataset(part) for part in spec.split("+")))
    if spec == "ravdess":
        return load_ravdess()
    name, sep, path = spec.partition(":")
    if sep and name in PARSERS:
        return load_ravdess(path) if name == "ravdess" else load_corpus(path, name)
    p = Path(spec)
    if p.suffix.lower() == ".csv":
        return load_csv(p)
    if p.is_dir() and any(parse_ravdess(f.name) for f in p.rglob("*.*")):
        return load_ravdess(p)
    return load_folder(p)


def summary(df: pd.DataFrame) -> dict:
    """Counts a user wants to see before training: clips, speakers, per emotion and gender."""
    return {
        "clips": int(len(df)),
        "speakers": int(df["speaker"].nunique()),
        "corpora": sorted(df["corpus"].unique().tolist()),
        "emotions": {k: int(v) for k, v in df["emotion"].value_counts().sort_index().items()},
        "genders": {k: int(v) for k, v in df["gender"].value_counts().sort_index().items()},
    }
