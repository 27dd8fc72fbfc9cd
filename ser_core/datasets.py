"""Dataset adapters: every corpus becomes one manifest DataFrame.

Columns always present: ``path, emotion, speaker, gender, corpus``; RAVDESS adds
``actor, intensity, statement, repetition``. Emotions use the eight RAVDESS
names (:data:`ser_core.config.EMOTIONS`); corpora with other names are mapped,
and emotions outside the eight are kept under their own name.

The data root (``SER_DATA_DIR``) is either one corpus (RAVDESS itself, as
before) or a folder holding one subfolder per corpus, found by name
(:func:`corpus_dirs`); ``ravdess+ased`` loads and stacks several.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
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

_ASED_EMO = {"n": "neutral", "f": "fearful", "h": "happy", "s": "sad", "a": "angry"}
_ASED_RE = re.compile(r"^([nfhsa])(\d)-(\d\d)-(\d\d)-(0[12])-(\d\d)$", re.IGNORECASE)


def parse_ased(name: str) -> dict | None:
    """ASED v1: ``f2-07-01-01-31`` (emotion letter + folder number, sentence, repetition, gender, speaker)."""
    m = _ASED_RE.match(Path(name).stem)
    if not m:
        return None
    letter, _, sentence, rep, gender, spk = m.groups()
    return {"emotion": _ASED_EMO[letter.lower()], "speaker": f"ased-{spk}",
            "gender": "female" if gender == "01" else "male", "corpus": "ased",
            "sentence": int(sentence), "repetition": int(rep)}


_EMOVO_EMO = {"dis": "disgust", "gio": "happy", "neu": "neutral", "pau": "fearful", "rab": "angry",
              "sor": "surprised", "tri": "sad"}
_EMOVO_RE = re.compile(r"^(dis|gio|neu|pau|rab|sor|tri)-([fm][1-3])-([bdln]\d)$", re.IGNORECASE)


def parse_emovo(name: str) -> dict | None:
    """EMOVO: ``pau-f1-l3`` (emotion code, speaker f1-f3 / m1-m3, sentence code)."""
    m = _EMOVO_RE.match(Path(name).stem)
    if not m:
        return None
    emo, spk, sentence = (g.lower() for g in m.groups())
    return {"emotion": _EMOVO_EMO[emo], "speaker": f"emovo-{spk}", "gender": "female" if spk[0] == "f" else "male",
            "corpus": "emovo", "sentence": sentence}


_URDU_EMO = {"A": "angry", "H": "happy", "N": "neutral", "S": "sad"}
_URDU_RE = re.compile(r"^S([MF])(\d+)_F(\d+)_([AHNS])(\d+)$", re.IGNORECASE)


def parse_urdu(name: str) -> dict | None:
    """URDU: ``SM4_F2_A054`` (gender M/F and speaker number, file number, emotion letter and number)."""
    m = _URDU_RE.match(Path(name).stem)
    if not m:
        return None
    gender, spk, _, emo, _ = m.groups()
    g = gender.upper()
    return {"emotion": _URDU_EMO[emo.upper()], "speaker": f"urdu-{g}{int(spk)}",
            "gender": "male" if g == "M" else "female", "corpus": "urdu"}


PARSERS: dict[str, Callable[[str], dict | None]] = {
    "ravdess": parse_ravdess, "ased": parse_ased, "emovo": parse_emovo, "urdu": parse_urdu,
    "tess": parse_tess, "crema-d": parse_crema, "savee": parse_savee, "emodb": parse_emodb,
}


@dataclass(frozen=True)
class CorpusInfo:
    """What a user (and the README) must know of a corpus: its language, its own emotions, how to credit it."""

    title: str
    language: str
    emotions: tuple[str, ...]
    citation: str
    licence: str


CORPORA: dict[str, CorpusInfo] = {
    "ravdess": CorpusInfo(
        "RAVDESS speech", "English (North American)", EMOTIONS,
        "Livingstone SR, Russo FA (2018). The Ryerson Audio-Visual Database of Emotional Speech and Song "
        "(RAVDESS). PLoS ONE 13(5): e0196391. https://doi.org/10.1371/journal.pone.0196391",
        "CC BY-NC-SA 4.0"),
    "ased": CorpusInfo(
        "ASED v1", "Amharic", ("neutral", "happy", "sad", "angry", "fearful"),
        "Retta EA, Almekhlafi E, Sutcliffe R, Mhamed M, Ali H, Feng J (2022). A New Amharic Speech Emotion "
        "Dataset and Classification Benchmark. ACM TALLIP. https://doi.org/10.1145/3529759",
        "research use (github.com/Ethio2021/ASED_V1)"),
    "emovo": CorpusInfo(
        "EMOVO", "Italian", ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
        "Costantini G, Iaderola I, Paoloni A, Todisco M (2014). EMOVO Corpus: an Italian Emotional Speech "
        "Database. Proceedings of LREC 2014, pp. 3501-3504.",
        "research use"),
    "urdu": CorpusInfo(
        "URDU", "Urdu (talk shows, natural speech)", ("neutral", "happy", "sad", "angry"),
        "Latif S, Qayyum A, Usman M, Qadir J (2018). Cross Lingual Speech Emotion Recognition: Urdu vs. "
        "Western Languages. FIT 2018. arXiv:1812.10411.",
        "research use only"),
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
    return _majority_gender(_finish(pd.DataFrame(rows)))


def _majority_gender(df: pd.DataFrame) -> pd.DataFrame:
    """One gender per speaker: the one most of their file names give.

    ASED names five speakers' gender differently in one file out of 12-66
    (a typing slip in the corpus); a speaker counted in both genders would
    blur every per-gender figure.
    """
    known = df[df["gender"].isin(("female", "male"))]
    if known.empty:
        return df
    majority = known.groupby("speaker")["gender"].agg(lambda g: g.value_counts().index[0])
    df["gender"] = df["speaker"].map(majority).fillna(df["gender"])
    return df


def load_ravdess(root: Path | str | None = None, *, speech_only: bool = True) -> pd.DataFrame:
    """RAVDESS manifest, one row per clip, sorted by actor and file name."""
    if root is None:
        found = corpus_dirs()
        if "ravdess" not in found:
            raise DatasetError(f"no RAVDESS under the data root {data_dir()} "
                               "(set SER_DATA_DIR or run 'ser data download ravdess')")
        root = found["ravdess"]
    df = load_corpus(root, "ravdess")
    if speech_only:
        df = df[df["vocal_channel"] == "speech"]
    return df.sort_values(["actor", "path"]).reset_index(drop=True)


USER_MANIFEST = "manifest.csv"


def _is_ravdess_dir(root: Path) -> bool:
    return any(root.glob("Actor_*")) or any(parse_ravdess(f.name) for f in root.glob("*.*"))


def corpus_dirs(root: Path | str | None = None) -> dict[str, Path]:
    """The corpora under a data root, by name.

    A root that is RAVDESS itself gives ``{"ravdess": root}``; otherwise each
    subfolder named like a known corpus (``ravdess``, ``ased``, ...; any case),
    and each subfolder holding a user corpus's ``manifest.csv``, is one corpus.
    """
    root = Path(root).expanduser() if root is not None else data_dir()
    if not root.is_dir():
        return {}
    if _is_ravdess_dir(root):
        return {"ravdess": root}
    found = {}
    for sub in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name.lower()):
        name = sub.name.lower()
        if name in PARSERS or (sub / USER_MANIFEST).is_file():
            found[name] = sub
    return found


def corpus_home(name: str) -> Path:
    """Where a corpus of this name belongs under the data root: the root itself when it is (or will be)
    that one corpus (the RAVDESS-only layout), else ``<root>/<name>``."""
    root = data_dir()
    found = corpus_dirs(root)
    if name in found:
        return found[name]
    if name == "ravdess" and (not root.exists() or not any(root.iterdir())):
        return root
    return root / name


def load_named(name: str, root: Path | str | None = None) -> pd.DataFrame:
    """A corpus found under the data root by its name (see :func:`corpus_dirs`)."""
    found = corpus_dirs(root)
    if name not in found:
        where = Path(root) if root is not None else data_dir()
        have = ", ".join(found) or "none"
        raise DatasetError(f"no corpus {name!r} under the data root {where} (found: {have}); "
                           "set SER_DATA_DIR to a folder with one subfolder per corpus")
    if name == "ravdess":
        return load_ravdess(found[name])
    if name in PARSERS:
        return load_corpus(found[name], name)
    return load_csv(found[name] / USER_MANIFEST, corpus=name)


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


def load_csv(csv_path: Path | str, corpus: str | None = None) -> pd.DataFrame:
    """A user's corpus listed in a CSV with columns ``path,label[,speaker,gender]``
    (``emotion`` is accepted for ``label``).

    Relative paths are resolved against the CSV's folder; ``corpus`` names it
    (default: the CSV's file name).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"CSV not found: {csv_path}")
    try:
        raw = pd.read_csv(csv_path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_path.name} is not a readable CSV ({exc})") from exc
    raw.columns = [c.strip().lower() for c in raw.columns]
    if "label" not in raw.columns and "emotion" in raw.columns:
        raw = raw.rename(columns={"emotion": "label"})
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
        "corpus": corpus or csv_path.stem,
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
    """Load a dataset by spec: a corpus name found under the data root (``ravdess``, ``ased``,
    ``emovo``, ``urdu``, a user corpus), ``NAME:PATH`` for a named corpus elsewhere, a ``.csv``
    file, or a folder-per-label directory. ``+`` joins several: ``ravdess+ased+emovo+urdu``."""
    spec = str(spec)
    if "+" in spec:
        return combine(*(load_dataset(part) for part in spec.split("+")))
    if spec in PARSERS or ("/" not in spec and ":" not in spec and spec in corpus_dirs()):
        return load_named(spec)
    name, sep, path = spec.partition(":")
    if sep and name in PARSERS:
        return load_ravdess(path) if name == "ravdess" else load_corpus(path, name)
    p = Path(spec)
    if p.suffix.lower() == ".csv":
        return load_csv(p)
    if p.is_dir() and any(parse_ravdess(f.name) for f in p.rglob("*.*")):
        return load_ravdess(p)
    if not p.exists():
        if "/" in spec or "\\" in spec or p.suffix:
            raise DatasetError(f"dataset folder or file not found: {spec}")
        raise DatasetError(f"unknown dataset {spec!r}: not a corpus under the data root ({data_dir()}: "
                           f"{', '.join(corpus_dirs()) or 'none found'}), a CSV file or a folder")
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
