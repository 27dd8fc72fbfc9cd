"""training/probe_teacher.py: a linear probe's teacher tables, read back the way a student's ``ser cv`` reads them.

The corpora are empty files under a temporary data root, named and laid out as the real ones (RAVDESS in
``Actor_XX`` folders, ASED and URDU by emotion, EMOVO by speaker), so the student's clip keys hold folders the
vector folder's file names do not; the vectors are made up, emotions shifting them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATASET = "ravdess+ased+emovo+urdu"
FOUR = ("neutral", "happy", "sad", "angry")
DIM = 6
CHOICES = {"1": {"C": 0.1}, "2": {"C": 1.0}, "3": {"C": 0.03}, "4": {"C": 0.1}, "5": {"C": 0.1}, "6": {"C": 0.3}}


@pytest.fixture(scope="module")
def pt():
    from conftest import training_module

    return training_module("probe_teacher")


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def _corpora(root: Path) -> None:
    """24 RAVDESS actors and six speakers of each other corpus, 8 clips each, 2 per emotion of FOUR."""
    ravdess = {"neutral": "01", "happy": "03", "sad": "04", "angry": "05"}
    ased = {"neutral": "n1", "happy": "h3", "sad": "s4", "angry": "a5"}
    emovo = {"neutral": "neu", "happy": "gio", "sad": "tri", "angry": "rab"}
    urdu = {"neutral": "N", "happy": "H", "sad": "S", "angry": "A"}
    n = 0
    for e in FOUR:
        for k in (1, 2):
            for a in range(1, 25):
                _touch(root / "ravdess" / f"Actor_{a:02d}" / f"03-01-{ravdess[e]}-01-01-{k:02d}-{a:02d}.flac")
            for s in range(1, 7):
                n += 1
                _touch(root / "ased" / f"0{ased[e][1]}{e.title()}" / f"{ased[e]}-{k:02d}-01-0{1 + s % 2}-{s:02d}.flac")
                _touch(root / "urdu" / e.title() / f"S{'MF'[s % 2]}{s}_F{s}_{urdu[e]}{n:03d}.flac")
            for spk in ("f1", "f2", "f3", "m1", "m2", "m3"):
                _touch(root / "emovo" / spk / f"{emovo[e]}-{spk}-b{k}.flac")


def _vector_folder(work: Path, rng) -> None:
    """The layout ``encoder_probe.write_vectors`` and ``channel_vectors(kind="babble")`` leave: per corpus, the
    vectors and the manifest (file names only) in the dataset's order, and two channel copies of every clip."""
    from ser_core import datasets

    df = datasets.load_dataset(DATASET)
    centre = {e: rng.normal(0, 1, DIM) for e in (*FOUR, "disgust")}
    work.mkdir(parents=True)
    for k, (corpus, g) in enumerate(df.groupby("corpus", sort=True)):
        names = np.asarray([Path(p).name for p in g["path"]])
        x = np.stack([centre[e] for e in g["emotion"]]) + rng.normal(0, 1.2, (len(g), DIM)) + 0.3 * k
        np.savez(work / f"vectors_{corpus}.npz", vectors=x, path=names)
        g.assign(path=names).to_csv(work / f"manifest_{corpus}.csv", index=False)
        np.savez(work / f"babble_{corpus}.npz", vectors=x[:, None] + rng.normal(0, 0.5, (len(g), 2, DIM)), path=names)


@pytest.fixture(scope="module")
def built(pt, tmp_path_factory):
    """The data root, the vector folder and the teachers of folds 1 and 2. Disgust is only in two clips of the
    EMOVO speaker fold 1 tests: fold 1's probe never learns it, fold 2's does."""
    from ser_core import datasets, splits

    base = tmp_path_factory.mktemp("probe-teacher")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SER_DATA_DIR", str(base / "data"))
        _corpora(base / "data")
        df = datasets.load_dataset(DATASET)
        test1 = df.iloc[splits.make_split(df, "emobox6", 1, n_val=0).test]
        spk = test1.loc[test1["corpus"] == "emovo", "speaker"].iat[0].removeprefix("emovo-")
        for k in (1, 2):
            _touch(base / "data" / "emovo" / spk / f"dis-{spk}-b{k}.flac")
        _vector_folder(base / "work", np.random.default_rng(5))
        choices = base / "choices.json"
        choices.write_text(json.dumps(CHOICES))
        out = base / "teachers"
        tables = pt.write_probe_teachers(base / "work", choices, out, folds=[1, 2])
        yield {"work": base / "work", "choices": choices, "out": out, "tables": tables, "base": base,
               "manifest": datasets.load_dataset(DATASET).reset_index(drop=True)}


@pytest.fixture()
def env(built, monkeypatch):
    """``built``, with the data root set as a student's run has it (clip keys are paths inside its corpora)."""
    monkeypatch.setenv("SER_DATA_DIR", str(built["base"] / "data"))
    return built


def _student(manifest: pd.DataFrame, fold: int, n_val: int = 0):
    """A student's split of the fold, its training rows, their clip keys and its labels (as ``prepare`` has them)."""
    from ser_core import splits, teacher
    from ser_core.config import EMOTIONS

    split = splits.make_split(manifest, "emobox6", fold, n_val=n_val)
    rows = manifest.iloc[split.train].reset_index(drop=True)
    return split, rows, teacher.clip_keys(rows), [e for e in EMOTIONS if e in set(rows["emotion"])]


def _fold(built, fold: int) -> tuple[pd.DataFrame, dict]:
    folder = built["out"] / f"fold-{fold}"
    return pd.read_csv(folder / "probe.csv.gz"), json.loads((folder / "probe.json").read_text())


@pytest.mark.parametrize("fold", [1, 2])
def test_every_training_clip_of_the_fold_has_one_row_and_no_test_speaker_taught_it(env, fold):
    built = env
    from ser_core import schema

    table, rec = _fold(built, fold)
    split, rows, keys, _ = _student(built["manifest"], fold)
    assert built["tables"][fold - 1] == built["out"] / f"fold-{fold}" / "probe.csv.gz"
    assert table["clip"].is_unique and sorted(table["clip"]) == sorted(keys)
    assert any(k.startswith("ravdess/Actor_") for k in keys)       # the key is the path in the corpus, not the name
    tested = set(built["manifest"]["speaker"].iloc[split.test])
    assert set(rec[schema.TRAIN_SPEAKERS]) == set(rows["speaker"]) and not tested & set(rec[schema.TRAIN_SPEAKERS])
    assert rec["clips"] == len(rows) and rec["protocol"] == split.label


@pytest.mark.parametrize("fold", [1, 2])
def test_rows_are_the_fold_probes_own_probabilities_in_the_products_order(pt, env, fold):
    built = env
    import encoder_probe

    from ser_core import splits, teacher
    from ser_core.config import EMOTIONS

    table, rec = _fold(built, fold)
    df, x = encoder_probe.load_vectors(built["work"])
    aug = encoder_probe.load_channel_vectors(built["work"], df, "babble", 1)
    train = encoder_probe.rows_mask(len(df), splits.make_split(df, "emobox6", fold, n_val=0).train)
    clf, z = encoder_probe.probe(x, df, train, CHOICES[str(fold)]["C"], aug)
    # the student's key of each of the probe's training rows, through the dataset's file names
    m = built["manifest"]
    key_of = dict(zip(zip(m["corpus"], m["path"].map(lambda p: Path(p).name)), teacher.clip_keys(m)))
    rows = table.set_index("clip").loc[[key_of[(c, n)] for c, n in zip(df.loc[train, "corpus"], df.loc[train, "path"])]]
    got = rows[[f"p_{lab}" for lab in EMOTIONS]].to_numpy()
    expected = clf.predict_proba(z[train])
    assert got.sum(axis=1) == pytest.approx(np.ones(len(got)), abs=1e-5)
    for j, lab in enumerate(EMOTIONS):
        want = expected[:, list(clf.classes_).index(lab)] if lab in clf.classes_ else np.zeros(len(got))
        assert got[:, j] == pytest.approx(want, rel=1e-5, abs=1e-6), lab
    assert ("disgust" in clf.classes_) == (fold != 1)               # fold 1 tests the only disgust speaker
    assert (got[:, EMOTIONS.index("calm")] == 0).all()               # no corpus here has calm
    assert rec["labels"] == list(EMOTIONS) and rec["settings"] == {"C": CHOICES[str(fold)]["C"], "copies": "babble",
                                                                    "n_copies": 1}


def test_the_held_out_table_is_the_folds_test_clips_scored_out_of_fold(env):
    built = env
    from ser_core import teacher

    folder = built["out"] / "fold-1"
    held = pd.read_csv(folder / "probe.test.csv.gz")
    split = _student(built["manifest"], 1)[0]
    test = built["manifest"].iloc[split.test]
    assert sorted(held["file"]) == sorted(Path(p).name for p in test["path"])
    assert (held["true"] == "disgust").sum() == 2 and (held["pred"] != "disgust").all()   # never learnt
    rec = json.loads((folder / "probe.json").read_text())
    assert rec["test_clips"] == len(test) and rec["test_accuracy"] == pytest.approx((held["pred"] == held["true"]).mean())
    mean, tables = teacher.held_out_mean(folder)
    assert len(tables) == 1 and mean["pred"].tolist() == held["pred"].tolist()


def _cfg(built, fold: int, n_val: int = 0, teacher_path: str | None = None, protocol: str = "emobox6"):
    from ser_core.trainconfig import TrainConfig

    return TrainConfig(dataset=DATASET, protocol=protocol, fold=fold, n_val_speakers=n_val, distill=0.5,
                       teacher=teacher_path or str(built["out"] / "fold-{fold}"))


def _held_out(manifest, split) -> set[str]:
    return set(manifest["speaker"].iloc[np.concatenate([split.test, split.val])].astype(str))


def test_the_students_reader_takes_its_folds_teacher_and_refuses_one_that_heard_its_held_out_speakers(env):
    built = env
    from ser_core.errors import ConfigError
    from ser_core.prepare import teacher_probabilities

    m = built["manifest"]
    for fold in (1, 2):
        split, rows, keys, labels = _student(m, fold)
        soft = teacher_probabilities(_cfg(built, fold), split, rows, labels, lambda _: None, _held_out(m, split))
        assert not np.isnan(soft).any()                               # every training clip found its row
        table = _fold(built, fold)[0].set_index("clip").loc[keys, [f"p_{lab}" for lab in labels]].to_numpy()
        assert soft == pytest.approx(table / table.sum(axis=1, keepdims=True), abs=1e-6)
    split, rows, _, labels = _student(m, 2)                           # fold 1's teacher learnt fold 2's test speakers
    with pytest.raises(ConfigError, match="holds out"):
        teacher_probabilities(_cfg(built, 2, teacher_path=str(built["out"] / "fold-1")), split, rows, labels,
                              lambda _: None, _held_out(m, split))
    split, rows, _, labels = _student(m, 1, n_val=2)                  # validation speakers are held out too
    with pytest.raises(ConfigError, match="holds out"):
        teacher_probabilities(_cfg(built, 1, n_val=2), split, rows, labels, lambda _: None, _held_out(m, split))


def test_a_second_call_keeps_finished_folds_and_refuses_other_settings(pt, built, tmp_path):
    files = sorted(p for p in built["out"].rglob("*") if p.is_file())
    stamps = [p.stat().st_mtime_ns for p in files]
    again = pt.write_probe_teachers(built["work"], built["choices"], built["out"], folds=[1, 2])
    assert again == built["tables"] and [p.stat().st_mtime_ns for p in files] == stamps
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**CHOICES, "2": {"C": 0.01}}))
    with pytest.raises(SystemExit, match="other settings"):
        pt.write_probe_teachers(built["work"], other, built["out"], folds=[1, 2])
    with pytest.raises(SystemExit, match="other settings"):
        pt.write_probe_teachers(built["work"], built["choices"], built["out"], folds=[1], n_copies=2)
    assert [p.stat().st_mtime_ns for p in files] == stamps


def test_fold_all_learns_every_clip_with_the_c_nested_corpus_folds_choose(pt, env, tmp_path):
    import encoder_probe

    from ser_core import schema, teacher
    from ser_core.prepare import teacher_probabilities

    built = env
    out = tmp_path / "t"
    assert pt.main(["--work", str(built["work"]), "--choices", str(built["choices"]), "--out", str(out),
                    "--folds", "none", "--all"]) == 0
    folder = out / "fold-all"
    assert sorted(p.name for p in out.iterdir()) == ["fold-all"] and not (folder / "probe.test.csv.gz").exists()
    df, x = encoder_probe.load_vectors(built["work"])
    aug = encoder_probe.load_channel_vectors(built["work"], df, "babble", 1)
    best, _, _ = encoder_probe.choose_c(x, df, np.ones(len(df), bool), encoder_probe.C_GRID, "test", aug)
    rec = teacher.read_record(folder, "probe")
    m = built["manifest"]
    assert rec["settings"]["C"] == best and set(rec[schema.TRAIN_SPEAKERS]) == set(m["speaker"])
    table = pd.read_csv(folder / "probe.csv.gz")
    assert sorted(table["clip"]) == sorted(teacher.clip_keys(m))
    labels = [e for e in rec["labels"] if e in set(m["emotion"])]
    soft = teacher_probabilities(_cfg(built, 1, protocol="all", teacher_path=str(out / "fold-{fold}")), None, m,
                                 labels, lambda _: None, set())
    assert not np.isnan(soft).any()


def test_a_vector_folder_that_lacks_a_students_clip_is_refused(pt, env, tmp_path):
    """A student would train that clip on its label alone, silently: the table is not written."""
    built, work = env, tmp_path / "w"
    shutil.copytree(built["work"], work)
    urdu = pd.read_csv(work / "manifest_urdu.csv", dtype={"speaker": str})
    tested = set(built["manifest"]["speaker"].iloc[_student(built["manifest"], 1)[0].test])
    keep = np.ones(len(urdu), bool)
    keep[np.flatnonzero(~urdu["speaker"].isin(tested))[0]] = False       # a clip fold 1 trains on
    for prefix in ("vectors", "babble"):
        with np.load(work / f"{prefix}_urdu.npz") as z:
            np.savez(work / f"{prefix}_urdu.npz", vectors=z["vectors"][keep], path=z["path"][keep])
    urdu[keep].to_csv(work / "manifest_urdu.csv", index=False)
    with pytest.raises(SystemExit, match="have no vector"):
        pt.write_probe_teachers(work, built["choices"], tmp_path / "t", folds=[1])
    assert not list(tmp_path.glob("t/**/*.json"))
