"""Bring your own data: check a user's corpus and store it under the data root.

A user corpus arrives as

* a zip (or a folder) with one folder per emotion: ``happy/clip1.wav``, ``sad/x.mp3`` ...
  (one wrapper folder around them is fine), or
* a CSV with columns ``path, emotion`` (``label`` is accepted too) and optionally
  ``speaker`` and ``gender``: inside a zip with the audio, its paths relative to the CSV,
  or on disk, its paths absolute or relative to the CSV's folder (or to ``base``).

:func:`check` reads every clip with :mod:`ser_core.audio` and lists each thing that is
wrong, in words a user can act on: an unknown label, an unreadable file, a class with
too few clips, the same file twice. :func:`import_checked` stores a clean corpus as
``<data root>/<name>/`` (the audio under ``audio/<emotion>/`` and a ``manifest.csv``
that :func:`ser_core.datasets.load_named` reads), built in a temporary folder and
renamed into place, so a half-written corpus never appears and no existing corpus is
ever touched.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import uuid
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from . import audio, datasets
from .config import EMOTIONS, atomic_write_text, data_dir, public_demo
from .errors import AudioError, DatasetError

# A class needs this many clips: speaker 5-fold then still tests it at least twice per fold
# and trains on it in every fold (and it is the fewest a per-class recall can be read from).
MIN_CLIPS_PER_CLASS = 10
MIN_CLASSES = 2
MIN_SPEAKERS_KFOLD = 5
AUDIO_FOLDER = "audio"
IMPORT_RECORD = "import.json"
STAGING = ".import-tmp"            # under the data root: same file system, so the final rename is atomic
MAX_UNZIPPED_BYTES = 4 * 1024 ** 3
MAX_FILES = 100_000
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
RESERVED_NAMES = frozenset(datasets.PARSERS) | {"samples", STAGING}
GENDERS = {"female": "female", "f": "female", "woman": "female", "male": "male", "m": "male", "man": "male",
           "": "unknown", "unknown": "unknown", "nan": "unknown"}
PROBLEM_KINDS = ("unknown label", "unreadable file", "too few clips", "duplicate file", "bad row", "bad layout")

# Label words users write for the eight emotions (lower case, '_' and '-' read as spaces).
LABEL_SYNONYMS: dict[str, str] = {
    **{e: e for e in EMOTIONS},
    "neu": "neutral", "neutrality": "neutral",
    "calmness": "calm",
    "happiness": "happy", "joy": "happy", "joyful": "happy", "hap": "happy",
    "sadness": "sad",
    "anger": "angry", "ang": "angry",
    "fear": "fearful", "afraid": "fearful", "scared": "fearful", "fea": "fearful",
    "disgusted": "disgust",
    "surprise": "surprised", "pleasant surprise": "surprised", "ps": "surprised",
}
_JUNK = re.compile(r"(^|/)(__MACOSX|\.DS_Store|Thumbs\.db|desktop\.ini)(/|$)|(^|/)\._", re.IGNORECASE)


def canonical_label(text: str) -> str | None:
    """One of :data:`ser_core.config.EMOTIONS` for a label a user wrote (``Joy`` -> ``happy``), else None."""
    key = re.sub(r"[\s_\-]+", " ", str(text)).strip().lower()
    return LABEL_SYNONYMS.get(key)


def accepted_labels_text() -> str:
    """The label words a user may write, for messages and help texts."""
    extra = sorted(k for k, v in LABEL_SYNONYMS.items() if k != v and len(k) > 3)
    return f"{', '.join(EMOTIONS)} (or a common synonym: {', '.join(extra)})"


@dataclass(frozen=True)
class Problem:
    """One thing that stops an import, in a sentence the user can act on."""

    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(frozen=True)
class Clip:
    """One clip of a checked corpus, ready to store."""

    source: str               # where it came from, as the user named it (zip member, CSV path)
    emotion: str
    speaker: str              # the user's id, '' when unknown
    gender: str
    ext: str
    digest: str
    seconds: float


class _Files:
    """Read access to the user's files, in a zip or on disk, by posix-style names."""

    def __init__(self, zf: zipfile.ZipFile | None = None, folder: Path | None = None):
        self.zf, self.folder = zf, folder

    def names(self) -> list[str]:
        if self.zf is not None:
            return [i.filename for i in self.zf.infolist() if not i.is_dir() and not _JUNK.search(i.filename)]
        return sorted(p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*")
                      if p.is_file() and not _JUNK.search(p.relative_to(self.folder).as_posix()))

    def read(self, name: str) -> bytes:
        if self.zf is not None:
            return self.zf.read(name)
        return (self.folder / name).read_bytes()

    def exists(self, name: str) -> bool:
        if self.zf is not None:
            try:
                self.zf.getinfo(name)
                return True
            except KeyError:
                return False
        return (self.folder / name).is_file()


@dataclass
class Entry:
    """A clip as listed, before it is read."""

    source: str
    read: Callable[[], bytes]
    raw_label: str
    speaker: str = ""
    gender: str = "unknown"
    key: str = ""              # identity of the file (zip member or resolved path), for duplicates


@dataclass
class CheckResult:
    """What :func:`check` found: the usable clips, the problems that block an import, notes."""

    source: str
    layout: str                                   # "emotion folders" or "CSV"
    clips: list[Clip] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _read: dict[str, Callable[[], bytes]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(clip.emotion for clip in self.clips)
        return {e: c[e] for e in EMOTIONS if c[e]}

    @property
    def speakers_known(self) -> bool:
        return bool(self.clips) and all(clip.speaker for clip in self.clips)

    @property
    def speakers(self) -> int:
        """Distinct speakers given (clips without one not counted)."""
        return len({clip.speaker for clip in self.clips if clip.speaker})

    def summary(self) -> str:
        per = ", ".join(f"{e} {n}" for e, n in self.counts.items())
        who = f"{self.speakers} speakers" if self.speakers_known else "speakers unknown (clip-level groups)"
        hours = sum(c.seconds for c in self.clips) / 60
        return f"{len(self.clips)} usable clips ({hours:.1f} min of audio; {per}); {who}"


# ----------------------------------------------------------------------------- reading the listing
@dataclass
class _Opened:
    """A source, opened: its files (zip or folder) and, when the clips are listed in a CSV, that CSV."""

    label: str
    files: _Files | None = None
    csv_name: str | None = None            # a CSV inside ``files``
    csv_bytes: bytes | None = None          # a CSV on its own (a path or an upload)
    csv_label: str = ""
    csv_base: Path | None = None            # where that CSV's relative paths resolve


def _open(source: Path | str | bytes, filename: str | None, base: Path | str | None) -> _Opened:
    if isinstance(source, (bytes, bytearray)):
        label = filename or "upload"
        if zipfile.is_zipfile(io.BytesIO(source)):
            return _open_zip(io.BytesIO(bytes(source)), label)
        return _Opened(label, csv_bytes=bytes(source), csv_label=label,
                       csv_base=Path(base) if base is not None else data_dir())
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"{path} not found")
    if path.is_dir():
        files = _Files(folder=path)
        csvs = [n for n in files.names() if "/" not in n and n.lower().endswith(".csv")]
        return _Opened(str(path), files, csv_name=csvs[0] if len(csvs) == 1 else None)
    if zipfile.is_zipfile(path):
        return _open_zip(path, str(path))
    if path.suffix.lower() == ".csv":
        return _Opened(str(path), csv_bytes=path.read_bytes(), csv_label=path.name,
                       csv_base=Path(base) if base is not None else path.parent)
    raise DatasetError(f"{path.name} is neither a zip nor a CSV file: give a zip of emotion folders, "
                       "or a CSV of path, emotion[, speaker, gender]")


def _open_zip(fh, label: str) -> _Opened:
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{label} is not a readable zip ({exc})") from exc
    infos = zf.infolist()
    if len(infos) > MAX_FILES:
        raise DatasetError(f"{label} holds {len(infos)} entries; the limit is {MAX_FILES}")
    total = sum(i.file_size for i in infos)
    if total > MAX_UNZIPPED_BYTES:
        raise DatasetError(f"{label} unpacks to {total / 1e9:.1f} GB; the limit is {MAX_UNZIPPED_BYTES / 1e9:.0f} GB")
    unsafe = [i.filename for i in infos if i.filename.startswith(("/", "\\")) or ".." in i.filename.split("/")]
    if unsafe:
        raise DatasetError(f"{label} holds unsafe paths (absolute or with '..'), e.g. {unsafe[0]!r}")
    files = _Files(zf=zf)
    csvs = [n for n in files.names() if n.lower().endswith(".csv")]
    if len(csvs) > 1:
        raise DatasetError(f"{label} holds {len(csvs)} CSV files ({', '.join(csvs[:3])}): keep the one that "
                           "lists the clips")
    return _Opened(label, files, csv_name=csvs[0] if csvs else None)


def _is_audio(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in audio.AUDIO_EXTENSIONS


def _folder_entries(files: _Files, result: CheckResult) -> list[Entry]:
    """Clips of an emotion-folder layout: the first folder of each path names its emotion."""
    names = files.names()
    clips = [n for n in names if _is_audio(n)]
    others = [n for n in names if not _is_audio(n)]
    if others:
        kinds = sorted({posixpath.splitext(n)[1].lower() or "(no extension)" for n in others})
        result.notes.append(f"ignored {len(others)} file(s) that are not audio ({', '.join(kinds[:6])})")
    prefix = ""
    while clips:
        heads = {n[len(prefix):].split("/", 1)[0] for n in clips}
        deeper = all(n[len(prefix):].count("/") >= 2 for n in clips)
        if len(heads) == 1 and deeper and canonical_label(next(iter(heads))) is None:
            prefix += next(iter(heads)) + "/"        # one wrapper folder around the emotion folders
        else:
            break
    out = []
    loose = []
    for n in clips:
        rel = n[len(prefix):]
        if "/" not in rel:
            loose.append(n)
            continue
        out.append(Entry(n, partial(files.read, n), rel.split("/", 1)[0], key=n))
    if loose:
        result.problems.append(Problem("bad layout", f"{len(loose)} clip(s) are not inside an emotion folder "
                                                     f"(e.g. {loose[0]}): put each clip in a folder named "
                                                     "after its emotion"))
    return out


def _read_csv(data: bytes, label: str) -> pd.DataFrame:
    try:
        raw = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{label} is not a readable CSV ({str(exc).splitlines()[0]})") from exc
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    if "emotion" not in raw.columns and "label" in raw.columns:
        raw = raw.rename(columns={"label": "emotion"})
    missing = [c for c in ("path", "emotion") if c not in raw.columns]
    if missing:
        raise DatasetError(f"{label} lacks the column(s) {', '.join(missing)}: it needs path and emotion "
                           f"(or label), optionally speaker and gender; it has {', '.join(raw.columns) or 'none'}")
    if raw.empty:
        raise DatasetError(f"{label} lists no clips")
    return raw


def _csv_entries(raw: pd.DataFrame, resolve: Callable[[str], tuple[str, Callable[[], bytes]] | str],
                 result: CheckResult) -> list[Entry]:
    """Clips listed in a CSV. ``resolve(path)`` gives (key, reader), or a message why the path is unusable."""
    out = []
    bad_gender: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(raw.to_dict("records")):
        line = i + 2                                  # the header is line 1
        path, label = str(row.get("path", "")).strip(), str(row.get("emotion", "")).strip()
        if not path or not label:
            result.problems.append(Problem("bad row", f"line {line} has no {'path' if not path else 'emotion'}"))
            continue
        got = resolve(path)
        if isinstance(got, str):
            result.problems.append(Problem("unreadable file", f"line {line}: {got}"))
            continue
        gender = GENDERS.get(str(row.get("gender", "")).strip().lower())
        if gender is None:
            bad_gender[str(row["gender"]).strip()].append(line)
            gender = "unknown"
        out.append(Entry(path, got[1], label, str(row.get("speaker", "")).strip(), gender, key=got[0]))
    for value, lines in bad_gender.items():
        result.problems.append(Problem("bad row", f"gender {value!r} on line(s) {_lines(lines)}: write female, "
                                                  "male or leave it empty"))
    return out


def _lines(lines: list[int], limit: int = 8) -> str:
    shown = ", ".join(map(str, lines[:limit]))
    return shown + (f" and {len(lines) - limit} more" if len(lines) > limit else "")


def _zip_resolver(files: _Files, csv_name: str):
    here = posixpath.dirname(csv_name)

    def resolve(path: str):
        p = path.replace("\\", "/")
        if p.startswith("/") or re.match(r"^[a-zA-Z]:/", p):
            return f"{path} is an absolute path; inside a zip, give it relative to the CSV"
        for base in dict.fromkeys((here, "")):
            name = posixpath.normpath(posixpath.join(base, p))
            if name.startswith("../") or name == "..":
                return f"{path} points outside the zip"
            if files.exists(name):
                return name, partial(files.read, name)
        return f"{path} is not in the zip"
    return resolve


def _disk_resolver(base: Path):
    def resolve(path: str):
        p = Path(path).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            return f"{path} not found (looked for {p})"
        return str(p.resolve()), partial(Path.read_bytes, p)
    return resolve


# ----------------------------------------------------------------------------- checking
def check(source: Path | str | bytes, *, filename: str | None = None, base: Path | str | None = None,
          progress: Callable[[int, int], None] | None = None) -> CheckResult:
    """Read a user corpus and list what is wrong with it.

    Parameters
    ----------
    source
        A zip (path or bytes), a folder of emotion folders, or a CSV (path or bytes).
    filename
        The uploaded file's name, for messages when ``source`` is bytes.
    base
        Where relative paths of a CSV given on its own resolve (default: the CSV's folder;
        an uploaded CSV has none, so the page passes the data root).
    progress
        Called as ``progress(done, total)`` while clips are decoded.

    Returns
    -------
    CheckResult
        Usable clips, blocking problems and notes. Structural failures (not a zip or CSV,
        missing columns) raise :class:`DatasetError` instead.
    """
    src = _open(source, filename, base)
    if src.csv_name is not None or src.csv_bytes is not None:
        result = CheckResult(src.label, "CSV")
        if src.csv_name is not None:
            raw = _read_csv(src.files.read(src.csv_name), src.csv_name)
            resolver = (_zip_resolver(src.files, src.csv_name) if src.files.zf is not None
                        else _disk_resolver(src.files.folder))
        else:
            raw = _read_csv(src.csv_bytes, src.csv_label)
            resolver = _disk_resolver(src.csv_base)
        entries = _csv_entries(raw, resolver, result)
    else:
        result = CheckResult(src.label, "emotion folders")
        entries = _folder_entries(src.files, result)
    if not entries and not result.problems:
        kinds = ", ".join(e.lstrip(".") for e in audio.AUDIO_EXTENSIONS[:6])
        raise DatasetError(f"{src.label} holds no audio clips ({kinds}"
                           " ...)")
    _check_entries(entries, result, progress)
    return result


def _check_entries(entries: list[Entry], result: CheckResult, progress) -> None:
    listed: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        listed[e.key].append(e.source)
    for key, sources in listed.items():
        if len(sources) > 1:
            result.problems.append(Problem("duplicate file", f"{sources[0]} is listed {len(sources)} times"))
    unknown: dict[str, list[str]] = defaultdict(list)
    by_digest: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    todo = [e for e in entries if not (e.key in seen or seen.add(e.key))]
    for done, e in enumerate(todo, 1):
        emotion = canonical_label(e.raw_label)
        if emotion is None:
            unknown[e.raw_label].append(e.source)
        try:
            data = e.read()
            y = audio.load(data, name=e.source)
        except AudioError as exc:
            result.problems.append(Problem("unreadable file", str(exc)))
        except OSError as exc:
            result.problems.append(Problem("unreadable file", f"{e.source}: {exc.strerror or exc}"))
        else:
            digest = hashlib.sha1(data).hexdigest()
            by_digest[digest].append(e.source)
            if emotion is not None:
                result.clips.append(Clip(e.source, emotion, e.speaker, e.gender,
                                         posixpath.splitext(e.source)[1].lower() or ".wav", digest,
                                         round(len(y) / 16000, 3)))
                result._read[e.source] = e.read
        if progress:
            progress(done, len(todo))
    for raw, sources in sorted(unknown.items()):
        result.problems.append(Problem("unknown label", f"{raw!r} ({len(sources)} clip(s), e.g. {sources[0]}): "
                                                        f"use one of {accepted_labels_text()}"))
    for sources in by_digest.values():
        if len(sources) > 1:
            result.problems.append(Problem("duplicate file", f"{' and '.join(sources[:3])}"
                                                             f"{' and more' if len(sources) > 3 else ''} hold "
                                                             "identical audio (the same bytes): keep one"))
    counts = result.counts
    for emotion, n in counts.items():
        if n < MIN_CLIPS_PER_CLASS:
            result.problems.append(Problem("too few clips", f"{emotion} has {n} usable clip(s); every emotion "
                                                            f"needs at least {MIN_CLIPS_PER_CLASS} (or leave it out)"))
    if entries and len(counts) < MIN_CLASSES and not unknown:
        have = ", ".join(counts) or "none"
        result.problems.append(Problem("too few clips", f"only {len(counts)} emotion(s) ({have});"
                                                        f" a classifier needs at least {MIN_CLASSES}"))
    _speaker_notes(result)


def _speaker_notes(result: CheckResult) -> None:
    missing = sum(1 for c in result.clips if not c.speaker)
    if not result.clips:
        return
    if missing == len(result.clips):
        how = "emotion folders name no speakers" if result.layout == "emotion folders" else "the CSV gives none"
        result.notes.append(f"Speakers unknown ({how}): each clip becomes its own group, so splits are clip-level "
                            "and one speaker's clips can be in training and test; accuracy on this corpus is then "
                            "speaker-DEPENDENT. Give a CSV with a speaker column for speaker-independent results.")
    elif missing:
        result.notes.append(f"{missing} of {len(result.clips)} clips have no speaker: each of those becomes its own "
                            "group (clip-level), so their accuracy may be speaker-dependent.")
    speakers = result.speakers
    if 0 < speakers < MIN_SPEAKERS_KFOLD and missing == 0:
        result.notes.append(f"Only {speakers} speaker(s): speaker 5-fold needs at least {MIN_SPEAKERS_KFOLD}; "
                            "train on it together with other corpora, or leave it out as a test corpus.")


# ----------------------------------------------------------------------------- storing
def import_root(root: Path | str | None = None) -> Path:
    """The data root a user corpus goes into, refused when it cannot hold one more corpus."""
    root = Path(root).expanduser() if root is not None else data_dir()
    if not root.is_dir():
        raise DatasetError(f"the data root {root} does not exist: set SER_DATA_DIR to a folder of corpora "
                           "(one subfolder per corpus)")
    if datasets.corpus_dirs(root).get("ravdess") == root:
        raise DatasetError(f"the data root {root} is a RAVDESS folder itself; uploads need SER_DATA_DIR to be a "
                           f"folder of corpora (e.g. {root.parent} with RAVDESS in ravdess/ and your corpus "
                           "next to it)")
    return root


def check_name(name: str, root: Path | str | None = None) -> str:
    """A valid, unused corpus name under the data root (refused with the reason otherwise)."""
    name = str(name).strip()
    if not NAME_RE.match(name):
        raise DatasetError(f"corpus name {name!r}: use 1-40 lower-case letters, digits, '-' or '_', "
                           "starting with a letter or digit")
    if name in RESERVED_NAMES:
        raise DatasetError(f"{name!r} is the name of a built-in corpus; choose another name")
    root = import_root(root)
    taken = {p.name.lower() for p in root.iterdir()}
    if name in taken:
        raise DatasetError(f"a corpus or folder named {name!r} already exists under the data root {root}; choose "
                           "another name (existing corpora are never changed)")
    return name


def suggest_name(filename: str, root: Path | str | None = None) -> str:
    """A free corpus name made from an uploaded file's name (``My Voices.zip`` -> ``my-voices``)."""
    stem = re.sub(r"[^a-z0-9_-]+", "-", Path(str(filename)).stem.lower()).strip("-_")[:32] or "mycorpus"
    if stem in RESERVED_NAMES:
        stem = f"{stem}-own"
    try:
        taken = {p.name.lower() for p in import_root(root).iterdir()}
    except DatasetError:
        return stem
    name, n = stem, 2
    while name in taken:
        name, n = f"{stem}-{n}", n + 1
    return name


def import_checked(result: CheckResult, name: str, root: Path | str | None = None) -> Path:
    """Store a checked corpus as ``<root>/<name>/`` and return that folder.

    The folder is built under ``<root>/.import-tmp/`` and renamed into place, so the
    data root never holds half a corpus; an existing folder of that name is refused,
    never replaced.
    """
    if public_demo():
        raise DatasetError("this is a public demo (SER_PUBLIC_DEMO): uploads are not stored")
    if not result.ok:
        first = result.problems[0]
        raise DatasetError(f"{result.source} cannot be imported: {len(result.problems)} problem(s), first: {first}")
    root = import_root(root)
    name = check_name(name, root)
    staging = root / STAGING
    staging.mkdir(exist_ok=True)
    tmp = staging / f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        rows = []
        for i, clip in enumerate(sorted(result.clips, key=lambda c: (EMOTIONS.index(c.emotion), c.source)), 1):
            rel = Path(AUDIO_FOLDER) / clip.emotion / f"{name}_{i:05d}{clip.ext}"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(result._read[clip.source]())
            speaker = f"{name}-{clip.speaker}" if clip.speaker else f"{name}-clip-{i:05d}"
            rows.append({"path": rel.as_posix(), "emotion": clip.emotion, "speaker": speaker,
                         "gender": clip.gender, "source": clip.source})
        atomic_write_text(tmp / datasets.USER_MANIFEST, pd.DataFrame(rows).to_csv(index=False))
        record = {"name": name, "source": result.source, "layout": result.layout, "clips": len(rows),
                  "emotions": result.counts, "speakers_known": result.speakers_known,
                  "speakers": result.speakers, "notes": result.notes}
        atomic_write_text(tmp / IMPORT_RECORD, json.dumps(record, indent=1))
        datasets.load_csv(tmp / datasets.USER_MANIFEST, corpus=name)      # it must read back before it goes live
        check_name(name, root)                                            # nobody took the name meanwhile
        os.rename(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        try:
            staging.rmdir()
        except OSError:
            pass
    return root / name


def import_corpus(source: Path | str | bytes, name: str, *, root: Path | str | None = None,
                  filename: str | None = None, base: Path | str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[Path | None, CheckResult]:
    """Check a user corpus and, when nothing is wrong, store it (see :func:`import_checked`).

    Returns the new corpus folder (``None`` when the check found problems: nothing is
    stored then) and the check's result. A bad name or data root is refused before any
    clip is decoded.
    """
    if public_demo():
        raise DatasetError("this is a public demo (SER_PUBLIC_DEMO): uploads are not stored")
    check_name(name, root)
    result = check(source, filename=filename, base=base, progress=progress)
    if not result.ok:
        return None, result
    return import_checked(result, name, root), result


def user_corpora(root: Path | str | None = None) -> dict[str, dict]:
    """Corpora under the data root that users imported, with their import records."""
    out = {}
    for name, path in datasets.corpus_dirs(root).items():
        if (path / datasets.USER_MANIFEST).is_file() and name not in datasets.PARSERS:
            try:
                out[name] = json.loads((path / IMPORT_RECORD).read_text())
            except (OSError, ValueError):
                out[name] = {"name": name}
    return out
