"""Candidate L's parts (training/encoder_probe.py, docs/preregistration-session15.md): the output correction
fitted on held-out predictions, own-emotion accuracy, and nested leave-one-corpus-out that never reads the
outer held-out corpus."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def probe_mod():
    from conftest import training_module

    return training_module("encoder_probe")


def _sample(rng, logits, temperature, bias):
    s = logits / temperature + bias
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return np.array([rng.choice(len(bias), p=row) for row in p])


def test_the_correction_recovers_a_known_temperature_and_bias(probe_mod):
    rng = np.random.default_rng(0)
    labels = ["neutral", "happy", "sad", "angry"]
    t0, b0 = 2.0, np.array([0.8, -0.4, 0.1, -0.5])          # zero mean: the L2 penalty picks that solution
    folds = []
    for _ in range(2):
        logits = rng.normal(0, 3, (6000, 4))
        y = _sample(rng, logits, t0, b0)
        folds.append((logits, labels, np.asarray(labels)[y], np.ones(len(y))))
    t, b = probe_mod.fit_correction(folds, labels)
    assert t == pytest.approx(t0, rel=0.08)
    assert np.array([b[k] for k in labels]) == pytest.approx(b0, abs=0.1)


def test_a_label_a_fold_never_trained_on_takes_its_bias_from_the_other_fold(probe_mod):
    rng = np.random.default_rng(1)
    labels = ["neutral", "happy", "sad"]
    b0 = np.array([0.0, 1.0, -1.0])
    full = rng.normal(0, 2, (4000, 3))
    y = np.asarray(labels)[_sample(rng, full, 1.0, b0)]
    # the second fold's probe knows neutral and happy only; its sad clips cannot be scored and are left out
    part = rng.normal(0, 2, (4000, 2))
    y2 = np.asarray(labels)[_sample(rng, np.c_[part, np.full(len(part), -np.inf)], 1.0, b0)]
    y2[:50] = "sad"
    t, b = probe_mod.fit_correction([(full, labels, y, np.ones(len(y))),
                                     (part, labels[:2], y2, np.ones(len(y2)))], labels)
    assert t == pytest.approx(1.0, rel=0.1)
    assert b["happy"] - b["neutral"] == pytest.approx(1.0, abs=0.15)
    assert b["sad"] - b["neutral"] == pytest.approx(-1.0, abs=0.2)


def test_own_accuracy_answers_among_the_corpus_emotions_only(probe_mod):
    labels = ["neutral", "calm", "happy", "sad"]
    logits = np.array([[0.0, 5.0, 1.0, 0.0],      # calm wins overall; among neutral/happy/sad, happy: right
                       [2.0, 9.0, 0.0, 1.0],      # neutral: wrong
                       [0.0, 9.0, 0.0, 3.0]])     # sad: wrong
    truth = np.array(["happy", "sad", "neutral"])  # a corpus without calm (its clips' labels are its emotions)
    assert probe_mod.own_accuracy(logits, labels, truth) == pytest.approx(1 / 3)


def _work(tmp_path: Path, rng, shift_urdu: float = 0.0) -> Path:
    emotions = {"ravdess": ["neutral", "calm", "happy", "sad", "angry"], "ased": ["neutral", "happy", "sad", "angry"],
                "emovo": ["neutral", "happy", "sad", "angry", "disgust"], "urdu": ["neutral", "happy", "sad", "angry"]}
    centre = {e: rng.normal(0, 1, 6) for e in ["neutral", "calm", "happy", "sad", "angry", "disgust"]}
    work = tmp_path / f"work{shift_urdu}"
    work.mkdir(parents=True)
    for k, (corpus, emos) in enumerate(emotions.items()):
        rows = [(corpus, e, f"{corpus}_{e}_{i}.flac", f"s{i % 3}") for e in emos for i in range(12)]
        crng = np.random.default_rng(k)          # each corpus's vectors from its own stream
        x = np.stack([centre[e] + crng.normal(0, 1.2, 6) + k * 0.3 for _, e, _, _ in rows])
        if corpus == "urdu":
            x = x + shift_urdu
        np.savez(work / f"vectors_{corpus}.npz", vectors=x, path=np.array([r[2] for r in rows]))
        pd.DataFrame(rows, columns=["corpus", "emotion", "path", "speaker"]).to_csv(
            work / f"manifest_{corpus}.csv", index=False)
    return work


def test_nested_choices_never_read_the_held_out_corpus(probe_mod, tmp_path):
    outs = []
    for shift in (0.0, 5.0):            # URDU's vectors moved far: URDU's own fold must choose the same
        work = _work(tmp_path, np.random.default_rng(2), shift)
        out = tmp_path / f"L{shift}.csv"
        table = probe_mod.nested_loco(work, out)
        choices = json.loads((tmp_path / f"L{shift}_choices.json").read_text())
        outs.append((table, choices))
    (t0, c0), (_, c1) = outs
    assert c0["urdu"] == c1["urdu"]                       # nothing of URDU went into its fold's choices
    assert c0["ased"] != c1["ased"]                       # ... while the folds that train on URDU see it
    assert set(c0) == {"ravdess", "ased", "emovo", "urdu"}
    assert all(c["C"] in probe_mod.C_GRID and c["temperature"] > 0 for c in c0.values())
    assert len(t0) == 12 * (5 + 4 + 5 + 4) and t0.groupby("corpus")["fold"].nunique().eq(1).all()
    p = t0[[f"p_{e}" for e in ["neutral", "calm", "happy", "sad", "angry", "disgust"]]].fillna(0).to_numpy()
    assert p.sum(axis=1) == pytest.approx(np.ones(len(p)))
    # the fold holding RAVDESS out never trained on calm: no calm probability there
    assert t0.loc[t0["corpus"] == "ravdess", "p_calm"].isna().all()


def _noise_like(work: Path, dest: Path, rng) -> Path:
    """A copy of ``work`` whose vectors are noise: the same clips, in the same order, nothing to learn."""
    dest.mkdir()
    for f in work.glob("manifest_*.csv"):
        (dest / f.name).write_text(f.read_text())
    for f in work.glob("vectors_*.npz"):
        with np.load(f) as z:
            np.savez(dest / f.name, vectors=rng.normal(0, 1, z["vectors"].shape), path=z["path"])
    return dest


def test_nested_folds_choose_the_vector_folder_that_carries_the_emotions(probe_mod, tmp_path):
    """WL: with another folder of the same clips, each outer fold picks the folder (with C) by its inner folds:
    the informative one, whichever is given first; a copy of the first folder ties and the first is kept."""
    rng = np.random.default_rng(3)
    good = _work(tmp_path, rng)
    noise = _noise_like(good, tmp_path / "noise", rng)
    probe_mod.nested_loco(noise, tmp_path / "WL.csv", alternatives=(good,))
    picked = json.loads((tmp_path / "WL_choices.json").read_text())
    assert {c["vectors"] for c in picked.values()} == {str(good)}
    probe_mod.nested_loco(good, tmp_path / "WLtie.csv", alternatives=(good,))
    tied = json.loads((tmp_path / "WLtie_choices.json").read_text())
    assert {c["vectors"] for c in tied.values()} == {str(good)}
    plain = probe_mod.nested_loco(good, tmp_path / "L.csv")
    assert pd.read_csv(tmp_path / "WLtie.csv").equals(pd.read_csv(tmp_path / "L.csv"))     # the same probe
    assert "vectors" not in json.loads((tmp_path / "L_choices.json").read_text())["urdu"]
    assert len(plain) == 12 * 18


def test_best_set_compares_each_folder_at_its_own_chosen_c(probe_mod):
    """A folder wins on its best C's score against the other's best, not against the other's score at the same C;
    a tie keeps the folder given first."""
    tried = {"last": (0.1, {0.01: 0.30, 0.1: 0.40}), "second": (0.01, {0.01: 0.35, 0.1: 0.20})}
    assert probe_mod.best_set(tried) == "last"          # 0.40 > 0.35 (though 0.35 > last's 0.30 at C = 0.01)
    tried["second"] = (0.01, {0.01: 0.40, 0.1: 0.20})
    assert probe_mod.best_set(tried) == "last"          # a tie
    tried["second"] = (0.01, {0.01: 0.41, 0.1: 0.20})
    assert probe_mod.best_set(tried) == "second"
    assert probe_mod.best_set({"only": (1.0, {1.0: 0.2})}) == "only"


def test_another_folder_of_other_clips_is_refused(probe_mod, tmp_path):
    rng = np.random.default_rng(4)
    good = _work(tmp_path, rng)
    other = _noise_like(good, tmp_path / "other", rng)
    m = other / "manifest_ased.csv"
    m.write_text(m.read_text().replace("ased_neutral_0.flac", "ased_neutral_x.flac"))
    with pytest.raises(SystemExit, match="other clips"):
        probe_mod.nested_loco(good, tmp_path / "x.csv", alternatives=(other,))


def _speaker_work(tmp_path: Path, move_fold1: float = 0.0) -> Path:
    """24 RAVDESS actors and six speakers in each other corpus, 8 clips each, emotions shifting the vectors."""
    from ser_core import splits

    rng = np.random.default_rng(3)
    centre = {e: rng.normal(0, 1, 5) for e in ["neutral", "happy", "sad", "angry"]}
    rows = []
    for corpus, n in (("ravdess", 24), ("ased", 6), ("urdu", 6)):
        for s in range(1, n + 1):
            for i in range(8):
                e = list(centre)[i % 4]
                rows.append({"corpus": corpus, "emotion": e, "path": f"{corpus}_{s}_{i}.flac",
                             "speaker": f"{corpus}-{s:02d}", "gender": "female" if s % 2 else "male",
                             "actor": float(s) if corpus == "ravdess" else np.nan})
    df = pd.DataFrame(rows)
    x = np.stack([centre[e] for e in df["emotion"]]) + rng.normal(0, 1.5, (len(df), 5))
    test1 = splits.make_split(df, "emobox6", 1, n_val=0).test
    x[test1] += move_fold1                      # fold 1's test speakers moved far away
    work = tmp_path / f"spk{move_fold1}"
    work.mkdir()
    for corpus, part in df.groupby("corpus"):
        np.savez(work / f"vectors_{corpus}.npz", vectors=x[part.index], path=part["path"].to_numpy())
        part.to_csv(work / f"manifest_{corpus}.csv", index=False)
    return work


def test_speaker_folds_choose_c_from_training_speakers_only(probe_mod, tmp_path):
    tables, choices = [], []
    for move in (0.0, 9.0):
        out = tmp_path / f"cv{move}.csv"
        tables.append(probe_mod.speaker_cv(_speaker_work(tmp_path, move), out))
        choices.append(json.loads((tmp_path / f"cv{move}_choices.json").read_text()))
    assert choices[0]["1"] == choices[1]["1"]                 # fold 1's test speakers reached nothing of its choice
    assert choices[0]["2"] != choices[1]["2"]                 # ... but they train fold 2, and change its inner figures
    t = tables[0]
    assert len(t) == 36 * 8 and t["file"].is_unique and sorted(t["fold"].unique()) == [1, 2, 3, 4, 5, 6]
    for _, g in t.groupby("fold"):                            # RAVDESS's EmoBox actors, plus a sixth of the others
        assert g.loc[g["corpus"] == "ravdess", "speaker"].nunique() == 4
        assert g.loc[g["corpus"] != "ravdess", "speaker"].nunique() == 2


def test_shift_summary_joins_fold_tables_and_counts_no_speech_as_wrong(probe_mod, tmp_path):
    def rows(fold, shift, truth, h, v, m):
        return [{"fold": fold, "file": f"{fold}-{i}", "speaker": "s", "gender": "female", "true": t, "shift": shift,
                 "pred_H": a, "pred_probe": b, "pred_M": c} for i, (t, a, b, c) in enumerate(zip(truth, h, v, m))]
    truth = ["sad", "happy", "angry", "sad"]
    a = pd.DataFrame(rows(1, "clean", truth, truth, truth, truth)
                     + rows(1, "telephone", truth, ["sad", "sad", "angry", "sad"], truth, ["", "happy", "angry", "sad"]))
    b = pd.DataFrame(rows(2, "clean", truth, truth, ["sad"] * 4, truth)
                     + rows(2, "telephone", truth, truth, ["sad"] * 4, truth))
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    res = probe_mod.shift_summary([tmp_path / "a.csv", tmp_path / "b.csv"], tmp_path / "s.json")
    assert res["clips"] == 8 and res["folds"] == [1, 2]
    assert res["H"]["telephone"] == {"accuracy": 0.875, "drop": 12.5}
    assert res["probe"]["clean"]["accuracy"] == 0.75 and res["probe"]["telephone"]["drop"] == 0.0
    assert res["M"]["telephone"]["accuracy"] == 0.875          # the empty answer (no speech) counts as wrong
    assert res["M"]["max_drop"] == {"shift": "telephone", "points": 12.5}
    assert json.loads((tmp_path / "s.json").read_text()) == res


def test_shift_summary_of_a_probe_scored_alone_reports_the_probe_only(probe_mod, tmp_path):
    """Whisper's probe (``channel_shifts`` with no H folder) leaves H's and M's answers empty: only the probe is
    summed up, rather than an H that got every clip wrong."""
    truth = ["sad", "happy", "angry", "sad"]
    t = pd.DataFrame([{"fold": 1, "file": f"c{i}", "speaker": "s", "gender": "male", "true": y, "shift": shift,
                       "pred_H": "", "pred_probe": p, "pred_M": ""}
                      for shift, preds in (("clean", truth), ("telephone", ["sad", "sad", "angry", "happy"]))
                      for i, (y, p) in enumerate(zip(truth, preds))])
    t.to_csv(tmp_path / "w.csv", index=False)
    res = probe_mod.shift_summary([tmp_path / "w.csv"])
    assert "H" not in res and "M" not in res
    assert res["probe"]["telephone"] == {"accuracy": 0.5, "drop": 50.0}


def test_channel_copies_of_held_out_clips_are_never_trained_on(probe_mod, tmp_path):
    """Candidate N: a clip's channel copies train only the folds that train on the clip."""
    choices = []
    for shift in (0.0, 7.0):
        work = _work(tmp_path / f"n{shift}", np.random.default_rng(2))
        for corpus in ("ravdess", "ased", "emovo", "urdu"):
            with np.load(work / f"vectors_{corpus}.npz") as z:
                x, names = z["vectors"], z["path"]
            copies = np.stack([x + np.random.default_rng(k).normal(0, 0.5, x.shape) for k in range(2)], axis=1)
            if corpus == "urdu":
                copies = copies + shift                     # URDU's copies moved far away
            np.savez(work / f"channel_{corpus}.npz", vectors=copies, path=names)
        probe_mod.nested_loco(work, tmp_path / f"N{shift}.csv", correct=False, copies="white")
        choices.append(json.loads((tmp_path / f"N{shift}_choices.json").read_text()))
    assert choices[0]["urdu"] == choices[1]["urdu"]
    assert choices[0]["ased"] != choices[1]["ased"]


def test_channel_copies_must_match_the_vectors_rows(probe_mod, tmp_path):
    work = _work(tmp_path, np.random.default_rng(2))
    df, x = probe_mod.load_vectors(work)
    for corpus in ("ravdess", "ased", "emovo", "urdu"):
        names = df.loc[df["corpus"] == corpus, "path"].to_numpy(str)
        np.savez(work / f"channel_{corpus}.npz", vectors=np.zeros((len(names), 2, 6)), path=names[::-1])
    with pytest.raises(SystemExit, match="in their order"):
        probe_mod.load_channel_vectors(work, df)


def test_babble_talkers_never_come_from_a_held_out_speaker_or_corpus(probe_mod, tmp_path):
    """Candidate O: a copy's babble pool holds other clips of its own corpus and emobox6 group only, so no
    emobox6 fold's test speaker and no held-out corpus (outer or nested) is ever mixed into a training copy."""
    from ser_core import splits

    df, _ = probe_mod.load_vectors(_speaker_work(tmp_path))
    group = probe_mod.speaker_groups(df)
    assert sorted(set(group)) == [1, 2, 3, 4, 5, 6]
    pools = {i: probe_mod.babble_pool(df, group, i, np.random.default_rng(i), size=6) for i in range(len(df))}
    for fold in range(1, 7):
        split = splits.make_split(df, "emobox6", fold, n_val=0)
        test_speakers = set(df["speaker"].iloc[split.test])
        for i in split.train:
            assert not test_speakers & set(df["speaker"].iloc[pools[i]])
    for i, pool in pools.items():
        assert i not in pool and len(pool) == 6
        assert (df["corpus"].iloc[pool] == df["corpus"].iat[i]).all()
    # RAVDESS groups hold four actors: other speakers fill the pool; ASED's hold one: that speaker's other clips
    first_ravdess = int(np.flatnonzero(df["corpus"] == "ravdess")[0])
    assert (df["speaker"].iloc[pools[first_ravdess]] != df["speaker"].iat[first_ravdess]).all()
    first_ased = int(np.flatnonzero(df["corpus"] == "ased")[0])
    assert (df["speaker"].iloc[pools[first_ased]] == df["speaker"].iat[first_ased]).all()


def test_group_standardise_uses_each_groups_own_counted_rows(probe_mod):
    rng = np.random.default_rng(4)
    x = np.r_[rng.normal(3, 2, (40, 3)), rng.normal(-1, 0.5, (30, 3)), [[7.0, 8.0, 9.0]]]
    groups = np.array(["a"] * 40 + ["b"] * 30 + ["c"])
    z = probe_mod.group_standardise(x, groups)
    for g in ("a", "b"):
        assert z[groups == g].mean(axis=0) == pytest.approx(np.zeros(3), abs=1e-9)
        assert z[groups == g].std(axis=0) == pytest.approx(np.ones(3), abs=1e-5)
    assert z[groups == "c"] == pytest.approx(np.zeros((1, 3)))          # one row: only its mean removed
    fit = np.ones(len(x), bool)
    fit[:30] = False                                                    # group a's statistics from its last 10 rows
    z2 = probe_mod.group_standardise(x, groups, fit)
    tail = x[30:40]
    assert z2[:40] == pytest.approx((x[:40] - tail.mean(axis=0)) / (tail.std(axis=0) + 1e-6))
    assert z2[40:] == pytest.approx(z[40:])
    fit[:40] = False
    with pytest.raises(ValueError, match="'a' has no row"):
        probe_mod.group_standardise(x, groups, fit)


def test_corpus_normalisation_removes_a_held_out_offset_and_reads_no_held_out_label(probe_mod, tmp_path):
    """Candidate CN (docs/preregistration-session21.md): URDU's vectors moved far make no difference to what
    URDU's fold answers once every corpus is standardised by itself, and neither do URDU's labels."""
    rng = np.random.default_rng(2)
    tables, works = {}, {}
    for shift in (0.0, 5.0):
        work = works[shift] = _work(tmp_path / f"cn{shift}", np.random.default_rng(2), shift)
        tables[shift, "raw"] = probe_mod.loco(work, tmp_path / f"raw{shift}.csv")
        tables[shift, "CN"] = probe_mod.loco(work, tmp_path / f"cn{shift}.csv", normalise="corpus")
    urdu = lambda t: t.loc[t["corpus"] == "urdu"].set_index("file")
    assert (urdu(tables[0.0, "CN"])["pred"] == urdu(tables[5.0, "CN"])["pred"]).all()
    assert (urdu(tables[0.0, "raw"])["pred"] != urdu(tables[5.0, "raw"])["pred"]).any()  # without it, it moves
    work = works[0.0]
    manifest = pd.read_csv(work / "manifest_urdu.csv")
    manifest["emotion"] = rng.permutation(manifest["emotion"].to_numpy())   # URDU's labels shuffled
    manifest.to_csv(work / "manifest_urdu.csv", index=False)
    shuffled = probe_mod.loco(work, tmp_path / "cn_shuffled.csv", normalise="corpus")
    assert (urdu(shuffled)["pred"] == urdu(tables[0.0, "CN"])["pred"]).all()
    speaker = probe_mod.loco(work, tmp_path / "sn.csv", normalise="speaker")
    assert len(speaker) == len(shuffled) and speaker["file"].is_unique
    few = probe_mod.loco(work, tmp_path / "few.csv", normalise="corpus", stat_clips=5)
    assert (urdu(few)["pred"] != urdu(tables[0.0, "CN"])["pred"]).any()    # five clips' statistics are not all 48's


@pytest.mark.parametrize("args, says", [(["--normalise", "speaker", "--stat-clips", "5"], "--normalise corpus"),
                                        (["--normalise", "corpus", "--stat-clips", "1"], "at least 2"),
                                        (["--stat-clips", "50"], "--normalise corpus"),
                                        (["--alternative", "runs/other"], "goes with --nested")])
def test_stat_clips_is_refused_where_it_cannot_give_statistics(probe_mod, tmp_path, capsys, args, says):
    with pytest.raises(SystemExit) as stop:
        probe_mod.main(["loco", "--work", str(tmp_path), "--out", str(tmp_path / "x.csv"), *args])
    assert stop.value.code == 2 and says in capsys.readouterr().err


def test_write_vectors_keeps_each_corpus_in_clip_order_and_resumes(probe_mod, data_root, tmp_path):
    """Every clip of every corpus goes through ``embed`` once, in manifest order, batch by batch; the vectors'
    file names match the manifest's; a corpus already written is kept when the step is run again."""
    seen = []

    def embed(waves):
        seen.append(len(waves))
        return np.stack([[len(w), float(np.abs(w).max())] for w in waves])

    work = tmp_path / "vectors"
    probe_mod.write_vectors("ravdess+ased+emovo", work, 16000, embed, batch=4)
    df, x = probe_mod.load_vectors(work)
    assert sorted(df["corpus"].unique()) == ["ased", "emovo", "ravdess"] and len(df) == len(x) == sum(seen)
    assert max(seen) == 4
    for corpus in ("ased", "emovo", "ravdess"):
        with np.load(work / f"vectors_{corpus}.npz") as z:
            assert list(z["path"]) == df.loc[df["corpus"] == corpus, "path"].tolist()
    from ser_core import audio
    first = df.index[df["corpus"] == "emovo"][0]
    wave = audio.load(next(data_root.glob(f"emovo/*/{df.loc[first, 'path']}")), sr=16000)
    assert x[first] == pytest.approx([len(wave), np.abs(wave).max()])
    stamp = (work / "vectors_ased.npz").stat().st_mtime_ns
    (work / "vectors_emovo.npz").unlink()
    before = len(seen)
    probe_mod.write_vectors("ravdess+ased+emovo", work, 16000, embed, batch=4)
    assert (work / "vectors_ased.npz").stat().st_mtime_ns == stamp            # kept
    assert sum(seen[before:]) == (df["corpus"] == "emovo").sum()              # only EMOVO again


def _toy_embed(calls):
    def embed(waves):
        calls.append(len(waves))
        return np.stack([[float(np.sqrt(np.mean(w ** 2))), float(np.abs(np.diff(w)).mean()), len(w) / 16000]
                         for w in waves])
    return embed


def test_shifted_test_vectors_are_kept_and_a_second_probe_reuses_them(probe_mod, data_root, tmp_path):
    """The first run embeds every fold-1 RAVDESS test clip clean and through every shift, and keeps the vectors;
    a probe chosen another way is then scored on those very vectors without running the encoder; a kept file
    of other clips is refused rather than read."""
    from ser_core import channel

    calls = []
    embed = _toy_embed(calls)
    work = tmp_path / "v"
    probe_mod.write_vectors("ravdess+ased+emovo", work, 16000, embed, batch=4)
    df, x = probe_mod.load_vectors(work)
    choices = tmp_path / "c.json"
    choices.write_text(json.dumps({"1": {"C": 1.0}}))
    before = len(calls)
    first = probe_mod.channel_shifts(work, None, choices, tmp_path / "a.csv", folds=[1], embed=embed,
                                     sample_rate=16000)
    tested = first.loc[first["shift"] == "clean", "file"].tolist()
    assert sum(calls[before:]) == len(tested) * (1 + len(channel.SHIFTS))
    kept = work / "shifted_ravdess_fold1_seed0.npz"
    with np.load(kept) as z:
        assert list(z["conditions"]) == ["clean", *channel.SHIFTS] and list(z["path"]) == tested
        clean = z["vectors"][:, 0]
    rows = df.reset_index(drop=True).set_index("path").index.get_indexer(tested)
    assert clean == pytest.approx(x[rows], rel=1e-5)             # the clean condition is the clip's own vector
    choices.write_text(json.dumps({"1": {"C": 0.01}}))
    before = len(calls)
    second = probe_mod.channel_shifts(work, None, choices, tmp_path / "b.csv", folds=[1], embed=embed,
                                      sample_rate=16000)
    assert len(calls) == before                                  # the encoder was not run again
    assert second[["file", "shift", "true"]].equals(first[["file", "shift", "true"]])
    with np.load(kept) as z:
        np.savez(kept, vectors=z["vectors"], path=z["path"][::-1], conditions=z["conditions"])
    with pytest.raises(SystemExit, match="other clips or conditions"):
        probe_mod.channel_shifts(work, None, choices, tmp_path / "c.csv", folds=[1], embed=embed, sample_rate=16000)


def test_channel_copies_go_through_the_given_encoder_one_row_per_clip(probe_mod, data_root, tmp_path):
    """WNA's copies: ``copies`` random chains of every clip through the encoder the folder was made with (``embed``,
    four clips' copies to a call), stored rows x copies x values in the vectors' order; copies differ from
    their clean clip and from each other (nearly always). Asked for more copies later, it makes only the missing
    ones, and the readers take a clip's first N."""
    calls = []
    embed = _toy_embed(calls)
    work = tmp_path / "v"
    probe_mod.write_vectors("ravdess+ased+emovo", work, 16000, embed, batch=4)
    df, x = probe_mod.load_vectors(work)
    before = len(calls)
    probe_mod.channel_vectors(work, copies=2, batch=4, embed=embed, sample_rate=16000)
    assert sum(calls[before:]) == 2 * len(df) and max(calls[before:]) == 8
    aug = probe_mod.load_channel_vectors(work, df)
    assert aug.shape == (len(df), 2, x.shape[1])
    # a chain applies each stage with some probability, so now and then a copy is the clean clip (~3 %)
    assert (np.abs(aug - x[:, None]).max(axis=2) > 0).mean() > 0.8
    assert (np.abs(aug[:, 0] - aug[:, 1]).max(axis=1) > 0).mean() > 0.8
    before = len(calls)
    probe_mod.channel_vectors(work, copies=3, batch=4, embed=embed, sample_rate=16000)   # WNA2's way: one more
    assert sum(calls[before:]) == len(df)                          # only the missing copy was made
    more = probe_mod.load_channel_vectors(work, df)
    assert more.shape == (len(df), 3, x.shape[1]) and np.array_equal(more[:, :2], aug)
    assert np.array_equal(probe_mod.load_channel_vectors(work, df, copies=2), aug)
    with pytest.raises(SystemExit, match="holds 3 copies"):
        probe_mod.load_channel_vectors(work, df, copies=4)


def test_two_kinds_of_copies_are_read_side_by_side_each_its_own_count(probe_mod, tmp_path):
    """WUB's copies: ``babble:1+loudbabble:2`` gives each clip's first babble copy, then its first two loud
    babble copies, in the vectors' row order; a kind or count that is not one is refused by name."""
    import argparse

    work = _work(tmp_path, np.random.default_rng(3))
    df, x = probe_mod.load_vectors(work)
    for corpus in ("ravdess", "ased", "emovo", "urdu"):
        names = df.loc[df["corpus"] == corpus, "path"].to_numpy(str)
        n = len(names)
        np.savez(work / f"babble_{corpus}.npz", vectors=np.full((n, 3, 6), 1.0), path=names)
        np.savez(work / f"loudbabble_{corpus}.npz",
                 vectors=np.stack([np.full((n, 6), 2.0), np.full((n, 6), 3.0), np.full((n, 6), 4.0)], axis=1),
                 path=names)
    both = probe_mod.load_channel_vectors(work, df, "babble:1+loudbabble:2")
    assert both.shape == (len(df), 3, 6)
    assert (both[:, 0] == 1).all() and (both[:, 1] == 2).all() and (both[:, 2] == 3).all()
    assert probe_mod.load_channel_vectors(work, df, "loudbabble").shape == (len(df), 3, 6)
    assert probe_mod.copy_kinds("babble:1+loudbabble") == [("babble", 1), ("loudbabble", None)]
    for bad in ("cafe", "babble:x", "babble:1+"):
        with pytest.raises(argparse.ArgumentTypeError, match="a kind of copies"):
            probe_mod.copy_spec(bad)


def test_an_other_voice_copy_moves_the_pitch_toward_the_other_gender(probe_mod):
    """WUG's copy: a man's voice goes up and a woman's down, by 3 to 6 semitones, the length kept."""
    import librosa

    sr = 16000
    t = np.arange(2 * sr) / sr
    voice = lambda f0: sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)).astype(np.float32) * 0.1  # noqa: E731

    def f0(y):
        return float(np.median(librosa.yin(y, fmin=60, fmax=500, sr=sr)))

    for gender, base, sign in (("male", 120.0, 1), ("female", 220.0, -1)):
        for seed in range(3):
            y = voice(base)
            out = probe_mod.other_voice(y, sr, np.random.default_rng(seed), gender)
            assert out.shape == y.shape and out.dtype == np.float32
            steps = 12 * np.log2(f0(out) / f0(y))
            assert 2.7 <= sign * steps <= 6.3, (gender, steps)


def test_copies_weigh_in_the_loss_as_copy_weight_says(probe_mod):
    """WU2W: copies that say the opposite of their clips (each class's copies look like the other class) confuse a
    probe that weighs them as much as the clips, and barely move one that weighs them 1/100."""
    rng = np.random.default_rng(7)
    n = 200
    y = np.array(["happy", "sad"] * (n // 2))
    sign = np.where(y == "happy", 1.0, -1.0)[:, None]
    x = sign * 1.0 + rng.normal(0, 1, (n, 4))
    aug = (-sign * 1.0 + rng.normal(0, 1, (n, 3, 4)).transpose(1, 0, 2)).transpose(1, 0, 2)   # rows x 3 copies
    df = pd.DataFrame({"emotion": y, "corpus": "ravdess"})
    train = np.ones(n, bool)
    hits = {}
    for w in (1.0, 0.01):
        clf, z = probe_mod.probe(x, df, train, 1.0, aug, copy_weight=w)
        hits[w] = float((clf.predict(z) == y).mean())
    assert hits[0.01] > 0.8 and hits[1.0] < 0.5


def test_leaving_a_corpus_out_reads_every_value_of_a_long_vector(probe_mod, tmp_path):
    """A Whisper probe's vectors are 1536 values; "all" must read them all, not the speaker encoder's first 768
    (the emotions here live only past value 800), and a speaker-encoder part of them is refused."""
    rng = np.random.default_rng(5)
    emotions = ["neutral", "happy", "sad", "angry"]
    centre = {e: rng.normal(0, 1, 736) for e in emotions}
    work = tmp_path / "long"
    work.mkdir()
    for corpus in ("ravdess", "ased", "urdu"):
        rows = [(corpus, e, f"{corpus}_{e}_{i}.flac", f"s{i % 3}") for e in emotions for i in range(12)]
        x = rng.normal(0, 1, (len(rows), 1536))
        x[:, 800:] += np.stack([centre[e] for _, e, _, _ in rows])
        np.savez(work / f"vectors_{corpus}.npz", vectors=x, path=np.array([r[2] for r in rows]))
        pd.DataFrame(rows, columns=["corpus", "emotion", "path", "speaker"]).to_csv(
            work / f"manifest_{corpus}.csv", index=False)
    table = probe_mod.loco(work, tmp_path / "long.csv")
    assert (table["pred"] == table["true"]).mean() > 0.9
    with pytest.raises(SystemExit, match="1536"):
        probe_mod.loco(work, tmp_path / "x.csv", part="embedding")
