"""Session 38's probe adapted to a recording setup (ser_core.adapt, training/adapt_probe.py,
docs/preregistration-session38.md): the reference's statistics, a setup moved as a whole answering the same once
adapted, no held-out label read, and the temperature's two weightings."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from test_encoder_probe import _work

from ser_core import adapt
from ser_core.errors import SERError


@pytest.fixture(scope="module")
def ap():
    from conftest import training_module

    return training_module("adapt_probe")


def test_a_reference_needs_enough_clips_and_sets_mean_and_spread():
    rng = np.random.default_rng(0)
    v = rng.normal(3.0, 2.0, (adapt.REFERENCE_CLIPS, 4))
    with pytest.raises(SERError, match=f"at least {adapt.REFERENCE_CLIPS} clips with speech.*19 given"):
        adapt.reference_stats(v[:-1])
    mean, sd = adapt.reference_stats(v)
    z = adapt.standardise(v, (mean, sd))
    assert z.mean(axis=0) == pytest.approx(np.zeros(4), abs=1e-9)
    assert z.std(axis=0) == pytest.approx(np.ones(4), abs=1e-5)
    v[0, 0] = np.nan
    with pytest.raises(SERError, match="not finite"):
        adapt.reference_stats(v)


def test_logits_are_the_probe_reading_the_reference_standardised_vectors():
    rng = np.random.default_rng(1)
    probe = {"mean": rng.normal(0, 1, 5), "std": rng.uniform(0.5, 2, 5), "coef": rng.normal(0, 1, (3, 5)),
             "bias": rng.normal(0, 1, 3)}
    ref = rng.normal(4, 3, (30, 5))
    stats = adapt.reference_stats(ref)
    x = rng.normal(4, 3, (7, 5))
    z = ((x - ref.mean(axis=0)) / (ref.std(axis=0) + adapt.SD_FLOOR) - probe["mean"]) / probe["std"]
    assert adapt.logits(x, stats, probe) == pytest.approx(z @ probe["coef"].T + probe["bias"])
    p = adapt.softmax(adapt.logits(x, stats, probe), 2.0)
    assert p.sum(axis=1) == pytest.approx(np.ones(7)) and (p > 0).all()
    # the same setup moved and scaled as a whole (another microphone) reads the same once adapted
    moved = adapt.logits(x * 3 + 10, adapt.reference_stats(ref * 3 + 10), probe)
    assert moved == pytest.approx(adapt.logits(x, stats, probe), rel=1e-4)    # up to SD_FLOOR


def test_a_held_out_corpus_moved_as_a_whole_answers_the_same_and_its_labels_are_not_read(ap, tmp_path):
    """URDU's vectors moved far change nothing of its answers once it is standardised by its own clips, and
    shuffling its labels changes neither its answers nor the temperature (fitted on the training corpora only)."""
    choices = tmp_path / "choices.json"
    choices.write_text(json.dumps({c: {"C": 0.1} for c in ("ravdess", "ased", "emovo", "urdu")}))
    got = {}
    for shift in (0.0, 5.0):
        work = _work(tmp_path / f"s{shift}", np.random.default_rng(2), shift)
        got[shift] = ap.measure(work, choices, tmp_path / f"out{shift}.json")
    t = {s: pd.read_csv(tmp_path / f"out{s}_predictions.csv.gz") for s in got}
    urdu = {s: v[v["corpus"] == "urdu"].sort_values(["reference", "file"]) for s, v in t.items()}
    assert (urdu[0.0]["pred"].to_numpy() == urdu[5.0]["pred"].to_numpy()).all()
    assert got[0.0]["loco"]["urdu"]["temperature"] == got[5.0]["loco"]["urdu"]["temperature"]
    assert len(got[0.0]["loco"]["urdu"]["reference_20"]["draws"]) == ap.DRAWS
    # 20 clips of one emotion as the reference: that emotion's direction is taken out (reported, not hidden)
    assert set(got[0.0]["loco"]["urdu"]["one_emotion_reference_own_accuracy"]) == {"neutral", "happy", "sad", "angry"}

    work = tmp_path / "s0.0" / "work0.0"
    manifest = pd.read_csv(work / "manifest_urdu.csv")
    manifest["emotion"] = np.random.default_rng(0).permutation(manifest["emotion"].to_numpy())
    manifest.to_csv(work / "manifest_urdu.csv", index=False)
    shuffled = ap.measure(work, choices, tmp_path / "shuffled.json")
    s = pd.read_csv(tmp_path / "shuffled_predictions.csv.gz")
    s = s[s["corpus"] == "urdu"].sort_values(["reference", "file"])
    assert (s["pred"].to_numpy() == urdu[0.0]["pred"].to_numpy()).all()
    assert shuffled["loco"]["urdu"]["temperature"] == got[0.0]["loco"]["urdu"]["temperature"]


def _sample(rng, logits, temperature):
    p = adapt.softmax(logits, temperature)
    return np.array([rng.choice(p.shape[1], p=row) for row in p])


def test_the_temperature_is_recovered_and_corpora_can_weigh_alike(ap):
    rng = np.random.default_rng(3)
    big_s, small_s = rng.normal(0, 3, (4000, 4)), rng.normal(0, 3, (400, 4))
    big = (big_s, _sample(rng, big_s, 1.0), "big")          # a large corpus calibrated at T = 1
    small = (small_s, _sample(rng, small_s, 4.0), "small")  # a small one needing T = 4
    assert ap.fit_temperature([big]) == pytest.approx(1.0, rel=0.1)
    assert ap.fit_temperature([small]) == pytest.approx(4.0, rel=0.2)
    by_clips = ap.fit_temperature([big, small], "clips")
    by_corpora = ap.fit_temperature([big, small], "corpora")
    assert by_clips < 1.5 < by_corpora            # the big corpus sets most of it, unless corpora weigh alike
    with pytest.raises(ValueError, match="weighting"):
        ap.fit_temperature([big], "speakers")


def test_copies_are_standardised_as_setups_of_their_own_and_weigh_as_told(ap, tmp_path):
    """A copy moved far as a whole (a loud recording chain) is standardised by its own group, so it trains as its
    clip does; copies weighing 1/1000 leave the probe almost as it is without them."""
    from ser_core import splits

    work = _work(tmp_path, np.random.default_rng(4))
    df, x = ap.ep.load_vectors(work)
    df = df.reset_index(drop=True)
    rows = (df["corpus"] != "urdu").to_numpy()
    same = np.stack([x, x, x], axis=1)
    moved = np.stack([x, x * 4 + 30, x - 7], axis=1)
    a, _ = ap.train(x, df, rows, 0.1, same)
    b, _ = ap.train(x, df, rows, 0.1, moved)
    assert b["coef"] == pytest.approx(a["coef"], rel=1e-3, abs=1e-4)
    noise = np.random.default_rng(5).normal(0, 3, same.shape)
    plain, _ = ap.train(x, df, rows, 0.1)
    light, _ = ap.train(x, df, rows, 0.1, noise, copy_weight=1e-3)
    heavy, _ = ap.train(x, df, rows, 0.1, noise)
    assert np.abs(light["coef"] - plain["coef"]).max() < 0.2 * np.abs(heavy["coef"] - plain["coef"]).max()


def test_shift_figures_are_points_under_clean_over_all_folds(ap):
    right = {"clean": [np.ones((2, 10), bool), np.r_[np.ones(5), np.zeros(5)].astype(bool)[None].repeat(2, 0)],
             "babble10db": [np.zeros((2, 10), bool), np.zeros((2, 10), bool)]}
    f = ap.shift_figures(right)
    assert f["clean"] == {"accuracy": 0.75, "drop": 0.0}
    assert f["babble10db"] == {"accuracy": 0.0, "drop": 75.0}
    assert f["max_drop"] == {"shift": "babble10db", "points": 75.0}


def test_speaker_folds_and_shifts_adapt_each_condition_from_its_own_clips(ap, tmp_path):
    """Under the speaker folds, a shift that moves and scales every clip alike costs next to nothing once each
    condition is adapted from its own clips (only the references differ, each condition's drawn apart), one that
    replaces the speech with noise costs its accuracy; the RAVDESS gender gap is read as every gap is
    (``evaluation.gender_gap``)."""
    from test_encoder_probe import _speaker_work

    from ser_core import channel, robustness, splits

    work = _speaker_work(tmp_path)
    df, x = ap.ep.load_vectors(work)
    df = df.reset_index(drop=True)
    conditions = [robustness.CLEAN, *channel.SHIFTS]
    rng = np.random.default_rng(7)
    for fold in range(1, 7):
        test = splits.make_split(df, "emobox6", fold, n_val=0).test
        rows = df.iloc[test]
        rows = rows[rows["corpus"] == "ravdess"]
        v = x[rows.index]
        shifted = np.stack([v if c == robustness.CLEAN else rng.normal(0, 1, v.shape) if c == "babble10db"
                            else v * 2 + 1 for c in conditions], axis=1)
        np.savez(work / f"shifted_ravdess_fold{fold}_seed0.npz", vectors=shifted,
                 path=np.asarray(rows["path"].tolist()), conditions=np.asarray(conditions))
    choices = tmp_path / "c.json"
    choices.write_text(json.dumps({str(k): {"C": 0.1} for k in range(1, 7)}))
    loco_choices = tmp_path / "l.json"
    loco_choices.write_text("{}")
    got = ap.measure(work, loco_choices, tmp_path / "e.json", choices, parts=("emobox6", "shifts"))
    shifts = got["shifts"]
    assert shifts["clean"]["accuracy"] > 0.6
    assert all(abs(shifts[c]["drop"]) < 5 for c in conditions if c not in ("clean", "babble10db"))
    assert shifts["max_drop"] == {"shift": "babble10db", "points": shifts["babble10db"]["drop"]}
    assert shifts["babble10db"]["drop"] > 20
    assert -1 < got["emobox6"]["ravdess_gender_gap"] < 1 and "loco" not in got


def test_own_accuracy_reads_each_corpus_own_emotions_and_weighs_corpora_alike(ap):
    s = np.array([[0.0, 5.0, 1.0], [0.0, 5.0, 1.0], [3.0, 0.0, 1.0]])
    # corpus "a" holds labels 0 and 2 only: label 1's high score is not its answer, so both rows read 2, 0
    a = (s, np.array([2, 2, 0]), "a")
    b = (np.array([[1.0, 0.0, 0.0]] * 4), np.array([0, 1, 1, 1]), "b")      # one of four right
    assert ap.own_accuracy([a]) == 1.0
    assert ap.own_accuracy([a, b, b]) == pytest.approx((1.0 + 0.25) / 2)    # draws of b averaged first


def test_c_is_chosen_from_the_training_corpora_alone(ap, tmp_path):
    """With --c-grid (session 39), each corpus left out gets a C chosen inside the other three: shuffling URDU's
    labels leaves URDU's fold's C, inner accuracies and temperature as they were, and the chosen C is the grid's
    best inside."""
    work = _work(tmp_path, np.random.default_rng(2))
    grid = (0.01, 0.1, 1.0)
    got = ap.measure(work, None, tmp_path / "a.json", grid=grid)
    urdu = got["loco"]["urdu"]
    assert urdu["C"] in grid and set(urdu["inner_own_accuracy"]) == {"0.01", "0.1", "1"}
    assert urdu["inner_own_accuracy"][f"{urdu['C']:g}"] == max(urdu["inner_own_accuracy"].values())
    assert "--c-grid 0.01,0.1,1 " in got["made_by"] and "--loco-choices" not in got["made_by"]
    manifest = pd.read_csv(work / "manifest_urdu.csv")
    manifest["emotion"] = np.random.default_rng(0).permutation(manifest["emotion"].to_numpy())
    manifest.to_csv(work / "manifest_urdu.csv", index=False)
    shuffled = ap.measure(work, None, tmp_path / "b.json", grid=grid)["loco"]["urdu"]
    assert {k: shuffled[k] for k in ("C", "inner_own_accuracy", "temperature")} == \
        {k: urdu[k] for k in ("C", "inner_own_accuracy", "temperature")}
    assert shuffled["reference_20"] != urdu["reference_20"]         # its own figures do read its labels


@pytest.mark.parametrize("args, message", [
    (["--c-grid", "0.1,x"], "numbers separated by commas"),
    (["--c-grid", "0.1,0"], "above 0"),
    (["--c-grid", "0.1", "--loco-choices", "c.json"], "without --loco-choices"),
    ([], "--loco-choices or --c-grid"),
])
def test_measure_refuses_a_wrong_c_grid_with_its_reason(ap, args, message, capsys):
    with pytest.raises(SystemExit) as e:
        ap.main(["measure", "--work", "w", "--out", "o.json", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_the_hybrid_multiplies_the_two_answers_and_takes_each_halfs_c_where_registered(ap, tmp_path):
    """WU2A-H (session 39): its probabilities are the adapted and single-clip probes' multiplied and renormalised;
    the single-clip half is WU2S's probe with the choices file's C, the adapted half's C comes from the grid."""
    rng = np.random.default_rng(8)
    a, s = rng.normal(0, 2, (5, 4)), rng.normal(0, 2, (5, 4))
    want = adapt.softmax(a) * adapt.softmax(s)
    assert adapt.softmax(adapt.hybrid(a, s)) == pytest.approx(want / want.sum(axis=1, keepdims=True))

    work = _work(tmp_path, np.random.default_rng(2))
    df, x = ap.ep.load_vectors(work)
    df = df.reset_index(drop=True)
    rows = (df["corpus"] != "urdu").to_numpy()
    probe, labels = ap.train(x, df, rows, 0.1, single_c=0.3)
    clf, _ = ap.ep.probe(x, df, rows, 0.3)
    assert probe["single"]["coef"] == pytest.approx(clf.coef_) and probe["single"]["labels"] == labels
    stats = adapt.reference_stats(x[~rows])
    assert ap.read(x[~rows], stats, probe) == pytest.approx(
        adapt.hybrid(adapt.logits(x[~rows], stats, probe), clf.decision_function((x[~rows] - probe["single"]["mean"])
                                                                                  / probe["single"]["std"])))
    choices = tmp_path / "choices.json"
    choices.write_text(json.dumps({c: {"C": 0.3} for c in ("ravdess", "ased", "emovo", "urdu")}))
    got = ap.measure(work, choices, tmp_path / "h.json", grid=(0.01, 1.0), hybrid=True)
    assert got["hybrid"] and "--hybrid" in got["made_by"] and "--loco-choices" in got["made_by"]
    assert all(v["single_clip_C"] == 0.3 and v["C"] in (0.01, 1.0) for v in got["loco"].values())
    with pytest.raises(SystemExit):
        ap.main(["measure", "--work", "w", "--out", "o.json", "--hybrid", "--loco-choices", "c.json"])


# ---------------------------------------------------------------------------- the product's adapted mode
@pytest.fixture(scope="module")
def adapted_dir(tmp_path_factory):
    """A probe folder (the fast setup) trained on the 32 bundled clips, and its adapted probe: trained on the
    same clips standardised by themselves, temperature 1.5."""
    from sklearn.linear_model import LogisticRegression
    from test_whisper import FAST, make_probe, sample_waves

    from conftest import training_module
    from ser_core.calibration import SPEC_KEY, Calibration
    from ser_core.config import EMOTIONS
    from ser_core.predict import whisper_encoder, write_adapted
    from ser_core.schema import ENCODER_SETUP

    enc = whisper_encoder(FAST)
    d, x, emotions, _ = make_probe(enc, tmp_path_factory.mktemp("adapted") / "probe", {ENCODER_SETUP: FAST.to_dict()})
    z1 = adapt.standardise(x, adapt.reference_stats(x))
    mu, sd = z1.mean(axis=0), z1.std(axis=0) + adapt.SD_FLOOR
    clf = LogisticRegression(C=1.0, max_iter=2000).fit((z1 - mu) / sd, emotions)
    arrays = training_module("whisper_probe").probe_arrays(clf, mu, sd, list(EMOTIONS))
    write_adapted(d, arrays, {SPEC_KEY: Calibration(temperature=1.5).to_dict(), "candidate": "test"})
    return d, x, arrays


def test_the_adapted_mode_reads_each_clip_standardised_by_the_folders_clips(adapted_dir):
    """Through the product's path (decode, speech check, encoder), each clip of a folder gets the adapted
    probe's probabilities of its vector standardised by all the folder's clips, at the stored temperature."""
    from conftest import SAMPLES
    from ser_core.config import EMOTIONS
    from ser_core.predict import load_predictor

    d, x, arrays = adapted_dir
    pred = load_predictor(d)
    paths = [str(p) for p in sorted(SAMPLES.glob("*.flac"))]
    answers, n_ref = pred.predict_adapted(paths)
    assert n_ref == len(paths) == 32
    want = adapt.softmax(adapt.logits(x, adapt.reference_stats(x), arrays), 1.5)
    for i, a in enumerate(answers):
        np.testing.assert_allclose([a.probabilities[e] for e in EMOTIONS], want[i], atol=2e-4)
        assert a.not_sure == (a.confidence < 0.5)
    # the one-clip answers are the folder's probe's, unchanged, and each adapted answer carries its clip's (shown
    # beside it, and in a JSON row)
    for i in (0, 17):
        alone = pred.predict_file(paths[i])
        assert alone.probabilities != answers[i].probabilities
        assert answers[i].one_clip.summary() == alone.summary() and answers[i].one_clip.best == alone.best
        assert answers[i].one_clip.confidence == pytest.approx(alone.confidence, abs=1e-6)
        assert answers[i].to_dict()["one_clip"]["best"] == alone.best and "one_clip" not in alone.to_dict()


def test_a_folder_mostly_one_mood_by_its_one_clip_answers_is_told_so():
    from ser_core.predict import ONE_MOOD_SHARE, Prediction, one_mood, one_mood_note

    assert ONE_MOOD_SHARE == 0.6
    assert one_mood(["sad"] * 6 + ["angry"] * 4) == ("sad", 6, 10)                # 60 %: told
    assert one_mood(["sad"] * 5 + ["angry"] * 4 + [None] * 3) is None             # 5 of 9 heard: not
    assert one_mood(["sad", "angry"] * 3, share=0.5) == ("angry", 3, 6)           # a tie: the most recent
    assert one_mood([None, None]) is None and one_mood([]) is None

    def answer(best, alone):
        one = Prediction("x", alone, 0.9, {}, 1.0, best=alone)
        return Prediction("x", best, 0.9, {}, 1.0, best=best, one_clip=one)

    folder = [answer("neutral", "angry")] * 14 + [answer("angry", "sad")] * 6 + [ValueError("broken")]
    note = one_mood_note(folder)
    assert note.startswith("14 of these 20 clips sound angry one clip at a time") and "takes that mood out" in note
    assert one_mood_note([answer("neutral", e) for e in ("angry", "sad", "happy", "calm")] * 5) is None


def test_a_hybrid_adapted_mode_multiplies_in_the_folders_own_answer(adapted_dir, tmp_path):
    """WU2A-H as the product reads it: the adapted probe's and the folder's single-clip probe's answers
    multiplied, then the stored temperature."""
    import shutil

    from conftest import SAMPLES
    from ser_core.config import EMOTIONS
    from ser_core.predict import load_predictor, probe_input, read_adapted, write_adapted

    d = tmp_path / "hybrid"
    shutil.copytree(adapted_dir[0], d)
    stored = read_adapted(d, 8, adapted_dir[1].shape[1])
    write_adapted(d, stored.arrays, {**stored.record, "hybrid": True})
    pred = load_predictor(d)
    answers, _ = pred.predict_adapted([str(p) for p in sorted(SAMPLES.glob("*.flac"))])
    x, arrays = adapted_dir[1], adapted_dir[2]
    single = probe_input(x, pred.probe) @ pred.probe["coef"].T + pred.probe["bias"]
    want = adapt.softmax(adapt.hybrid(adapt.logits(x, adapt.reference_stats(x), arrays), single), 1.5)
    got = np.array([[a.probabilities[e] for e in EMOTIONS] for a in answers])
    np.testing.assert_allclose(got, want, atol=2e-4)
    plain, _ = load_predictor(adapted_dir[0]).predict_adapted([str(p) for p in sorted(SAMPLES.glob("*.flac"))])
    assert np.abs(got - np.array([[a.probabilities[e] for e in EMOTIONS] for a in plain])).max() > 0.01


def test_the_adapted_mode_refuses_too_few_clips_and_a_model_without_it(adapted_dir, probe_dir_plain):
    from conftest import SAMPLES
    from ser_core.errors import ModelError
    from ser_core.predict import load_predictor

    paths = [str(p) for p in sorted(SAMPLES.glob("*.flac"))]
    with pytest.raises(SERError, match=r"at least 20 clips with speech.*19 of the 19 given"):
        load_predictor(adapted_dir[0]).predict_adapted(paths[:19])
    with pytest.raises(ModelError, match="no probe adapted to a recording setup"):
        load_predictor(probe_dir_plain).predict_adapted(paths)


@pytest.fixture(scope="module")
def probe_dir_plain(adapted_dir, tmp_path_factory):
    """The same probe folder without its adapted probe."""
    import shutil

    from ser_core.schema import ADAPTED, ADAPTED_PROBE

    d = tmp_path_factory.mktemp("plain") / "probe"
    shutil.copytree(adapted_dir[0], d)
    (d / ADAPTED).unlink()
    (d / ADAPTED_PROBE).unlink()
    return d


def test_a_damaged_adapted_probe_is_refused_with_its_reason(adapted_dir, tmp_path):
    import shutil

    from ser_core.errors import ModelError
    from ser_core.predict import load_predictor
    from ser_core.schema import ADAPTED, ADAPTED_PROBE

    d = tmp_path / "m"
    shutil.copytree(adapted_dir[0], d)
    (d / ADAPTED).write_text("{not json")
    with pytest.raises(ModelError, match="missing or unreadable"):
        _ = load_predictor(d).adapted
    (d / ADAPTED).write_text(json.dumps({"calibration": {"temperature": -1}}))
    with pytest.raises(ModelError, match="unreadable calibration"):
        _ = load_predictor(d).adapted
    (d / ADAPTED).write_text(json.dumps({"calibration": {"temperature": 1.0}}))
    np.savez(d / ADAPTED_PROBE, mean=np.zeros(3), std=np.ones(3), coef=np.zeros((8, 3)), bias=np.zeros(8))
    with pytest.raises(ModelError, match="does not match"):
        _ = load_predictor(d).adapted


def test_ser_predict_adapt_answers_a_folder_and_says_what_it_adapted_to(adapted_dir, tmp_path):
    """The command line, as a user runs it: a folder's clips adapted (one JSON line each, marked), a damaged file
    reported in its row while the others are answered, --explain refused with --adapt, a folder too small
    refused with its reason; never a traceback."""
    import shutil
    import subprocess
    import sys

    from conftest import SAMPLES
    from ser_core.cli import EXIT_ERROR

    folder = tmp_path / "setup"
    shutil.copytree(SAMPLES, folder)
    (folder / "broken.wav").write_bytes(b"RIFF not audio")
    run = lambda *a: subprocess.run([sys.executable, "-m", "ser_core", "predict", "--model", str(adapted_dir[0]),  # noqa: E731
                                     *a], capture_output=True, text=True, timeout=300)
    r = run("--adapt", "--json", str(folder))
    assert r.returncode == EXIT_ERROR, r.stderr            # one file failed
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 33 and sum("error" in row for row in rows) == 1
    assert all(row.get("adapted") is True and row["one_clip"]["best"] for row in rows if "error" not in row)
    assert "its 32 clips with speech are the reference" in r.stderr and "Traceback" not in r.stderr
    assert "one clip at a time" not in r.stderr              # 32 clips of eight emotions: no one-mood warning
    r = run("--adapt", "--explain", str(tmp_path / "why"), str(folder))
    assert r.returncode != 0 and "does not go with --adapt" in r.stderr and "Traceback" not in r.stderr
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(SAMPLES.glob("*.flac"))[:5]:
        shutil.copy(p, few)
    r = run("--adapt", str(few))
    assert r.returncode != 0 and "at least 20 clips with speech" in r.stderr and "Traceback" not in r.stderr
    for i in range(15):                                       # one clip 16 times in 20: a folder mostly one mood
        shutil.copy(sorted(SAMPLES.glob("*.flac"))[0], few / f"again-{i}.flac")
    r = run("--adapt", str(few))
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert re.search(r"warning: (1[6-9]|20) of these 20 clips sound \w+ one clip at a time", r.stderr)
    assert "takes that mood out" in r.stderr


def test_ship_stores_an_adapted_probe_the_product_reads(ap, adapted_dir, tmp_path):
    """``adapt_probe.py ship`` into a probe folder: the adapted probe trained on every clip of a work folder made
    the folder's way, its temperature fitted by leaving each corpus out, its rows in the model's label order, the
    figures kept; a work folder made another way is refused."""
    import shutil

    from conftest import SAMPLES, training_module
    from test_whisper import FAST

    from ser_core.config import EMOTIONS
    from ser_core.predict import load_predictor, read_adapted

    wp = training_module("whisper_probe")
    d = tmp_path / "model"
    shutil.copytree(adapted_dir[0], d)
    spec = json.loads((d / "spec.json").read_text())
    spec["extra"]["C"] = 0.1
    (d / "spec.json").write_text(json.dumps(spec))
    rng = np.random.default_rng(6)
    centre = {e: rng.normal(0, 1, 768) for e in EMOTIONS}
    work = tmp_path / "work"
    for k, (corpus, emos) in enumerate({"ravdess": EMOTIONS, "ased": EMOTIONS[:5], "urdu": EMOTIONS[:5]}.items()):
        rows = [(corpus, e, f"{corpus}_{e}_{i}.flac", f"s{i % 3}") for e in emos for i in range(10)]
        x = np.stack([centre[e] + rng.normal(0, 1, 768) + 5 * k for _, e, _, _ in rows])
        work.mkdir(exist_ok=True)
        np.savez(work / f"vectors_{corpus}.npz", vectors=x, path=np.array([r[2] for r in rows]))
        pd.DataFrame(rows, columns=["corpus", "emotion", "path", "speaker"]).to_csv(
            work / f"manifest_{corpus}.csv", index=False)
    figures = tmp_path / "adapted_T.json"
    figures.write_text(json.dumps({"made_by": "measure ...", "reference_clips": 20, "draws": 5,
                                   "weighting": "corpora", "channel_copies": None, "loco": {}}))
    held = []                                          # measure's held-out rows: each corpus left out, and folds
    for fold, (corpus, emos) in enumerate({"ravdess": EMOTIONS, "ased": EMOTIONS[:5], "urdu": EMOTIONS[:5]}.items(), 1):
        for draw in range(2):
            held += [{"protocol": "loco", "reference": f"20 clips, draw {draw}", "fold": fold, "file": f"{corpus}_{e}_{i}.flac",
                      "corpus": corpus, "speaker": f"s{i % 3}", "gender": "female", "true": e, "pred": e,
                      "confidence": 0.6, **{f"p_{lab}": 0.6 if lab == e else 0.4 / 7 for lab in EMOTIONS}}
                     for e in emos for i in range(10)]
    held += [{**held[0], "protocol": "emobox6"}]
    pd.DataFrame(held).to_csv(ap.predictions_path(figures), index=False)
    wp.record_setup(work, wp.Setup())                 # another setup than the folder's
    with pytest.raises(SystemExit, match="another way"):
        ap.ship(work, d, figures, "T")
    (work / wp.SETUP_FILE).write_text(json.dumps(FAST.to_dict()))
    ap.ship(work, d, figures, "T")
    got = read_adapted(d, 8, 768)
    assert got.record["candidate"] == "T" and got.record["weighting"] == "corpora"
    assert got.calibration.temperature > 0 and "3 corpora left out in turn" in got.calibration.fitted_on
    # its rows in the model's label order: the centre of each emotion scores highest for that emotion
    cx = np.stack([centre[e] for e in EMOTIONS])
    z = adapt.logits(cx, adapt.reference_stats(np.stack(list(centre.values()) * 3), minimum=2), got.arrays)
    assert (z.argmax(axis=1) == np.arange(8)).mean() >= 0.75
    answers, n = load_predictor(d).predict_adapted(sorted(str(p) for p in SAMPLES.glob("*.flac")))
    assert n == 32 and all(a.best in EMOTIONS for a in answers)
    # the Evaluate page's view of it: each corpus left out (the loco rows only), read as every evaluation is
    from ser_app import eval_views, views

    source = views.adapted_source(d, "Model")
    assert source.protocol.startswith("loco") and source.calibrated
    df, metrics = views.load_source(source)
    assert len(df) == (80 + 50 + 50) * 2 and set(eval_views.loco_folds(df).values()) == {"ravdess", "ased", "urdu"}
    assert eval_views.is_loco(metrics)
    # a candidate whose C was chosen inside the training corpora (session 39) is shipped with C chosen the same way
    figures.write_text(json.dumps({**json.loads(figures.read_text()), "c_grid": [0.001, 0.1]}))
    ap.ship(work, d, figures, "T")
    got = read_adapted(d, 8, 768).record
    assert got["C"] in (0.001, 0.1) and got["c_grid"] == [0.001, 0.1]
    assert got["inner_own_accuracy"][f"{got['C']:g}"] == max(got["inner_own_accuracy"].values())
    # a hybrid (WU2A-H) is shipped marked so, its single-clip half's C the folder's own
    figures.write_text(json.dumps({**json.loads(figures.read_text()), "hybrid": True,       # as measure writes it
                                   "emobox6": {"ravdess": {"mean": {"own_accuracy": 0.7, "ece": 0.2}},
                                               "folds": {"1": {"C": 0.001}}, "ravdess_gender_gap": 0.1}}))
    ap.ship(work, d, figures, "H")
    got = read_adapted(d, 8, 768).record
    assert got["hybrid"] is True and got["single_clip_C"] == 0.1 and got["candidate"] == "H"
    assert got["figures"]["emobox6"] == {"ravdess": {"own_accuracy": 0.7, "ece": 0.2}}
    # the model card says what the mode is and what its recipe measured
    report = training_module("report")
    rec = json.loads((d / "adapted.json").read_text())
    rec["figures"]["loco"] = {"urdu": {"own_accuracy": 0.498, "ece": 0.055, "two_commonest": 0.64,
                                       "not_sure_when_wrong": 0.9, "not_sure_when_right": 0.5}}
    rec["figures"]["shifts"] = {"max_drop": {"shift": "babble10db", "points": 8.0}}
    (d / "adapted.json").write_text(json.dumps(rec))
    card = "\n".join(report.adapted_lines(d))
    assert "**Adapted mode**" in card and "candidate H" in card and "one-clip answer" in card
    assert "| urdu | 49.8 % | 0.055 | 64.0 % | 90.0 % / 50.0 % |" in card and "8.0 points (babble10db)" in card


def test_the_predict_page_reads_many_clips_of_one_setup(adapted_dir, tmp_path, monkeypatch):
    """The Predict page offers the adapted mode only for a model that has it: 32 clips uploaded at once are each
    answered after adapting to all of them (the same answers as the engine's), a damaged file gets its own row,
    and five clips are refused with the reason."""
    import shutil

    from conftest import SAMPLES
    from test_app import errors, start_app

    from ser_core.predict import load_predictor

    models = tmp_path / "models"
    shutil.copytree(adapted_dir[0], models / "default")
    monkeypatch.setenv("SER_MODELS_DIR", str(models))
    monkeypatch.setenv("SER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("SER_DATA_DIR", str(tmp_path / "no-data-here"))
    at = start_app()
    assert "Many clips of one setup" in at.segmented_control(key="p_source").options
    at.segmented_control(key="p_source").set_value("Many clips of one setup").run()
    # what a folder must hold, one person's own recordings included (session 40's measurement)
    assert any("ordinary mix" in c.value and "One person's own recordings" in c.value for c in at.caption)
    clips = sorted(SAMPLES.glob("*.flac"))
    files = [(p.name, p.read_bytes(), "audio/flac") for p in clips] + [("broken.wav", b"RIFF not audio", "audio/wav")]
    at.file_uploader(key="p_setup").set_value(files).run()
    assert not at.exception and not errors(at)
    assert any("its 32 clips with speech are the reference" in s.value for s in at.success)
    assert any("1 file(s) could not be read" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert len(table) == 33 and table.loc[table["file"] == "broken.wav", "answer"].item() == "unreadable"
    want, _ = load_predictor(models / "default").predict_adapted([str(p) for p in clips])
    got = table.set_index("file").loc[[p.name for p in clips], ["answer", "one clip at a time"]]
    assert got["answer"].tolist() == [a.summary() for a in want]
    assert got["one clip at a time"].tolist() == [a.one_clip.summary() for a in want]
    assert not any("one clip at a time" in w.value for w in at.warning)
    at.file_uploader(key="p_setup").set_value(files[:5]).run()
    assert [e.value for e in at.error if "at least 20 clips" in e.value] and not at.exception
    one = [(f"again-{i}.flac", files[0][1], "audio/flac") for i in range(16)] + files[1:5]   # mostly one mood
    at.file_uploader(key="p_setup").set_value(one).run()
    assert any(re.match(r"(1[6-9]|20) of these 20 clips sound", w.value) for w in at.warning) and not at.exception

    (models / "default" / "adapted.json").unlink()                  # a model without it: no such source
    (models / "default" / "adapted_probe.npz").unlink()
    assert "Many clips of one setup" not in start_app().segmented_control(key="p_source").options
