"""The shipped models: honest, self-consistent cross-validation numbers. The default (models/default) is a linear
probe on Whisper's encoder trained on four corpora; the RAVDESS-only ensemble that was the default until session 36
is models/ravdess."""
import json
from pathlib import Path

import pandas as pd
import pytest

from ser_core import evaluation, lite, modeldir
from ser_core.config import ModelSpec
from ser_core.splits import EMOBOX_RAVDESS_FOLDS

from conftest import DEFAULT_MODEL, ENSEMBLE_MODEL


@pytest.fixture(scope="module")
def shipped():
    """The RAVDESS ensemble's figures (models/ravdess)."""
    metrics = json.loads((ENSEMBLE_MODEL / "metrics.json").read_text())
    preds = pd.read_csv(ENSEMBLE_MODEL / "predictions.csv")
    return metrics, preds


def test_files_and_size():
    total = sum(p.stat().st_size for p in ENSEMBLE_MODEL.rglob("*") if p.is_file())
    # Keras weights for training, LiteRT copies for prediction (17 MB since session 28: the int8 copies of the
    # three GRU networks are unrolled, 130 KB more each, for a quarter less work a window)
    assert total < 17 * 1024 * 1024
    spec = ModelSpec.load(ENSEMBLE_MODEL / "spec.json")
    assert set(spec.labels) == {"neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"}
    members = modeldir.network_dirs(ENSEMBLE_MODEL)
    assert spec.arch == "ensemble" and len(members) == 5
    for d in members:
        member = ModelSpec.load(d / "spec.json")
        assert set(member.labels) == set(spec.labels)
        assert member.norm_mean and member.norm_std, d      # every member normalises with its training stats
        assert (d / "model.keras").exists()
        assert lite.fresh(d), d                             # prediction needs no TensorFlow


def test_metrics_come_from_the_six_fold_protocol(shipped):
    metrics, preds = shipped
    assert "emobox6 6-fold cross-validation" in metrics["protocol"]
    assert metrics["speaker_independent"] is True
    assert len(preds) == 1440 and preds["file"].is_unique
    for fold, actors in enumerate(EMOBOX_RAVDESS_FOLDS, start=1):
        assert set(preds.loc[preds["fold"] == fold, "actor"]) == set(actors)


def test_metrics_agree_with_predictions(shipped):
    metrics, preds = shipped
    labels = [c[2:] for c in preds.columns if c.startswith("p_")]
    again = evaluation.evaluate(preds, labels)
    for key in ("accuracy", "uar", "macro_f1", "weighted_f1"):
        assert metrics[key] == pytest.approx(again[key], abs=1e-9), key
    for g in ("female", "male"):
        assert metrics["per_gender"][g]["accuracy"] == pytest.approx(again["per_gender"][g]["accuracy"])
    assert (preds["pred"] == preds[[f"p_{lab}" for lab in labels]].idxmax(axis=1).str[2:]).all()


def test_multicorpus_pair_is_half_ravdess_ensemble_half_its_own_network(sample_clip):
    """models/multicorpus (training/pair.py --install) answers the calibrated mean of the RAVDESS ensemble's raw
    probabilities (models/ravdess, then models/default) and its multi-corpus network's, each half, and its metrics
    are its predictions'."""
    import numpy as np

    from ser_core.calibration import apply_temperature
    from ser_core.predict import load_predictor

    pair_dir = ENSEMBLE_MODEL.parent / "multicorpus"
    spec = ModelSpec.load(pair_dir / "spec.json")
    shares = spec.extra["member_weights"]
    assert sum(shares) == pytest.approx(1) and shares[-1] == pytest.approx(0.5)
    pair = load_predictor(pair_dir)
    ensemble = load_predictor(ENSEMBLE_MODEL, calibrated=False)
    net = load_predictor(modeldir.member_dirs(pair_dir)[-1], calibrated=False)
    labs = pair.labels
    raw = [np.array([m.predict_file(sample_clip).probabilities[lab] for lab in labs]) for m in (ensemble, net)]
    got = pair.predict_file(sample_clip)
    np.testing.assert_allclose([got.probabilities[lab] for lab in labs],
                               apply_temperature((raw[0] + raw[1]) / 2, pair.calibration.temperature), atol=1e-6)
    metrics = json.loads((pair_dir / "metrics.json").read_text())
    preds = pd.read_csv(pair_dir / "predictions.csv")
    assert set(preds["corpus"]) == {"ravdess", "ased", "emovo", "urdu"} and preds["file"].is_unique
    again = evaluation.evaluate(preds, labs)
    assert metrics["accuracy"] == pytest.approx(again["accuracy"], abs=1e-9)
    assert metrics["per_corpus"]["ravdess"]["accuracy"] == pytest.approx(again["per_corpus"]["ravdess"]["accuracy"])


def test_the_ensembles_card_and_its_stranger_figures_come_from_the_committed_files(tmp_path):
    """models/ravdess/README.md is what training/report.py writes from the folder's files (saying that it was the
    default until session 36), and its "Voices it never heard" table is training/strangers.py's report of the
    committed table of the model's answers."""
    import subprocess
    import sys

    from conftest import ROOT
    from ser_core import schema

    stored = json.loads((ENSEMBLE_MODEL / schema.STRANGERS).read_text())
    table = pd.read_csv(ROOT / stored["table"])
    assert set(table["corpus"]) == set(stored["corpora"]) == {"ased", "emovo", "urdu"}   # none it trained on
    code = ("import sys, json; sys.path.insert(0, 'training'); import pandas as pd; from strangers import report; "
            f"t = pd.read_csv({str(ROOT / stored['table'])!r}); "
            f"print(json.dumps(report(t, {list(ModelSpec.load(ENSEMBLE_MODEL / 'spec.json').labels)!r}, "
            f"{stored['threshold']!r})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = json.loads(done.stdout)
    for corpus, figures in stored["corpora"].items():
        assert {k: v for k, v in figures.items() if k != "own_labels"} == fresh[corpus]    # both through JSON
        rows = table[table["corpus"] == corpus]
        own = figures["own_labels"]
        assert set(own) == set(rows["true"])
        best_own = rows[[f"p_{lab}" for lab in own]].to_numpy().argmax(axis=1)
        assert figures["own_acc"] == pytest.approx((pd.Series(own).iloc[best_own].to_numpy() == rows["true"]).mean())
    card = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'training'); from pathlib import Path; "
                           "from report import ALTERNATIVES, model_card; "
                           "print(model_card(Path('models/ravdess'), ALTERNATIVES['ravdess']), end='')"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert card.returncode == 0, card.stderr[-2000:]
    assert card.stdout == (ENSEMBLE_MODEL / "README.md").read_text()
    assert card.stdout.startswith("# The RAVDESS-only ensemble (the shipped default until session 36)")
    assert "`models/ravdess` is the RAVDESS-only ensemble of five Keras networks that was the shipped default" \
        in card.stdout and "python training/strangers.py models/ravdess OUT.csv" in card.stdout
    model = tmp_path / "model"                 # --from-table --save: the same file from the table, no predicting
    model.mkdir()
    (model / "spec.json").write_text((ENSEMBLE_MODEL / "spec.json").read_text())
    saved = subprocess.run([sys.executable, "training/strangers.py", str(model), stored["table"], "--from-table",
                            "--save"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert saved.returncode == 0, saved.stderr[-2000:]
    assert json.loads((model / schema.STRANGERS).read_text()) == stored
    ased = stored["corpora"]["ased"]
    assert (f"| ased | {ased['n']} | {100 * ased['own_acc']:.1f} % (20.0 %) | fearful "
            f"{100 * ased['answers']['fearful']:.1f} %") in card.stdout


WHISPER = DEFAULT_MODEL        # the shipped default since session 36: WU2S, a probe on Whisper's encoder


def test_the_default_is_the_whisper_probe_wu2s_trained_on_every_corpus_and_figured_by_its_speaker_folds():
    """models/default (training/build_default.py --recipe training/recipes/whisper_wu2s.json,
    docs/preregistration-session36.md): a probe folder with no network, hearing each clip alone from its first to its
    last sound through the encoder's first 2 blocks in int8 and pooling its frames both alike and weighted by power,
    its calibration fitted on the out-of-fold predictions it ships, its metrics those predictions' (every fold's probe
    trained on its training speakers only: no speaker of a fold in another fold) and WU2S's registered figures, and
    its card what training/report.py writes."""
    import subprocess
    import sys

    import numpy as np

    from conftest import ROOT
    from ser_core import calibration, schema
    from ser_core import whisper
    from ser_core.predict import read_probe

    spec = ModelSpec.load(WHISPER / "spec.json")
    assert spec.arch == schema.PROBE_ARCH and modeldir.is_model_dir(WHISPER) and modeldir.network_dirs(WHISPER) == []
    assert spec.extra["dataset"] == "ased+emovo+ravdess+urdu" and spec.extra["channel_copies"] == "babble:1+loudbabble:2"
    assert whisper.recorded_setup(spec.extra) == whisper.Setup(unpadded=True, layers=2, level=True, compute="int8",
                                                               pooling="both", speech_only=True)
    assert spec.extra["candidate"].startswith("WU2S ")
    probe = read_probe(WHISPER / schema.PROBE, len(spec.labels), 2 * whisper.VECTOR_SIZE)
    assert np.abs(probe["coef"]).max() > 0
    preds = pd.read_csv(WHISPER / "predictions.csv")
    assert len(preds) == 4902 and preds["file"].is_unique
    assert preds.groupby("speaker")["fold"].nunique().max() == 1            # each speaker in one fold only
    for fold, actors in enumerate(EMOBOX_RAVDESS_FOLDS, start=1):
        rav = preds[(preds["corpus"] == "ravdess") & (preds["fold"] == fold)]
        assert set(rav["actor"]) == set(actors)
    stored = calibration.fit_table(preds)
    calib = spec.extra[calibration.SPEC_KEY]
    assert calib["temperature"] == pytest.approx(stored.temperature) and calib["threshold"] == 0.5
    metrics = json.loads((WHISPER / "metrics.json").read_text())
    again = evaluation.evaluate(preds, list(spec.labels))
    assert metrics["accuracy"] == pytest.approx(again["accuracy"], abs=1e-9)
    rav = metrics["per_corpus"]["ravdess"]
    assert rav["accuracy"] == pytest.approx(again["per_corpus"]["ravdess"]["accuracy"])
    # WU2S's figures (emobox6_WU2S_probe_summary.json, docs/preregistration-session36.md)
    own = {c: round(100 * v["own"]["accuracy"], 1) for c, v in metrics["per_corpus"].items()}
    assert own == {"ased": 86.4, "emovo": 48.8, "ravdess": 68.8, "urdu": 54.5}
    assert round(100 * rav["own"]["uar"], 1) == 68.5
    assert (calib["ece_before"], calib["ece_after"]) == (pytest.approx(0.118, abs=5e-4), pytest.approx(0.013, abs=5e-4))
    loco = pd.read_csv(WHISPER / "loco_predictions.csv")
    assert set(loco["corpus"]) == {"ravdess", "ased", "emovo", "urdu"} and len(loco) == 4902
    card = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'training'); "
                           "from report import model_card; print(model_card(), end='')"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert card.returncode == 0, card.stderr[-2000:]
    assert card.stdout == (WHISPER / "README.md").read_text()
    assert card.stdout.startswith("# The shipped default model\n") and "not the default" not in card.stdout


def test_the_default_probe_answers_from_the_command_line(sample_clip):
    """`ser predict --json` without --model, a real subprocess: its answer is the shipped probe's, calibrated,
    with the probabilities of all eight emotions."""
    import subprocess
    import sys

    from conftest import ROOT
    from ser_core.predict import load_predictor

    out = subprocess.run([sys.executable, "-m", "ser_core", "predict", "--json", str(sample_clip)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    want = load_predictor(WHISPER).predict_file(sample_clip)
    assert got["emotion"] == want.emotion and got["confidence"] == pytest.approx(want.confidence, abs=1e-4)
    assert sum(got["probabilities"].values()) == pytest.approx(1.0, abs=1e-4) and len(got["probabilities"]) == 8


def test_the_defaults_adapted_mode_is_wu2a_h_with_the_figures_committed_for_it():
    """The adapted mode shipped in session 39 (docs/preregistration-session39.md, addendum 1): WU2A-H, its record
    holding the committed measurement's figures (training/results/candidates/adapted_WU2A-H.json), the single-clip
    half the folder's own probe (C 0.01), its held-out rows those figures were read from."""
    from conftest import ROOT, training_module
    from ser_core import schema
    from ser_core.predict import load_predictor

    ap = training_module("adapt_probe")
    measured = json.loads((ROOT / "training/results/candidates/adapted_WU2A-H.json").read_text())
    record = json.loads((WHISPER / schema.ADAPTED).read_text())
    assert record["candidate"] == "WU2A-H" and record["hybrid"] is True
    assert record["single_clip_C"] == ModelSpec.load(WHISPER / "spec.json").extra["C"] == 0.01
    assert record["figures"] == json.loads(json.dumps(ap.card_figures(measured)))
    own = {c: round(100 * v["own_accuracy"], 1) for c, v in record["figures"]["loco"].items()}
    assert own == {"ravdess": 34.6, "ased": 44.1, "emovo": 35.2, "urdu": 49.8}
    assert record["figures"]["shifts"]["max_drop"]["points"] < 10
    rows = pd.read_csv(WHISPER / record["table"])
    for corpus, v in record["figures"]["loco"].items():      # every clip once per reference draw
        part = rows[rows["corpus"] == corpus]
        assert len(part) == ap.DRAWS * len(set(part["file"]))
        own_labels = sorted(set(part["true"]))                 # answers among the corpus's own emotions
        answer = part[[f"p_{e}" for e in own_labels]].fillna(0).to_numpy().argmax(axis=1)   # calm: unknown
        assert (pd.Series(own_labels).iloc[answer].to_numpy() == part["true"].to_numpy()).mean() == \
            pytest.approx(v["own_accuracy"], abs=1e-3)
    assert load_predictor(WHISPER).adapted.calibration.temperature == record["calibration"]["temperature"]


def test_the_default_answers_a_folder_adapted_from_the_command_line(tmp_path):
    """`ser predict --adapt FOLDER --json` with the shipped default, a real subprocess: every clip of the folder
    answered, marked adapted, the answers those of the engine's adapted path."""
    import subprocess
    import sys

    from conftest import ROOT, SAMPLES
    from ser_core.predict import load_predictor

    out = subprocess.run([sys.executable, "-m", "ser_core", "predict", "--adapt", "--json", str(SAMPLES)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    clips = sorted(SAMPLES.glob("*.flac"))
    assert len(rows) == len(clips) == 32 and all(r["adapted"] is True for r in rows)
    want, n = load_predictor(WHISPER).predict_adapted([str(p) for p in clips])
    got = {Path(r["file"]).name: r for r in rows}
    for p, w in zip(clips, want):
        assert got[p.name]["emotion"] == w.emotion
        assert got[p.name]["confidence"] == pytest.approx(w.confidence, abs=1e-4)
    assert f"its {n} clips with speech are the reference" in out.stderr
