"""Manifests: RAVDESS file names, the other corpora's naming schemes, users' own data."""
import pandas as pd
import pytest

from ser_core import datasets
from ser_core.errors import DatasetError


def test_ravdess_name_fields():
    info = datasets.parse_ravdess("03-01-06-02-02-01-12.flac")
    assert info == {"emotion": "fearful", "speaker": "ravdess-12", "gender": "female", "corpus": "ravdess",
                    "actor": 12, "modality": 3, "vocal_channel": "speech", "intensity": "strong",
                    "statement": 2, "repetition": 1}
    assert datasets.parse_ravdess("03-01-01-01-01-01-07.wav")["gender"] == "male"
    assert datasets.parse_ravdess("03-01-09-01-01-01-07.wav") is None  # emotion 09 does not exist
    assert datasets.parse_ravdess("03-01-01-01-01-01-25.wav") is None  # actor 25 does not exist
    assert datasets.parse_ravdess("hello.wav") is None


def test_samples_manifest(samples_dir):
    df = datasets.load_ravdess(samples_dir)
    assert len(df) == 32
    assert sorted(df["actor"].unique()) == [1, 2, 3, 4]
    assert df.groupby("actor")["emotion"].nunique().eq(8).all()
    assert set(df.loc[df["actor"].isin([1, 3]), "gender"]) == {"male"}
    assert list(df.columns[:5]) == datasets.COLUMNS


def test_full_corpus_counts(ravdess_dir):
    if ravdess_dir is None:
        pytest.skip("full RAVDESS not available (set SER_DATA_DIR)")
    df = datasets.load_ravdess(ravdess_dir)
    assert len(df) == 1440 and df["actor"].nunique() == 24
    counts = df["emotion"].value_counts()
    assert counts["neutral"] == 96 and (counts.drop("neutral") == 192).all()
    assert (df["gender"] == "female").sum() == 720


@pytest.mark.parametrize("name, parser, expected", [
    ("OAF_back_angry.wav", datasets.parse_tess, ("angry", "tess-OAF", "female")),
    ("YAF_dog_ps.wav", datasets.parse_tess, ("surprised", "tess-YAF", "female")),
    ("1001_DFA_ANG_XX.wav", datasets.parse_crema, ("angry", "crema-1001", "male")),
    ("1002_IEO_FEA_HI.wav", datasets.parse_crema, ("fearful", "crema-1002", "female")),
    ("DC_sa03.wav", datasets.parse_savee, ("sad", "savee-DC", "male")),
    ("KL_su11.wav", datasets.parse_savee, ("surprised", "savee-KL", "male")),
    ("03a01Fa.wav", datasets.parse_emodb, ("happy", "emodb-03", "male")),
    ("16b10Wb.wav", datasets.parse_emodb, ("angry", "emodb-16", "female")),
    ("08a02Lc.wav", datasets.parse_emodb, ("boredom", "emodb-08", "female")),
])
def test_other_corpus_names(name, parser, expected):
    info = parser(name)
    assert (info["emotion"], info["speaker"], info["gender"]) == expected


@pytest.mark.parametrize("name, parser", [
    ("OAF_back_bored.wav", datasets.parse_tess), ("1001_DFA_XXX_XX.wav", datasets.parse_crema),
    ("ZZ_a01.wav", datasets.parse_savee), ("99a01Fa.wav", datasets.parse_emodb),
])
def test_other_corpus_rejects_foreign_names(name, parser):
    assert parser(name) is None


def test_folder_per_label_and_csv(tmp_path, samples_dir):
    clips = sorted(samples_dir.glob("*.flac"))[:4]
    for i, c in enumerate(clips):
        d = tmp_path / "mine" / ("Happy" if i % 2 else "sad")
        d.mkdir(parents=True, exist_ok=True)
        (d / c.name).write_bytes(c.read_bytes())
    df = datasets.load_folder(tmp_path / "mine")
    assert sorted(df["emotion"].unique()) == ["happy", "sad"] and len(df) == 4

    csv = tmp_path / "list.csv"
    pd.DataFrame({"path": [f"mine/happy/{clips[1].name}", str(clips[0])], "label": ["Happy", "sad"],
                  "speaker": ["bob", ""], "gender": ["M", "f"]}).to_csv(csv, index=False)
    df = datasets.load_csv(csv)
    assert df["emotion"].tolist() == ["happy", "sad"]
    assert df["gender"].tolist() == ["male", "female"]
    assert df["speaker"].iloc[0] == "bob" and df["speaker"].iloc[1].startswith("clip-")
    assert df["path"].iloc[0] == str(tmp_path / "mine" / "happy" / clips[1].name)


def test_combined_corpora_keep_speakers_apart(tmp_path, samples_dir):
    tess = tmp_path / "tess"
    tess.mkdir()
    src = next(samples_dir.glob("*.flac"))
    for name in ("OAF_back_angry.flac", "YAF_dog_sad.flac"):
        (tess / name).write_bytes(src.read_bytes())
    df = datasets.load_dataset(f"ravdess:{samples_dir}+tess:{tess}")
    assert len(df) == 34
    assert set(df["corpus"]) == {"ravdess", "tess"}
    assert df.groupby("speaker")["corpus"].nunique().eq(1).all()


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="SER_DATA_DIR"):
        datasets.load_ravdess(tmp_path / "nope")
    with pytest.raises(DatasetError, match="lacks column"):
        (tmp_path / "bad.csv").write_text("file,emotion\na.wav,happy\n")
        datasets.load_csv(tmp_path / "bad.csv")
