"""training/whisper_probe.py: a vector folder's recorded setup.

Whisper's front end, pooling, encoder and its setups are ``ser_core.whisper``'s (tests/test_whisper.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import whisper_probe as wp  # noqa: E402


def test_a_folder_records_its_setup_and_refuses_vectors_made_another_way(tmp_path):
    """Every later step (channel copies, shifts) embeds as the folder's vectors were made, so a folder cannot
    hold two setups; a folder from before the record reads as the default setup."""
    assert wp.read_setup(tmp_path) == wp.Setup()
    level = wp.Setup(level=True)
    wp.record_setup(tmp_path, level)
    assert wp.read_setup(tmp_path) == level
    fast = wp.Setup(unpadded=True, layers=2, level=True, compute="int8")
    wp.record_setup(tmp_path / "fast", fast)
    assert wp.read_setup(tmp_path / "fast") == fast
    (tmp_path / "vectors_ravdess.npz").write_bytes(b"")
    wp.record_setup(tmp_path, level)                                  # the same setup again: fine
    with pytest.raises(SystemExit, match="level=True"):
        wp.record_setup(tmp_path, wp.Setup(layers=2, level=True))
    assert wp.read_setup(tmp_path) == level
    fast = wp.Setup(unpadded=True, layers=2, level=True, compute="int8")
    wp.record_setup(tmp_path / "fast", fast)
    assert wp.read_setup(tmp_path / "fast") == fast


def test_a_probe_card_names_every_shift_that_breaks_the_rule_costliest_first(tmp_path):
    """report.probe_lines: the channel-shift sentence and the list of missed targets name each shift whose drop
    reaches the rule's bound (ser_core.robustness.TARGET_DROP_POINTS), the costliest first, in words; a probe
    whose shifts all stay under it is not said to break anything. The drops judged are the six folds' when they
    were run, else fold 1's."""
    import json
    import shutil

    import report
    from ser_core.robustness import TARGET_DROP_POINTS

    src = Path(__file__).resolve().parents[1] / "models" / "default"
    shutil.copy(src / "spec.json", tmp_path / "spec.json")
    m = json.loads((src / "metrics.json").read_text())
    m.pop("shifts_all_folds", None)                    # fold 1's alone first

    def card(drops: dict) -> str:
        m["shifts_fold1"] = {"probe": {"clean": {"accuracy": 0.75, "drop": 0.0},
                                       **{k: {"accuracy": 0.75 - d / 100, "drop": d} for k, d in drops.items()}}}
        return "\n".join(report.probe_lines(tmp_path, m))

    bound = TARGET_DROP_POINTS
    text = card({"telephone": bound, "babble10db": bound + 18, "reverb": bound - 0.1})
    assert "Babble at 10 dB and the telephone band break the rule" in text
    assert "babble at 10 dB, the telephone band" in text.split("not the default")[1]
    assert "reverberation" not in text
    assert "break" not in card({"telephone": bound - 0.1, "babble10db": 3.0})
    # the six folds, when run, are what the rule is judged on (the default's protocol); fold 1 is named beside them
    m["shifts_all_folds"] = {"probe": {"clean": {"accuracy": 0.70, "drop": 0.0},
                                       "babble10db": {"accuracy": 0.61, "drop": bound - 0.8}}}
    text = card({"babble10db": bound + 3.3, "white10db": bound + 0.4})
    assert "six folds" in text and f"Every drop is under the rule's {bound:.0f} points" in text
    assert f"Fold 1 alone (240 clips) loses most: babble at 10 dB {bound + 3.3:.1f}" in text
    assert "break" not in text and "white noise" not in text.split("not the default")[-1]
