"""Bring your own data: checking a user's corpus, every problem named, stored atomically under the data root."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from ser_core import datasets, userdata
from ser_core.errors import DatasetError

from conftest import ROOT, SAMPLES


def variants(emotion: str, n: int) -> list[tuple[str, bytes]]:
    """``n`` distinct WAVs of real RAVDESS sample speech of one emotion (gain-shifted copies of the 4 samples)."""
    sources = [p for p in sorted(SAMPLES.glob("*.flac")) if datasets.parse_ravdess(p.name)["emotion"] == emotion]
    out = []
    for i in range(n):
        y, sr = sf.read(sources[i % len(sources)], dtype="float32")
        buf = io.BytesIO()
        sf.write(buf, y * (0.9 - 0.1 * (i // len(sources))), sr, format="WAV", subtype="PCM_16")
        out.append((f"{emotion}_{i:02d}.wav", buf.getvalue()))
    return out


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A data root holding one corpus folder (a copy of the samples as ravdess/); SER_DATA_DIR points at it."""
    r = tmp_path / "data"
    (r / "ravdess").mkdir(parents=True)
    for p in sorted(SAMPLES.glob("*.flac"))[:8]:
        (r / "ravdess" / p.name).write_bytes(p.read_bytes())
    monkeypatch.setenv("SER_DATA_DIR", str(r))
    monkeypatch.delenv("SER_PUBLIC_DEMO", raising=False)
    return r


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))}


def kinds(result) -> list[str]:
    return [p.kind for p in result.problems]


def test_labels_and_common_synonyms():
    assert userdata.canonical_label("Joy") == "happy"
    assert userdata.canonical_label(" HAPPINESS ") == "happy"
    assert userdata.canonical_label("fear") == "fearful"
    assert userdata.canonical_label("anger") == "angry"
    assert userdata.canonical_label("surprise") == "surprised"
    assert userdata.canonical_label("pleasant_surprise") == "surprised"
    assert userdata.canonical_label("sadness") == "sad"
    assert userdata.canonical_label("calm") == "calm"
    assert userdata.canonical_label("bored") is None
    assert "neutral, calm, happy" in userdata.accepted_labels_text() and "joy" in userdata.accepted_labels_text()


def test_zip_of_emotion_folders_is_stored_as_a_new_corpus(root):
    files = {f"my-voices/Joy/{n}": b for n, b in variants("happy", 10)}
    files |= {f"my-voices/sadness/{n}": b for n, b in variants("sad", 12)}
    files["my-voices/README.txt"] = b"recorded at home"
    before = tree(root / "ravdess")
    result = userdata.check(make_zip(files), filename="voices.zip")
    assert result.ok, result.problems
    assert result.layout == "emotion folders"
    assert result.counts == {"happy": 10, "sad": 12}
    assert not result.speakers_known
    assert any("speaker-DEPENDENT" in n and "clip-level" in n for n in result.notes)
    assert any("ignored 1 file(s) that are not audio (.txt)" in n for n in result.notes)
    assert result.summary().startswith("22 usable clips")

    dest = userdata.import_checked(result, "homevoices")
    assert dest == root / "homevoices"
    assert sorted(p.name for p in root.iterdir()) == ["homevoices", "ravdess"]      # no staging folder left
    assert tree(root / "ravdess") == before                                         # the corpus next to it untouched
    assert datasets.corpus_dirs() == {"homevoices": dest, "ravdess": root / "ravdess"}
    df = datasets.load_named("homevoices")
    assert len(df) == 22 and df["emotion"].value_counts().to_dict() == {"sad": 12, "happy": 10}
    assert df["speaker"].nunique() == 22 and df["speaker"].str.startswith("homevoices-clip-").all()
    assert df["corpus"].eq("homevoices").all() and all(Path(p).is_file() for p in df["path"])
    manifest = pd.read_csv(dest / datasets.USER_MANIFEST)
    assert manifest["path"].str.startswith("audio/").all()              # relative: the folder can move
    record = json.loads((dest / userdata.IMPORT_RECORD).read_text())
    assert record["clips"] == 22 and record["speakers_known"] is False
    both = datasets.load_dataset("ravdess+homevoices")
    assert set(both["corpus"]) == {"ravdess", "homevoices"} and len(both) == 30
    assert userdata.user_corpora() == {"homevoices": record}


def test_every_problem_is_named_and_nothing_is_stored(root):
    happy = variants("happy", 10)
    files = {f"happy/{n}": b for n, b in happy}
    files |= {f"bored/{n}": b for n, b in variants("neutral", 2)}                 # unknown label
    files |= {f"angry/{n}": b for n, b in variants("angry", 3)}                   # too few clips
    files["sad/copy.wav"] = happy[0][1]                                           # the same bytes again
    files["happy/broken.wav"] = b"RIFF\x00\x00garbage" * 20                       # not audio
    files["loose.wav"] = happy[1][1]                                              # outside any emotion folder
    before = tree(root)
    result = userdata.check(make_zip(files), filename="mixed.zip")
    assert not result.ok
    text = [str(p) for p in result.problems]
    assert "bad layout: 1 clip(s) are not inside an emotion folder (e.g. loose.wav)" in text[0]
    assert any(t.startswith("unknown label: 'bored' (2 clip(s), e.g. bored/") and "use one of neutral, calm" in t
               for t in text)
    assert any(t.startswith("unreadable file: happy/broken.wav: not a decodable audio file") for t in text)
    assert any(t.startswith("duplicate file: ") and "happy/happy_00.wav" in t and "sad/copy.wav" in t
               and "identical audio" in t for t in text)
    assert any(t == f"too few clips: angry has 3 usable clip(s); every emotion needs at least "
                    f"{userdata.MIN_CLIPS_PER_CLASS} (or leave it out)" for t in text)
    assert any(t.startswith("too few clips: sad has 1") for t in text)
    assert sorted(set(kinds(result))) == ["bad layout", "duplicate file", "too few clips", "unknown label",
                                          "unreadable file"]
    with pytest.raises(DatasetError, match="cannot be imported: 6 problem"):
        userdata.import_checked(result, "mixed")
    path, again = userdata.import_corpus(make_zip(files), "mixed", filename="mixed.zip")
    assert path is None and len(again.problems) == len(result.problems)
    assert tree(root) == before


def test_csv_on_disk_with_speakers_and_genders(root, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    rows = []
    for emotion, label in (("angry", "anger"), ("neutral", "Neutral")):
        for i, (name, data) in enumerate(variants(emotion, 10)):
            (clips / name).write_bytes(data)
            rows.append({"path": f"clips/{name}", "emotion": label, "speaker": f"s{i % 5}",
                         "gender": "F" if i % 5 < 2 else "male"})
    csv = tmp_path / "list.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    result = userdata.check(csv)
    assert result.ok, result.problems
    assert result.layout == "CSV" and result.speakers_known and result.speakers == 5
    assert not [n for n in result.notes if "speaker" in n.lower()]
    path, _ = userdata.import_corpus(csv, "studio")
    df = datasets.load_named("studio")
    assert sorted(df["speaker"].unique()) == [f"studio-s{i}" for i in range(5)]
    assert df.groupby("speaker")["gender"].first().to_dict() == {
        "studio-s0": "female", "studio-s1": "female", "studio-s2": "male", "studio-s3": "male", "studio-s4": "male"}
    assert df["emotion"].value_counts().to_dict() == {"angry": 10, "neutral": 10}


def test_csv_rows_that_cannot_be_used(root, tmp_path):
    (tmp_path / "a").mkdir()
    rows = []
    for name, data in variants("sad", 10):
        (tmp_path / "a" / name).write_bytes(data)
        rows.append({"path": f"a/{name}", "label": "sad", "gender": ""})
    rows += [{"path": "a/sad_00.wav", "label": "sad", "gender": ""},               # listed twice
             {"path": "a/missing.wav", "label": "sad", "gender": ""},
             {"path": "a/sad_01.wav", "label": "", "gender": ""},
             {"path": "a/sad_02.wav", "label": "sad", "gender": "robot"}]
    csv = tmp_path / "rows.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    result = userdata.check(csv)
    text = [str(p) for p in result.problems]
    assert "bad row: line 14 has no emotion" in text
    assert f"unreadable file: line 13: a/missing.wav not found (looked for {tmp_path / 'a' / 'missing.wav'})" in text
    assert "bad row: gender 'robot' on line(s) 15: write female, male or leave it empty" in text
    assert "duplicate file: a/sad_00.wav is listed 2 times" in text
    assert any(t.startswith("too few clips: only 1 emotion(s) (sad)") for t in text)
    assert any(n.startswith("Speakers unknown (the CSV gives none)") for n in result.notes)
    (tmp_path / "bad.csv").write_text("file,mood\nx.wav,happy\n")
    with pytest.raises(DatasetError, match="lacks the column\\(s\\) path, emotion"):
        userdata.check(tmp_path / "bad.csv")


def test_csv_inside_a_zip_with_paths_relative_to_it(root):
    rows, files = [], {}
    for emotion in ("happy", "fearful"):
        for i, (name, data) in enumerate(variants(emotion, 10)):
            files[f"set/wavs/{name}"] = data
            rows.append(f"wavs/{name},{'fear' if emotion == 'fearful' else 'joy'},spk{i % 6},")
    files["set/labels.csv"] = ("path,emotion,speaker,gender\n" + "\n".join(rows) + "\n").encode()
    result = userdata.check(make_zip(files), filename="set.zip")
    assert result.ok, result.problems
    assert result.counts == {"happy": 10, "fearful": 10} and result.speakers == 6
    files["set/labels.csv"] += b"../../etc/passwd.wav,happy,x,\n"
    result = userdata.check(make_zip(files), filename="set.zip")
    assert "unreadable file: line 22: ../../etc/passwd.wav points outside the zip" in [str(p) for p in result.problems]


def test_names_and_data_roots_that_are_refused(root, tmp_path, monkeypatch):
    zipped = make_zip({f"happy/{n}": b for n, b in variants("happy", 10)}
                      | {f"sad/{n}": b for n, b in variants("sad", 10)})
    (root / "mine").mkdir()
    (root / "mine" / "keep.txt").write_text("mine")
    before = tree(root)
    for name, why in (("mine", "already exists"), ("MINE", "use 1-40 lower-case"), ("ased", "built-in corpus"),
                      ("a/b", "use 1-40"), ("", "use 1-40"), ("x+y", "use 1-40")):
        with pytest.raises(DatasetError, match=why):
            userdata.import_corpus(zipped, name)
    assert tree(root) == before
    with pytest.raises(DatasetError, match="does not exist: set SER_DATA_DIR to a folder of corpora"):
        userdata.import_corpus(zipped, "fine", root=tmp_path / "nowhere")
    monkeypatch.setenv("SER_DATA_DIR", str(root / "ravdess"))          # a root that IS RAVDESS
    with pytest.raises(DatasetError, match="is a RAVDESS folder itself; uploads need SER_DATA_DIR to be a folder "
                                           "of corpora"):
        userdata.import_corpus(zipped, "fine")
    assert tree(root) == before
    with pytest.raises(DatasetError, match="neither a zip nor a CSV"):
        userdata.check(next(SAMPLES.glob("*.flac")))


def test_public_demo_stores_nothing(root, monkeypatch):
    zipped = make_zip({f"happy/{n}": b for n, b in variants("happy", 10)}
                      | {f"sad/{n}": b for n, b in variants("sad", 10)})
    result = userdata.check(zipped, filename="x.zip")
    monkeypatch.setenv("SER_PUBLIC_DEMO", "1")
    before = tree(root)
    for call in (lambda: userdata.import_checked(result, "demo"), lambda: userdata.import_corpus(zipped, "demo")):
        with pytest.raises(DatasetError, match="public demo"):
            call()
    assert tree(root) == before


def test_a_failure_while_storing_leaves_no_trace(root, monkeypatch):
    zipped = make_zip({f"happy/{n}": b for n, b in variants("happy", 10)}
                      | {f"sad/{n}": b for n, b in variants("sad", 10)})
    result = userdata.check(zipped, filename="x.zip")
    before = tree(root)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(userdata, "atomic_write_text", disk_full)          # fault injection at the manifest write
    with pytest.raises(OSError, match="No space left"):
        userdata.import_checked(result, "half")
    assert tree(root) == before                                             # neither the corpus nor the staging


def ser(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ser_core", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env={**os.environ, **(env or {})})


def test_cli_data_import(root, tmp_path):
    good = tmp_path / "good.zip"
    good.write_bytes(make_zip({f"happy/{n}": b for n, b in variants("happy", 10)}
                              | {f"sad/{n}": b for n, b in variants("sad", 10)}))
    r = ser("data", "import", good, "--name", "fromcli", env={"SER_DATA_DIR": str(root)})
    assert r.returncode == 0, r.stderr
    assert "20 usable clips" in r.stdout and f"{root / 'fromcli'}" in r.stdout and "--dataset fromcli" in r.stdout
    assert len(datasets.load_named("fromcli")) == 20
    bad = tmp_path / "bad.zip"
    bad.write_bytes(make_zip({f"happy/{n}": b for n, b in variants("happy", 4)} | {"joy/x.wav": b"nonsense"}))
    r = ser("data", "import", bad, "--name", "broken", env={"SER_DATA_DIR": str(root)})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert any(line.startswith("  - unreadable file: joy/x.wav") for line in lines)
    assert any(line.startswith("  - too few clips: happy has 4") for line in lines)
    assert any(line.startswith("  - too few clips: only 1 emotion(s) (happy)") for line in lines)
    assert lines[-1] == f"error: {bad} cannot be imported: 3 problem(s) listed above; nothing was stored"
    assert not (root / "broken").exists()
    r = ser("data", "import", good, "--name", "fromcli", env={"SER_DATA_DIR": str(root)})
    assert r.returncode == 2 and "already exists" in r.stderr
